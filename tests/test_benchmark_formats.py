"""ProactiveVideoQA as it ships: `<TASK>/anno.json` folders, TV ids with `=` and `%`, subtitle
turns, the per-turn frame-input format (`skip_inference`, `must_reply`), all run through `eval`
(tiny preset, real clips) and `score`. Records are written by hand in the shapes of FORMATS.md."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curation.video.frames import frame_timeline
from training.data.episodes import EpisodeConfig, add_timed_texts, build_episode
from training.data.frame_folders import extract_frame_folder
from training.data.outside_ids import safe_id_for
from training.eval.evaluate import latency_path
from training.eval.proactive_format import (
    FrameInputRecord,
    FrameInputTurn,
    category_of_path,
    frame_input_times,
    gold_files,
    gold_to_dialogue,
    read_frame_input,
    read_gold,
    read_predictions,
    write_frame_input,
)
from training.run import main as run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TV_ID = "show_frames=show_s05e24_seg02_clip_25.mp4%Q1"
TV_VIDEO = "show_frames=show_s05e24_seg02_clip_25.mp4"
ARGS = ["--preset", "tiny", "--max-frames", "4", "--max-pixels", "3136", "--max-new-tokens-per-turn", "3",
        "--device", "cpu"]


def answer(content: str, related: list[float], duration: float, **extra) -> dict:
    return {"role": "assistant", "content": content, "related_timespan": related,
            "reply_timespan": [related[0], min(related[1] + 1, duration)], **extra}


# One hand-written record per task, as the benchmark's anno.json files hold them.
TASKS = {
    "WEB": {"video": "bikes.mp4", "question_id": "web_00017", "duration": 10.0,
            "conversation": [{"role": "user", "content": "Describe each person who passes.", "time": 0}],
            "answer": [answer("A man in a dark suit walks by.", [1.0, 3.0], 10.0)]},
    "EGO": {"video": "bigbuckbunny.mp4", "question_id": "ego/kitchen 3", "duration": 5.3,
            "conversation": [{"role": "user", "content": "What step am I on?", "time": 0}],
            "answer": [answer("Waking up.", [0.0, 1.8], 5.3, type="step"),
                       answer("Stretching.", [1.8, 3.6], 5.3, type="substep")]},
    "TV": {"video": TV_VIDEO, "question_id": TV_ID, "duration": 10.0, "frame": "show_frames/clip_25",
           "audio": "show_audio/clip_25.wav",
           "conversation": [{"role": "user", "content": "Who is talking and about what?", "time": 0},
                            {"role": "user", "content": "Subtitle: (Sheldon:) That's my spot.", "time": 3.0},
                            {"role": "user", "content": "Subtitle: Penny, knock knock.", "time": 7.5}],
            "answer": [answer("Sheldon claims his seat.", [2.5, 5.0], 10.0)]},
    "VAD": {"video": "generated_four_scenes.mp4", "question_id": "vad-0001", "duration": 36.0,
            "conversation": [{"role": "user", "content": "Tell me when something unusual happens.", "time": 0}],
            "answer": [answer("The picture changes abruptly.", [8.5, 10.0], 36.0)]},
}


@pytest.fixture
def benchmark(tmp_path: Path, samples_dir: Path) -> tuple[Path, Path]:
    """The benchmark's layout: <root>/<TASK>/anno.json, and the videos under their own names."""
    root, videos = tmp_path / "ProactiveVideoQA", tmp_path / "videos"
    videos.mkdir()
    for task, record in TASKS.items():
        (root / task).mkdir(parents=True)
        (root / task / "anno.json").write_text(json.dumps([record], indent=1))
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "generated_four_scenes.mp4"):
        shutil.copy(samples_dir / "videos" / name, videos / name)
    shutil.copy(samples_dir / "videos" / "bikes.mp4", videos / TV_VIDEO)
    return root, videos


def test_category_comes_from_the_folder_the_file_name_or_the_caller(benchmark):
    root, _ = benchmark
    files = gold_files([root])
    assert [p.parent.name for p in files] == ["EGO", "TV", "VAD", "WEB"]
    assert [r.category for p in files for r in read_gold(p)] == ["EGO", "TV", "VAD", "WEB"]
    assert category_of_path(Path("x/web-proactivevideoqa_format.json")) == "web"
    assert category_of_path(Path("ego.jsonl")) == "ego"
    assert {r.category for r in read_gold(root / "TV" / "anno.json", "tv-subset")} == {"tv-subset"}


def test_outside_ids_are_keys_with_safe_internal_names(benchmark):
    root, _ = benchmark
    [tv] = read_gold(root / "TV" / "anno.json")
    assert tv.question_id == TV_ID  # kept verbatim
    dialogue = gold_to_dialogue(tv)
    assert dialogue.dialogue_id == safe_id_for(TV_ID) != TV_ID
    assert dialogue.dialogue_id.startswith("show_frames_show_s05e24_seg02_clip_25.mp4_Q1-")
    assert safe_id_for("web_00017") == "web_00017"  # safe ids pass through unchanged
    assert safe_id_for("a=b") != safe_id_for("a%b")  # same slug, different ids: different names
    assert safe_id_for("../../etc") not in ("..", "") and ".." not in safe_id_for("../../etc")


def test_tv_subtitles_are_fed_after_the_frames_of_their_turn(benchmark):
    root, _ = benchmark
    [tv] = read_gold(root / "TV" / "anno.json")
    assert tv.timed_texts == ((3.0, "Subtitle: (Sheldon:) That's my spot."), (7.5, "Subtitle: Penny, knock knock."))
    episode = build_episode(gold_to_dialogue(tv), "v.mp4", EpisodeConfig(), frame_timeline)
    episode = add_timed_texts(episode, [*tv.timed_texts, (9.0, "Subtitle: too late")])
    # frames at 0, 2, ..., 8 s, 2 per turn: turns at 2, 6 and 8 s (the last one holds one frame)
    assert [t.time_s for t in episode.turns] == [2.0, 6.0, 8.0]
    assert [t.questions for t in episode.turns] == [
        ("Who is talking and about what?",), ("Subtitle: (Sheldon:) That's my spot.",),
        ("Subtitle: Penny, knock knock.",)]
    assert episode.dropped_texts == 1  # 9 s: after the last turn


def test_eval_and_score_run_all_four_tasks_and_print_the_papers_table(benchmark, tmp_path, capsys):
    root, videos = benchmark
    out = tmp_path / "preds.jsonl"
    assert run_main(["eval", *ARGS, "--data", str(root), "--videos", str(videos), "--out", str(out)]) == 0
    summary = json.loads(latency_path(out).read_text())
    assert summary["written"] == 4 and summary["skipped"] == {}
    ids = [json.loads(x)["question_id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r["question_id"] for r in TASKS.values())  # TV_ID verbatim
    assert set(read_predictions(out).replies) == set(ids)

    scores = tmp_path / "scores.json"
    capsys.readouterr()
    assert run_main(["score", "--predictions", str(out), "--references", str(root), "--json", str(scores)]) == 0
    table = capsys.readouterr().out
    for row in ("WEB", "EGO", "TV", "VAD", "mean", "overall"):
        assert row in table
    for column in ("PAUC w=0", "w=0.5*", "w=1", "dup %"):
        assert column in table
    result = json.loads(scores.read_text())
    assert set(result["categories"]) == set(TASKS)
    assert result["overall"]["questions_without_prediction"] == 0
    key = "pauc_omega_0.5"
    assert result["mean"][key] == pytest.approx(sum(c[key] for c in result["categories"].values()) / 4)


def test_frame_input_format_round_trips_and_feeds_skip_and_must_reply_turns(tmp_path, samples_dir):
    video = samples_dir / "videos" / "bikes.mp4"
    times = frame_timeline(10.0, 2.0, 6)
    clip = "bikes-0s_10s"
    paths = extract_frame_folder(video, tmp_path / "frames" / clip, times, 2.0, 3136)
    assert isinstance(paths, list) and len(paths) == 5
    rel = [f"{clip}/{p.name}" for p in paths]
    record = FrameInputRecord(TV_ID, (
        FrameInputTurn(tuple(rel[:2]), "What happens?"),
        FrameInputTurn(tuple(rel[2:3]), "Subtitle: hello", skip_inference=True),
        FrameInputTurn(tuple(rel[3:5]), must_reply=True),
    ), system="You watch a video.")
    path = tmp_path / "tv-frame_input_format.json"
    write_frame_input(path, [record])
    raw = json.loads(path.read_text())[0]
    assert raw["conversation"][0] == {"role": "system", "content": [{"type": "text", "text": "You watch a video."}]}
    assert raw["conversation"][2]["skip_inference"] is True and raw["conversation"][3]["must_reply"] is True
    assert raw["conversation"][1]["content"][-1] == {"type": "text", "text": "What happens?"}
    assert read_frame_input(path) == [record]
    assert frame_input_times(record, 2.0) == [2.0, 4.0, 8.0]

    out = tmp_path / "preds.jsonl"
    assert run_main(["eval", *ARGS, "--frame-input", str(path), "--frames-root", str(tmp_path / "frames"),
                     "--out", str(out)]) == 0
    summary = json.loads(latency_path(out).read_text())
    assert summary["written"] == 1 and summary["turns"] == 2  # the skip_inference turn gets no reply
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["question_id"] == TV_ID
    assert {t["time"] for t in line["model_response_list"]} <= {2.0, 8.0}


def test_a_missing_frame_file_is_a_counted_skip(tmp_path):
    path = tmp_path / "f.json"
    write_frame_input(path, [FrameInputRecord("q%1", (FrameInputTurn(("nowhere/000001.jpg",)),))])
    out = tmp_path / "p.jsonl"
    assert run_main(["eval", *ARGS, "--frame-input", str(path), "--out", str(out)]) == 0
    assert json.loads(latency_path(out).read_text())["skipped"] == {"frame_missing": 1}
