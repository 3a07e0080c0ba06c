"""The README's sample command, end to end: the real flow over the sample manifest."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT, build_sample_corpus

pytestmark = pytest.mark.slow

GOOD = {"bikes", "bigbuckbunny", "generated_four_scenes", "generated_six_scenes", "spoken_tour"}


def _index(corpus):
    return json.loads((corpus / "index.json").read_text())


def _rows(corpus, table):
    shards = [s for s in _index(corpus)["shards"] if s["table"] == table]
    return [row for s in shards for row in pq.read_table(corpus / s["path"]).to_pylist()]


def test_sample_build_writes_shards_index_quarantine_card(sample_corpus):
    index = _index(sample_corpus)
    tables = {s["table"] for s in index["shards"]}
    assert {"videos", "segments", "scenes", "dialogues", "quarantine"} <= tables
    for shard in index["shards"]:
        assert (sample_corpus / shard["path"]).stat().st_size == shard["bytes"]
        assert pq.read_metadata(sample_corpus / shard["path"]).num_rows == shard["rows"]

    assert {v["video_id"] for v in _rows(sample_corpus, "videos")} == GOOD
    dialogues = _rows(sample_corpus, "dialogues")
    assert {d["video_id"] for d in dialogues} == GOOD
    assert {d["kind"] for d in dialogues} == {"single_question", "multi_question"}

    quarantine = _rows(sample_corpus, "quarantine")
    by_item = {q["item_id"]: q for q in quarantine}
    for bad in ("empty_file", "not_a_video", "truncated", "../escape"):
        assert bad in by_item, f"{bad} not quarantined: {sorted(by_item)}"
        assert by_item[bad]["stage"] and by_item[bad]["reason"] and by_item[bad]["detail"]

    card = (sample_corpus / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in header["configs"]} >= {"dialogues", "videos"}
    assert "replay" in card.lower()

    summary = json.loads((sample_corpus / "summary.json").read_text())
    assert summary["llm_usage_this_run"].get("calls", 0) > 0


def test_the_sample_build_prints_no_traceback_and_no_error_line(sample_corpus):
    stderr = (sample_corpus.parent / "build.stderr").read_text()
    assert "build-corpus" in stderr  # the progress bar and summary are there: this is the real log
    lines = stderr.splitlines()
    assert not [x for x in lines if "Traceback" in x or "| ERROR" in x or x.startswith("ERROR")], stderr
    for noise in ("See https://www.prefect.io", "Still processing items", "Failed to send telemetry"):
        assert noise not in stderr
    assert " failed " not in stderr  # the bar says quarantined, as the summary does


def test_every_shard_passes_the_schema_validator(sample_corpus):
    paths = [str(sample_corpus / s["path"]) for s in _index(sample_corpus)["shards"]]
    proc = subprocess.run([sys.executable, "-m", "schemas", "validate", *paths], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_second_run_reuses_everything_and_writes_identical_shards(sample_corpus, tmp_path):
    before = {s["path"]: s["sha256"] for s in _index(sample_corpus)["shards"]}
    proc = build_sample_corpus(sample_corpus)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((sample_corpus / "summary.json").read_text())
    assert summary["new_this_run"] == 0
    assert summary["llm_usage_this_run"].get("calls", 0) == 0
    after = {s["path"]: s["sha256"] for s in _index(sample_corpus)["shards"]}
    assert after == before


def test_the_sample_has_a_video_in_every_split_and_grpo_reads_the_rl_split(sample_corpus, tmp_path):
    from training.rl.grpo import GRPOConfig, train_grpo

    index = _index(sample_corpus)
    by_split = {}
    for shard in index["shards"]:
        if shard["table"] == "dialogues":
            by_split.setdefault(shard["split"], set()).update(
                r["video_id"] for r in pq.read_table(sample_corpus / shard["path"]).to_pylist())
    assert set(by_split) == {"train", "validation", "rl"} and all(len(v) >= 1 for v in by_split.values())
    assert sum(len(v) for v in by_split.values()) == len(GOOD)  # disjoint by video
    assert index["split"]["ranked_small_corpus"] is True  # 5 videos: the tiny-corpus rule decided

    seen = []

    def reward(rollouts, references):
        seen.extend(references)
        return [{"reward_total": float(i % 2)} for i in range(len(rollouts))]

    cfg = GRPOConfig(corpus=str(sample_corpus), output_dir=str(tmp_path / "grpo"), preset="tiny",
                     max_pixels=56 * 56, episodes={"max_frames": 4}, max_new_tokens_per_turn=4,
                     micro_batch_rollouts=4, max_steps=1)
    summary = train_grpo(cfg, reward_fn=reward)
    assert summary["data"]["split"] == "rl" and summary["data"]["prompts_train"] >= 1
    rl_questions = {r.question_id.rsplit("-q", 1)[0].rsplit("-d", 1)[0] for refs in seen for r in refs}
    assert seen and rl_questions <= by_split["rl"]


def test_no_published_table_holds_a_local_path(sample_corpus):
    from tests.test_public_rows import LOCAL_PATH

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    tables = {s["table"] for s in _index(sample_corpus)["shards"]}
    cells = [(table, text) for table in tables for row in _rows(sample_corpus, table) for text in strings(row)]
    assert [(t, c) for t, c in cells if LOCAL_PATH.search(c) or str(ROOT) in c or str(sample_corpus.parent) in c] == []
    uris = {v["video_id"]: v["uri"] for v in _rows(sample_corpus, "videos")}
    assert uris["bikes"] == "local:bikes.mp4"  # a local source is named, not located
    card = (sample_corpus / "README.md").read_text()
    assert "fetch it from there" not in card and "curation.synthetic_video" not in card
    assert "curation.video.synthetic" in card  # the licence string names the module that made the clips
