"""SIGKILL the build mid-run (proven: the flow was still running, some items were done and nothing
was published yet; or all were done and publishing was under way), run it again: the rows equal
an uninterrupted run's, and the re-run redoes nothing that was finished."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from curation.corpus.card import CARD_NAME
from curation.corpus.results import TMP_PREFIX
from tests import generated_corpus as gc
from tests.openai_stub import StubServer
from tests.scripted_llm import FaultPlan

pytestmark = pytest.mark.slow

VOLATILE = {"dialogues": ("provenance.created_at",), "quarantine": ("created_at",)}
TABLES = ("videos", "segments", "scenes", "dialogues", "quarantine")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    videos = gc.make_videos(folder / "videos", 8)
    manifest = gc.write_manifest(folder, videos, [{"video_id": "not_video", "uri": str(folder / "manifest.jsonl")}])
    with StubServer(FaultPlan()) as stub:
        baseline = folder / "baseline"
        config = gc.write_config(folder, manifest, baseline, stub.url)
        proc = gc.run_flow(config)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        summary = json.loads((baseline / "summary.json").read_text())
        assert summary["with_dialogues"] == 8, summary  # a baseline worth comparing against
        items = len(videos) + 1  # and the row that is not a video
        assert _results_on_disk(baseline) == items
        yield {"folder": folder, "manifest": manifest, "stub": stub, "baseline": baseline, "items": items}


def _assert_index_consistent(corpus):
    """What a reader sees after the kill: either no index yet, or an index whose every shard is
    complete (present, with the listed size and checksum)."""
    index_path = corpus / "index.json"
    if not index_path.exists():
        return
    for shard in json.loads(index_path.read_text())["shards"]:
        data = (corpus / shard["path"]).read_bytes()
        assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]


def _results_on_disk(corpus) -> int:
    """Finished items: result files (`<results>/<xx>/<id>.json`; temp files are unfinished writes)."""
    return sum(not f.name.startswith(TMP_PREFIX) for f in (corpus / "work" / "results").glob("*/*.json"))


def _kill_after(proc, corpus, results: int) -> int:
    """SIGKILL the flow once `results` items are on disk; the items on disk after the kill. Fails
    unless the flow was still running: a flow that finished first would prove nothing."""
    deadline = time.monotonic() + 600
    while _results_on_disk(corpus) < results:
        assert proc.poll() is None, f"the flow exited ({proc.returncode}) before {results} results"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gc.kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, f"the flow exited ({proc.returncode}) before the kill"
    return _results_on_disk(corpus)


# Mid-batch: after some of the 9 items (8 videos, one bad row) have their result; publishing:
# after all of them, while the shards, summary and card are written.
@pytest.mark.parametrize(("seed", "phase"), [(1, "batch"), (2, "batch"), (3, "publishing")])
def test_killed_and_resumed_run_equals_the_uninterrupted_run(world, seed, phase):
    items = world["items"]
    out = world["folder"] / f"killed-{seed}"
    config = gc.write_config(world["folder"], world["manifest"], out, world["stub"].url)
    proc = gc.start_flow(config, world["folder"] / f"killed-{seed}.log")
    if phase == "batch":
        # The kill lands mid-run: some but not all items done, nothing published from this run.
        done = _kill_after(proc, out, random.Random(seed).randint(1, items - 3))
        assert 0 < done < items
        assert not (out / "index.json").exists() and not (out / "summary.json").exists()
    else:
        done = _kill_after(proc, out, items)
        assert done == items
        assert not (out / "summary.json").exists() or not (out / CARD_NAME).exists(), "the run had finished"
        _assert_index_consistent(out)

    resumed = gc.run_flow(config)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["reused"], summary["new_this_run"]) == (done, items - done), summary  # nothing redone
    for table in TABLES:
        drop = VOLATILE.get(table, ())
        assert gc.table_rows(out, table, drop) == gc.table_rows(world["baseline"], table, drop), table
    dialogue_ids = [r["dialogue_id"] for r in gc.table_rows(out, "dialogues")]
    assert len(dialogue_ids) == len(set(dialogue_ids)) and dialogue_ids


def test_a_full_output_disk_stops_the_run_clearly_and_a_rerun_completes(world):
    out = world["folder"] / "full-disk"
    config = gc.write_config(world["folder"], world["manifest"], out, world["stub"].url)
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    proc = subprocess.run([sys.executable, "-m", "tests.full_disk", "4", "--config", str(config)],
                          cwd=gc.ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "refused a write: No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "index.json").exists()

    resumed = gc.run_flow(config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused"] >= 3  # what was written before the disk filled is not redone
    for table in TABLES:
        drop = VOLATILE.get(table, ())
        assert gc.table_rows(out, table, drop) == gc.table_rows(world["baseline"], table, drop), table
