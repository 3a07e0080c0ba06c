"""SIGKILL the build at random points, run it again: the rows equal an uninterrupted run's."""

import hashlib
import json
import os
import random
import subprocess
import sys
import time

import pytest

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
        started = time.monotonic()
        proc = gc.run_flow(config)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        summary = json.loads((baseline / "summary.json").read_text())
        assert summary["with_dialogues"] == 8, summary  # a baseline worth comparing against
        yield {"folder": folder, "manifest": manifest, "stub": stub, "baseline": baseline,
               "seconds": time.monotonic() - started}


def _assert_index_consistent(corpus):
    """What a reader sees after the kill: either no index yet, or an index whose every shard is
    complete (present, with the listed size and checksum)."""
    index_path = corpus / "index.json"
    if not index_path.exists():
        return
    for shard in json.loads(index_path.read_text())["shards"]:
        data = (corpus / shard["path"]).read_bytes()
        assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_and_resumed_run_equals_the_uninterrupted_run(world, seed):
    rng = random.Random(seed)
    out = world["folder"] / f"killed-{seed}"
    config = gc.write_config(world["folder"], world["manifest"], out, world["stub"].url)
    proc = gc.start_flow(config, world["folder"] / f"killed-{seed}.log")
    # Anywhere in the run: Prefect start-up, mid-batch, shard writing, card writing.
    time.sleep(rng.uniform(0.3, 0.95) * world["seconds"])
    gc.kill_group(proc)
    _assert_index_consistent(out)

    resumed = gc.run_flow(config)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
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
