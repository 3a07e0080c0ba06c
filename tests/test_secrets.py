"""A planted API key and Hub token never reach logs, shards, artifacts, the card or exceptions."""

import os
import subprocess
import sys

import pytest

from tests import generated_corpus as gc
from tests.openai_stub import StubServer
from tests.scripted_llm import FaultPlan

pytestmark = pytest.mark.slow

API_KEY = "sk-planted-5ecret-0f-the-llm-9d1c"
HF_TOKEN = "hf_planted5ecretT0kenOfTheHub77"


def _files_containing(folder, needles):
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


def test_planted_secrets_appear_nowhere_in_a_run_with_failures(tmp_path):
    videos = gc.make_videos(tmp_path / "videos", 3)
    manifest = gc.write_manifest(tmp_path, videos, [{"video_id": "bad", "uri": str(tmp_path / "manifest.jsonl")}])
    home = tmp_path / "prefect-home"
    env = {"OPENAI_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN, "PREFECT_HOME": str(home),
           "PREFECT_LOGGING_LEVEL": "DEBUG"}
    # Every request fails once (429/500/bad JSON...), so error paths log and raise too.
    plan = FaultPlan(rate=1.0, attempts=1)
    with StubServer(plan) as stub:
        out = tmp_path / "corpus"
        config = gc.write_config(tmp_path, manifest, out, stub.url, **{"llm.max_retries": 0})
        proc = gc.run_flow(config, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        # The key was really used: the server saw it.
        assert any(API_KEY in h.get("authorization", "") for h in stub.headers)
    push = subprocess.run([sys.executable, "-m", "flows.push_to_hub", "--corpus", str(out), "--repo-id",
                           "someone/corpus", "--dry-run"], cwd=gc.ROOT, capture_output=True, text=True,
                          env={**os.environ, **env})
    assert push.returncode == 0, push.stderr[-3000:]

    outputs = proc.stdout + proc.stderr + push.stdout + push.stderr
    assert API_KEY not in outputs and HF_TOKEN not in outputs
    # Shards, results, LLM cache, card, figures, summary, and Prefect's database (artifacts, logs).
    assert _files_containing(out, [API_KEY, HF_TOKEN]) == []
    assert _files_containing(home, [API_KEY, HF_TOKEN]) == []
    quarantine = gc.table_rows(out, "quarantine")
    assert quarantine, "the faults should have quarantined something"
