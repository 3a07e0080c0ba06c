"""`training.run eval` on the tiny preset and a real clip: predictions `score` reads, resume, skips,
latency stats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.eval.evaluate import done_question_ids, latency_path, resolve_video
from training.run import main as run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


ARGS = ["--preset", "tiny", "--max-frames", "4", "--max-pixels", "3136", "--max-new-tokens-per-turn", "3",
        "--device", "cpu"]


def gold_record(qid: str, video: str) -> dict:
    return {"video": video, "question_id": qid, "duration": 10.0,
            "conversation": [{"role": "user", "content": "Who walks past the cars?", "time": 0.0}],
            "answer": [{"role": "assistant", "content": "A man in a dark suit.",
                        "related_timespan": [1.0, 3.0], "reply_timespan": [1.0, 4.0]}]}


@pytest.fixture
def setup(tmp_path: Path, samples_dir: Path):
    videos = tmp_path / "videos"
    (videos / "web").mkdir(parents=True)
    shutil.copy(samples_dir / "videos" / "bikes.mp4", videos / "web" / "bikes.mp4")
    gold = tmp_path / "web.jsonl"
    rows = [gold_record("q1", "web/bikes.mp4"), gold_record("q2", "bikes"), gold_record("q3", "gone.mp4")]
    gold.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, videos, gold


def run_eval(videos: Path, gold: Path, out: Path) -> dict:
    assert run_main(["eval", *ARGS, "--data", str(gold), "--videos", str(videos), "--out", str(out)]) == 0
    return json.loads(latency_path(out).read_text())


def test_eval_writes_scorable_predictions_resumes_and_reports_latency(setup, capsys):
    tmp, videos, gold = setup
    out = tmp / "preds" / "predictions.jsonl"
    summary = run_eval(videos, gold, out)
    assert summary["written"] == 2 and summary["skipped"] == {"video_missing": 1}
    assert summary["turns"] == 4  # 4 frames at 2 s, 2 per turn -> turns at 2 s and 6 s, per question
    assert 0 < summary["latency_median_s"] <= summary["latency_p95_s"]
    assert 0 < summary["ingest_median_s"] <= summary["ingest_p95_s"]  # every turn brought frames
    assert "median" in capsys.readouterr().out
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["question_id"] for x in lines] == ["q1", "q2"]
    for line in lines:
        for turn in line["model_response_list"]:
            assert turn["role"] == "assistant" and turn["time"] in (2.0, 6.0)
            assert turn["content"].strip() and turn["content"] != "NO REPLY"

    scores = tmp / "scores.json"
    assert run_main(["score", "--predictions", str(out), "--references", str(gold), "--json", str(scores)]) == 0
    result = json.loads(scores.read_text())
    assert result["bad_prediction_lines"] == [] and result["overall"]["questions"] == 3
    assert result["overall"]["questions_without_prediction"] == 1  # the skipped one

    # Resume: nothing new; then a torn last line is cut and its question redone.
    again = run_eval(videos, gold, out)
    assert again["written"] == 0 and again["already_done"] == 2 and again["turns"] == 0
    text = out.read_text()
    out.write_text(text[:text.index("\n") + 1] + text[text.index("\n") + 1:][:10])
    assert done_question_ids(out) == {"q1"}
    third = run_eval(videos, gold, out)
    assert third["written"] == 1 and third["already_done"] == 1
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == ["q1", "q2"]


def test_bad_inputs_are_refused_or_skipped(setup, tmp_path):
    _, videos, gold = setup
    assert resolve_video(videos, "../web.jsonl").reason == "video_path_outside"
    assert resolve_video(videos, "nothing").reason == "video_missing"
    assert resolve_video(videos, "web/bikes.mp4") == (videos / "web" / "bikes.mp4").resolve()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "x"}\n')
    assert run_main(["eval", *ARGS, "--data", str(bad), "--videos", str(videos), "--out",
                     str(tmp_path / "p.jsonl")]) == 2


def test_no_draft_switch_gives_the_same_predictions_and_latency_is_split(setup):
    tmp, videos, gold = setup
    drafted, plain = tmp / "drafted.jsonl", tmp / "plain.jsonl"
    summary = run_eval(videos, gold, drafted)
    assert run_main(["eval", *ARGS, "--no-draft", "--data", str(gold), "--videos", str(videos),
                     "--out", str(plain)]) == 0
    assert drafted.read_text() == plain.read_text()
    assert summary["config"]["draft_no_reply"] is True
    assert json.loads(latency_path(plain).read_text())["config"]["draft_no_reply"] is False
    # The random tiny model never says NO REPLY: every turn is a spoken one.
    assert summary["silent_turns"] + summary["spoken_turns"] == summary["turns"] == summary["spoken_turns"] == 4
    assert summary["silent_latency_median_s"] == 0 < summary["spoken_latency_median_s"]
