"""The corpus viewer page, built by `python -m curation.viewer` for the sample corpus and driven in
headless Chromium: it lists the videos, seeking into a reply window highlights that answer, the
quarantine shows its reasons, predictions lie against the references, and untrusted text stays text."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curation.corpus.shards import read_table
from curation.video.synthetic import ffmpeg_exe
from curation.viewer.page_data import corpus_page_data, question_ids_of, read_predictions
from curation.viewer.render import write_page
from tests.browser import chromium, open_page
from tests.conftest import ROOT, dialogue_row
from tests.sample_corpus import build_corpus
from training.eval.proactive_format import prediction_line

VIDEO = "bikes"


def run_viewer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.viewer", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def references_of(corpus: Path, video_id: str) -> list[dict]:
    return [ref for d in read_table(corpus, "dialogues").to_pylist() if d["video_id"] == video_id
            for ref in d["references"]]


def write_predictions(corpus: Path, path: Path) -> dict:
    """Lines in `eval`'s own format: one question with a reply inside a window (scored by a judge)
    and one outside, a question id the corpus lacks, and a broken line."""
    ref = next(r for r in references_of(corpus, VIDEO) if not r["immediate"])
    start_s, end_s = ref["reply_span"]
    line = prediction_line(ref["question_id"], [(start_s + 0.1, "A van and a cyclist."),
                                                (end_s + 0.6, "NO REPLY"), (0.0, "Too early to say.")])
    line["model_response_list"][0]["score"] = 2
    lines = [json.dumps(line), json.dumps(prediction_line("web-other-0", [(1.0, "elsewhere")])), "{not json"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ref


@pytest.fixture(scope="module")
def viewer(sample_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer")
    predictions = out.parent / "predictions.jsonl"
    ref = write_predictions(sample_corpus, predictions)
    proc = run_viewer(str(sample_corpus), "--out", str(out), "--predictions", str(predictions))
    assert proc.returncode == 0, proc.stderr
    assert "bad_prediction_line" in proc.stderr and "1 question id(s) not in this corpus" in proc.stderr
    return {"corpus": sample_corpus, "url": (out / "index.html").as_uri(), "predicted": ref}


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def list_rows(page) -> dict[str, str]:
    return dict(page.eval_on_selector_all(
        "#video-list tbody tr", "rows => rows.map(r => [r.dataset.videoId, r.innerText])"))


def current_answers(page) -> list[str]:
    return page.eval_on_selector_all("#detail .bar.answer.current", "bars => bars.map(b => b.title)")


def open_video(page, video_id: str) -> None:
    page.click(f"#video-list tr[data-video-id='{video_id}'] td.video-id")
    page.wait_for_function("() => { const v = document.querySelector('#detail video'); return v && v.readyState >= 1; }")


def seek_player(page, time_s: float) -> None:
    page.evaluate("t => { document.querySelector('#detail video').currentTime = t; }", time_s)
    page.wait_for_function("t => { const v = document.querySelector('#detail video'); "
                           "return !v.seeking && Math.abs(v.currentTime - t) < 1e-3; }", arg=time_s)


def test_page_loads_clean_and_lists_every_video_and_quarantined_item(viewer, browser):
    page, problems = open_page(browser, viewer["url"])
    videos = {row["video_id"] for row in read_table(viewer["corpus"], "videos").to_pylist()}
    held = {row["video_id"] for row in read_table(viewer["corpus"], "quarantine").to_pylist()}
    assert len(videos) == 5 and len(held) == 4
    assert set(list_rows(page)) == videos | held
    # the card's numbers (5 videos; the list also holds the 4 quarantined items)
    assert page.inner_text("#summary").startswith("5 videos, 10 dialogues, 4 quarantined items")
    # it opens on a video to watch, not on the quarantined id that sorts first (`../escape`)
    assert page.eval_on_selector("#video-list tr.selected", "r => r.dataset.videoId") == "bigbuckbunny"
    assert page.locator("#detail video").count() == 1
    if os.environ.get("VIEWER_SCREENSHOT"):  # how docs/viewer.png was taken
        open_video(page, VIDEO)
        page.click(f"#detail .bar.answer[data-question-id='{viewer['predicted']['question_id']}']")
        page.wait_for_function("() => { const v = document.querySelector('#detail video'); return !v.seeking && v.readyState >= 4; }")
        page.wait_for_timeout(1500)  # lets the player's loading overlay fade before the picture
        page.screenshot(path=os.environ["VIEWER_SCREENSHOT"], full_page=True)
    page.close()
    assert problems == []


def test_seeking_into_an_answer_window_highlights_exactly_the_answers_it_holds(viewer, browser):
    page, problems = open_page(browser, viewer["url"])
    open_video(page, VIDEO)
    refs = references_of(viewer["corpus"], VIDEO)

    def expected(time_s: float) -> list[str]:
        return sorted(r["answer"] for r in refs if r["reply_span"][0] <= time_s < r["reply_span"][1])

    def shown() -> list[str]:
        return sorted(title.split("  ", 1)[1] for title in current_answers(page))

    assert shown() == expected(0.0)
    # Clicking an answer's bar seeks the real player to the start of its window.
    target = viewer["predicted"]
    titles = page.eval_on_selector_all("#detail .bar.answer", "bars => bars.map(b => b.title)")
    index = next(i for i, title in enumerate(titles) if title.endswith("  " + target["answer"]))
    page.locator("#detail .bar.answer").nth(index).click()
    page.wait_for_function("t => { const v = document.querySelector('#detail video'); return !v.seeking && v.currentTime === t; }",
                           arg=target["reply_span"][0])
    assert target["answer"] in shown() and shown() == expected(target["reply_span"][0])
    items = page.eval_on_selector_all("#detail li.answer.current", "items => items.map(i => i.innerText)")
    assert any(target["answer"] in item for item in items)
    # As the position moves (playing or scrubbing), the highlight follows the player's own events.
    later = max(r["reply_span"][1] for r in refs) - 0.25
    seek_player(page, later)
    assert shown() == expected(later) and target["answer"] not in shown()
    page.close()
    assert problems == []


def test_a_video_whose_timestamps_start_late_is_sought_on_the_players_clock(sample_corpus, browser, tmp_path):
    """bikes.mp4 copied behind a 3 s empty edit: the page's times stay stream times (0 = its first
    frame), and the player, whose clock reads 3 s at that frame, is sought and followed 3 s on."""
    corpus = tmp_path / "corpus"
    shutil.copytree(sample_corpus, corpus, ignore=shutil.ignore_patterns("work"))
    rel = next(r["path"] for r in read_table(corpus, "videos").to_pylist() if r["video_id"] == VIDEO)
    delayed = tmp_path / "delayed.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(corpus / rel), "-c", "copy",
                    "-output_ts_offset", "3", str(delayed)], check=True)
    shutil.move(delayed, corpus / rel)
    proc = run_viewer(str(corpus), "--out", str(tmp_path / "page"))
    assert proc.returncode == 0, proc.stderr
    page, problems = open_page(browser, (tmp_path / "page" / "index.html").as_uri())
    open_video(page, VIDEO)
    ref = next(r for r in references_of(corpus, VIDEO) if not r["immediate"])
    titles = page.eval_on_selector_all("#detail .bar.answer", "bars => bars.map(b => b.title)")
    page.locator("#detail .bar.answer").nth(next(i for i, t in enumerate(titles) if t.endswith("  " + ref["answer"]))).click()
    page.wait_for_function("t => { const v = document.querySelector('#detail video'); "
                           "return !v.seeking && Math.abs(v.currentTime - t) < 1e-3; }", arg=ref["reply_span"][0] + 3)
    seek_player(page, ref["reply_span"][0] + 3 + 0.01)
    titles = [title.split("  ", 1)[1] for title in current_answers(page)]
    assert ref["answer"] in titles
    page.close()
    assert problems == []


def test_filters_and_a_quarantined_row_show_the_reason(viewer, browser):
    page, problems = open_page(browser, viewer["url"])
    quarantine = read_table(viewer["corpus"], "quarantine").to_pylist()
    page.select_option("select[data-filter='quarantined']", "yes")
    rows = list_rows(page)
    assert set(rows) == {q["video_id"] for q in quarantine}
    for q in quarantine:
        assert f"{q['stage']}/{q['reason']}" in rows[q["video_id"]]
    page.select_option("select[data-filter='quarantined']", "no")
    page.select_option("select[data-filter='source']", "sample-generated")
    assert set(list_rows(page)) == {"generated_four_scenes", "generated_six_scenes", "spoken_tour"}
    page.select_option("select[data-filter='source']", "(all)")
    page.select_option("select[data-filter='quarantined']", "(all)")
    page.click("#video-list tr[data-video-id='truncated'] td.video-id")
    truncated = next(q for q in quarantine if q["video_id"] == "truncated")
    assert page.inner_text("#detail table.quarantine td.reason") == truncated["reason"]
    assert truncated["detail"] in page.inner_text("#detail table.quarantine")
    assert page.inner_text("#detail .no-player").startswith("No player")
    page.close()
    assert problems == []


def test_predictions_view_shows_replies_their_scores_and_whether_they_fall_in_a_window(viewer, browser):
    page, problems = open_page(browser, viewer["url"])
    summary = page.inner_text("#prediction-summary")
    assert "1 questions with replies" in summary and "1 question ids not in this corpus" in summary
    assert "bad_prediction_line 1" in summary
    open_video(page, VIDEO)
    page.click("#views button[data-view='predictions']")
    question_id = viewer["predicted"]["question_id"]
    markers = page.locator(f"#detail .marker.reply[data-question-id='{question_id}']")
    assert markers.count() == 2  # the NO REPLY turn is not a reply
    replies = page.eval_on_selector_all("#detail li.reply", "items => items.map(i => i.innerText)")
    assert len(replies) == 2
    early, inside = replies  # in time order
    assert "Too early to say." in early and "outside every window" in early and "judge score" not in early
    assert "A van and a cyclist." in inside and "in a reference window" in inside and "judge score 2" in inside
    markers.nth(1).click()
    page.wait_for_function("() => !document.querySelector('#detail video').seeking")
    assert viewer["predicted"]["answer"] in " ".join(current_answers(page))
    page.close()
    assert problems == []


def test_prediction_lines_that_cannot_be_read_are_counted_skips(viewer, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([
        '{"question_id": "a", "model_response_list": [{"role": "assistant", "content": "x", "time": "NaN"}]}',
        '{"question_id": "a", "model_response_list": [{"role": "assistant", "content": "x", "time": 1}]}',
        '{"question_id": "a", "model_response_list": []}',
        '[1, 2]', "",
    ]), encoding="utf-8")
    found = read_predictions(path, {"a"})
    assert found["by_question"] == {"a": [{"time_s": 1.0, "text": "x", "score": None}]}
    assert found["skip_counts"] == {"bad_prediction_line": 2, "duplicate_prediction": 1}


HOSTILE = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & ok'


def test_markup_in_dialogue_text_is_shown_as_text(browser, tmp_path):
    row = dialogue_row(dialogue_id="bikes-d0", video_id="bikes")
    row["user_turns"][0]["text"] = row["references"][0]["question"] = "Q " + HOSTILE
    row["references"][1]["answer"] = "A " + HOSTILE
    corpus = build_corpus(tmp_path / "corpus", {"train": [row]}, ["bikes"])
    page_path = write_page(corpus_page_data(corpus, tmp_path / "out"), tmp_path / "out")
    assert "<script>window" not in page_path.read_text(encoding="utf-8")
    page, problems = open_page(browser, page_path.as_uri())
    text = page.inner_text("#detail .transcript")
    assert "Q " + HOSTILE in text and "A " + HOSTILE in text
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('script').length") == 2  # the data and viewer.js
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    page.close()
    assert problems == []


def test_the_page_script_never_parses_strings_as_html():
    script = (ROOT / "curation" / "viewer" / "static" / "viewer.js").read_text(encoding="utf-8")
    script = re.sub(r"^\s*//.*$", "", script, flags=re.M)  # the header comment names what is banned
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function", script)


def test_the_command_refuses_a_folder_without_an_index(tmp_path):
    proc = run_viewer(str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "no corpus index" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_page_data_question_ids_match_the_corpus(viewer):
    page = corpus_page_data(viewer["corpus"], viewer["corpus"])
    dialogues = read_table(viewer["corpus"], "dialogues").to_pylist()
    assert question_ids_of(page) == {t["question_id"] for d in dialogues for t in d["user_turns"]}
    bikes = next(v for v in page["videos"] if v["video_id"] == VIDEO)
    assert bikes["src"] == "videos/bikes.mp4" and bikes["no_player"] is None
    assert "python -m curation.viewer" in (viewer["corpus"] / "README.md").read_text(encoding="utf-8")
