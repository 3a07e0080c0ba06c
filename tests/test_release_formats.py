"""MMDuet2 release formats both ways: records written by hand in each shape of FORMATS.md read
back; corpus -> export -> import gives the episodes (turn times, text, targets, frames) that reading
the corpus directly gives; `sft` and `grpo` train the tiny preset on the exported files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.video.frames import decode_frames, frame_timeline
from tests.conftest import dialogue_row
from tests.sample_corpus import build_corpus
from tests.test_sft import four_scenes_row
from training.data.chat_template import questions_text
from training.data.corpus import read_split
from training.data.episodes import EpisodeConfig, build_episode, decode_episode_frames
from training.data.frame_folders import load_frame_files
from training.data.mmduet2 import read_swift_sft, read_verl_rl, user_turns_path
from training.eval.proactive_format import read_frame_input, read_gold
from training.export import main as export_main
from training.run import main as run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PIXELS = 128 * 28 * 28  # the published budget: at a few patches, JPEG's chroma subsampling dominates
TRAIN_PIXELS = 56 * 56  # the tiny trainer reads the same files at its own, smaller budget
EXPORT = ["--max-frames", "8"]
EPISODES = EpisodeConfig(max_frames=8)
JPEG_TOLERANCE = 6.0  # mean |difference| per channel between a JPEG frame and the decoded one


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("release-corpus"),
                        {"train": [dialogue_row(), four_scenes_row()],
                         "validation": [dialogue_row(dialogue_id="bikes-mq-9")]},
                        ["bikes", "generated_four_scenes"])


@pytest.fixture(scope="module")
def exported(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    for fmt in ("swift-sft", "verl-rl", "pvqa"):
        # verl-rl reads the `rl` split by default; this corpus holds its RL-shaped clips in train
        splits = ["--splits", "train"] if fmt == "verl-rl" else []
        assert export_main([fmt, "--corpus", str(corpus), "--out", str(out), *EXPORT, *splits]) == 0
    return out


def direct_episodes(corpus: Path, split: str):
    """What the trainer streams when it reads the corpus itself: episode and decoded frames."""
    data = read_split(corpus, split)
    out = {}
    for d in data.dialogues:
        episode = build_episode(d, data.video_path(d.video_id), EPISODES, frame_timeline)
        out[d.dialogue_id] = (d, episode, decode_episode_frames(episode, PIXELS, decode_frames))
    return out


def assert_same_frames(files, decoded) -> None:
    loaded = load_frame_files(files, PIXELS)
    assert len(loaded) == len(decoded)
    for a, b in zip(loaded, decoded, strict=True):
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).mean() < JPEG_TOLERANCE


def test_round_trip_sft_gives_the_episodes_of_the_corpus(corpus, exported):
    [path] = exported.glob("*-train-sft.jsonl")
    assert path.name == "proactive_video-mixed_question-2_sec_per_frame-train-sft.jsonl"
    released, counts = read_swift_sft(path)
    assert counts.skipped == {} and counts.read == 2
    direct = direct_episodes(corpus, "train")
    assert sorted(r.outside_id for r in released) == sorted(direct)
    for item in released:
        _, episode, frames = direct[item.outside_id]
        got = item.episode
        assert (got.dialogue_id, got.video_id) == (episode.dialogue_id, episode.video_id)
        assert [t.time_s for t in got.turns] == [t.time_s for t in episode.turns]
        assert [t.frame_times_s for t in got.turns] == [t.frame_times_s for t in episode.turns]
        assert [questions_text(t.questions) for t in got.turns] == [questions_text(t.questions) for t in episode.turns]
        assert [t.reply for t in got.turns] == [t.reply for t in episode.turns]
        assert any(not t.is_silent for t in got.turns)
        assert_same_frames(item.frame_paths, frames)


def test_round_trip_rl_gives_the_episodes_references_and_context(corpus, exported):
    # At 8 frames (16 s) each clip is one stretch from 0 s with no context; GRPO's prompt split
    # puts one video in train and one in val.
    paths = sorted(exported.glob("*_stretch_with_context-max_8_frames-*.parquet"))
    assert [p.name.rsplit("-", 1)[1] for p in paths] == ["train.parquet", "val.parquet"]
    assert paths[0].name == "proactive_video-mixed_question-2_sec_per_frame-20_60s_stretch_with_context-max_8_frames-train.parquet"
    assert user_turns_path(paths[0]).name.endswith("max_8_frames-user_turns.json")
    row = pq.read_table(paths[0]).to_pylist()[0]
    assert row["prompt"][-1]["role"] == "user" and row["prompt"][-1]["content"].startswith("<image><image>")
    assert len(row["images"]) == row["prompt"][-1]["content"].count("<image>")
    released = []
    for path in paths:
        items, counts = read_verl_rl(path)
        assert counts.skipped == {} and counts.read == 1
        released += items
    direct = direct_episodes(corpus, "train")
    for item in released:
        dialogue, episode, frames = direct[item.outside_id.rsplit("-0s_", 1)[0]]
        assert item.context_turns == 0 and item.prev_replies == ()  # a stretch from 0 s: no context
        assert [t.time_s for t in item.episode.turns] == [t.time_s for t in episode.turns]
        assert [questions_text(t.questions) for t in item.episode.turns] == \
            [questions_text(t.questions) for t in episode.turns]
        # a stretch ends at the frame cap: windows opening after it are not the prompt's to score
        cap_s = EPISODES.max_frames * EPISODES.seconds_per_frame
        assert [(r.question, r.answer, r.reply_span) for r in item.references] == \
            [(r.question, r.answer, r.reply_span) for r in dialogue.references if r.reply_span[0] <= cap_s]
        assert_same_frames(item.frame_paths, frames)


def test_pvqa_export_is_the_benchmark_layout_of_the_validation_split(exported):
    [record] = read_gold(exported / "SAMPLE" / "anno.json")[:1]
    assert record.category == "SAMPLE" and record.question_id == "bikes-mq-0-q0"  # dialogue_row keeps its question ids
    assert record.answers[0].reply_span_s == (1.2, 4.0)  # related end + 1
    inputs = read_frame_input(exported / "SAMPLE-frame_input_format.json")
    assert [r.question_id for r in inputs] == ["bikes-mq-0-q0", "bikes-mq-0-q1"]
    first = inputs[0].turns[0]
    assert first.images == ("frames/bikes-0s_10s/000001.jpg", "frames/bikes-0s_10s/000002.jpg")
    assert first.text == "Who walks past the cars?"
    assert inputs[1].turns[0].text == "" and inputs[1].turns[1].text == "What is behind the bollards?"


# ---------------------------------------------------------------- records written by hand

def write_frames(root: Path, clip: str, n: int) -> list[str]:
    (root / clip).mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (64, 48), (40 * i, 100, 200)).save(root / clip / f"{i + 1:06d}.jpg")
    return [f"{clip}/{i + 1:06d}.jpg" for i in range(n)]


def test_hand_written_sft_lines(tmp_path):
    frames = write_frames(tmp_path / "frames", "vid=7-10s_16s", 4)
    good = {"messages": [
        {"role": "system", "content": "You watch a video."},
        {"role": "user", "content": "<image><image>What is shown?"},
        {"role": "assistant", "content": "NO REPLY"},
        {"role": "user", "content": "<image><image>"},
        {"role": "assistant", "content": "A blue card."}],
        "images": [{"path": f"frames/{p}"} for p in frames], "metadata": {"question_id": "vid=7%Q1"}}
    offline = {"messages": [{"role": "user", "content": "<video>Describe."}, {"role": "assistant", "content": "x"}],
               "videos": ["v.mp4"]}
    late = {**good, "messages": [good["messages"][0], {"role": "user", "content": "Look <image><image>"},
                                 good["messages"][2]], "images": good["images"][:2]}
    path = tmp_path / "web-half_multi_half_single_question-1_sec_per_frame-v1-sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, offline, late)) + "\n{broken\n")
    [item], counts = read_swift_sft(path)
    assert counts.skipped == {"video_items_unsupported": 1, "placeholder_layout": 1, "malformed_line": 1}
    assert item.outside_id == "vid=7%Q1" and item.episode.dialogue_id != "vid=7%Q1"
    # 1 s per frame from the file name, from the clip's start (10 s): frames at 10, 11 | 12, 13
    assert [t.frame_times_s for t in item.episode.turns] == [(10.0, 11.0), (12.0, 13.0)]
    assert [t.time_s for t in item.episode.turns] == [11.0, 13.0]
    assert [t.reply for t in item.episode.turns] == ["NO REPLY", "A blue card."]
    assert item.episode.turns[0].questions == ("What is shown?",)
    assert [p.name for p in item.frame_paths] == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]


def test_hand_written_rl_row_with_context(tmp_path):
    frames = write_frames(tmp_path / "frames", "ego-clip-0s_12s", 6)
    qid = "ego-clip%Q2"
    image = [{"type": "image", "image": f"frames/{p}"} for p in frames]
    row = {
        "data_source": "ego", "images": image[:4],
        "prompt": [{"role": "system", "content": "sys"},
                   {"role": "user", "content": "<image><image>What am I doing?"},
                   {"role": "assistant", "content": "You pick up a knife."},
                   {"role": "user", "content": "<image><image>"}],
        "reward_model": {"ground_truth": {
            "question_id": qid,
            "answer": [{"question": "What am I doing?", "content": "You cut bread.", "reply_timespan": [4.0, 9.0]}],
            "model_pred_timestamps": [2.0, 6.0, 10.0], "prev_assistant_replies": ["You pick up a knife."]}},
        "extra_info": {"index": 0, "tools_kwargs": {"online_video_provider": {"execute_kwargs": {"question_id": qid}}}},
    }
    path = tmp_path / "ego-half_multi_half_single_question-2_sec_per_frame-20s_seg_as_example-v1-max_90_frames-train.parquet"
    pq.write_table(pa.Table.from_pylist([row]), path)
    side = {qid: [{"content": [*image[0:2], {"type": "text", "text": "What am I doing?"}]},
                  {"content": image[2:4]}, {"content": image[4:6]}]}
    path.with_name(path.name.replace("-train.parquet", "-user_turns.json")).write_text(json.dumps(side))
    [item], counts = read_verl_rl(path)
    assert counts.skipped == {}
    assert item.context_turns == 1 and item.prev_replies == ("You pick up a knife.",)
    assert [t.time_s for t in item.episode.turns] == [2.0, 6.0, 10.0]
    assert [t.reply for t in item.episode.turns][:1] == ["You pick up a knife."]
    assert [(r.answer, r.reply_span) for r in item.references] == [("You cut bread.", (4.0, 9.0))]
    assert len(item.frame_paths) == 6


# ---------------------------------------------------------------- the trainer reads them

def test_sft_and_grpo_train_on_the_exported_files(exported, tmp_path):
    [sft_file] = exported.glob("*-train-sft.jsonl")
    [val_file] = exported.glob("*-validation-sft.jsonl")
    common = ["--preset", "tiny", f"max_pixels={TRAIN_PIXELS}", "episodes.max_frames=8"]
    assert run_main(["sft", *common, f"data={sft_file}", f"eval_data={val_file}", f"output_dir={tmp_path / 'sft'}",
                     "max_steps=2", "corpus=/nonexistent"]) == 0
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["skipped"] == {} and summary["eval_loss"] > 0
    # the summary counts what it trained on: the file's episodes, not the (absent) corpus's
    lines = sft_file.read_text().splitlines()
    assert summary["data"]["episodes"] == len(lines) == 2 and summary["data"]["turns"] > 0
    assert summary["data"]["reply_turns"] == sum(
        m["content"] != "NO REPLY" for line in lines for m in json.loads(line)["messages"] if m["role"] == "assistant")

    [rl_file] = exported.glob("*-train.parquet")
    assert run_main(["grpo", *common, f"data={rl_file}", f"output_dir={tmp_path / 'grpo'}", "max_steps=1",
                     "max_new_tokens_per_turn=3", "rollouts_per_episode=2", "micro_batch_rollouts=2",
                     "corpus=/nonexistent"]) == 0
    summary = json.loads((tmp_path / "grpo" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["skipped"] == {} and summary["history"][0]["rollouts"] == 2



def test_an_rl_stretch_with_context_round_trips():
    """A stretch [6, 10] s with 6 s of context: the earlier turns enter the prompt with their
    reference replies; only windows still open when the rollout starts are scored."""
    from schemas import Dialogue
    from training.data.mmduet2 import RLStretch, parse_verl_row, verl_row

    dialogue = Dialogue.model_validate(dialogue_row())
    episode = build_episode(dialogue, "bikes.mp4", EPISODES, frame_timeline)
    paths = {t: f"frames/bikes-0s_10s/{i + 1:06d}.jpg" for i, t in enumerate(episode.frame_times_s)}
    row, side = verl_row(RLStretch(dialogue, 6.0, 10.0, 6.0), episode, paths, "sys", 0, "sample")
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["prompt"][2]["content"] == "A man in a dark suit."  # the turn at 2 s carries it
    assert row["prompt"][3]["content"] == "<image><image>What is behind the bollards?"
    truth = row["reward_model"]["ground_truth"]
    assert truth["question_id"] == "bikes-mq-0-6s_10s"
    assert truth["prev_assistant_replies"] == ["A man in a dark suit."]
    assert [a["content"] for a in truth["answer"]] == ["A bicycle chained to a railing."]
    assert truth["model_pred_timestamps"] == [2.0, 6.0, 8.0]

    item = parse_verl_row(row, {truth["question_id"]: side}, Path("/data"), 2.0)
    assert item.context_turns == 1 and item.prev_replies == ("A man in a dark suit.",)
    assert [t.time_s for t in item.episode.turns] == [t.time_s for t in episode.turns]
    assert [t.reply for t in item.episode.turns][:1] == ["A man in a dark suit."]
    assert [questions_text(t.questions) for t in item.episode.turns] == \
        [questions_text(t.questions) for t in episode.turns]


def test_verl_export_names_the_frame_cap_and_writes_no_empty_split(tmp_path, capsys):
    # One rl video: its prompts are all train or all val, never both. Default frame cap (no
    # --max-frames): the name says 90 frames (2 s per frame, ~180 s), never None.
    corpus = build_corpus(tmp_path / "corpus", {"rl": [dialogue_row()]}, ["bikes"])
    assert export_main(["verl-rl", "--corpus", str(corpus), "--out", str(tmp_path / "out")]) == 0
    written = sorted((tmp_path / "out").glob("*.parquet"))
    assert len(written) == 1 and "-max_90_frames-" in written[0].name
    assert pq.read_metadata(written[0]).num_rows > 0  # the split with no prompt has no file of 0 rows
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["skipped"]) & {"no_train_prompts", "no_val_prompts"}
