"""The issue's cases through the real command, on a copy of the finished sample corpus:

1. SIGKILL the build: Prefect's temporary server does not outlive it.
2. Change a row's uri and licence (bikes -> other.mp4, CC0-1.0), drop a row, re-run with
   `--set shards.buckets=7` and SIGTERM when the log prints `shards: N files written`: exit 143,
   Prefect records the run Cancelled, the corpus is the old one, whole (datasets loads it, its card
   names only files that are there), and no process of the run is left.
3. The same command to the end: the videos table publishes the new uri, sha256 and licence, the
   dropped row is gone from every table, and card and index list the same 7-bucket shards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curation.corpus.public_rows import public_uri
from curation.hashing import sha256_file
from tests.conftest import ROOT, SAMPLES
from tests.generated_corpus import table_rows
from tests.test_release import card_files, index_files

pytestmark = pytest.mark.slow


def session_processes(sid: int) -> list[str]:
    """The processes still alive in a session (the build was started as its leader)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120])
    return alive


def wait_gone(sid: int, timeout_s: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (alive := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def start(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.build_corpus", "--config", str(config), *extra], cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(log: Path, proc: subprocess.Popen, needle: str, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in log.read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(sample_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("state-flow")
    corpus = folder / "corpus"
    shutil.copytree(sample_corpus, corpus)
    shutil.copy(SAMPLES / "videos" / "generated_six_scenes.mp4", folder / "other.mp4")
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        for key in ("uri", "text_uri"):
            if key in row and "://" not in row[key]:
                row[key] = str(SAMPLES / row[key])
    bikes = next(r for r in rows if r["video_id"] == "bikes")
    bikes |= {"uri": str(folder / "other.mp4"), "licence": "CC0-1.0"}
    rows = [r for r in rows if r["video_id"] != "generated_four_scenes"]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = yaml.safe_load((SAMPLES / "sample.yaml").read_text())
    config |= {"manifest": str(folder / "manifest.jsonl"), "output_dir": str(corpus)}
    config["llm"]["replay_path"] = str(SAMPLES / "replay.jsonl")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return {"folder": folder, "corpus": corpus, "config": folder / "config.yaml", "old_index": index_files(corpus)}


def test_a_killed_build_leaves_no_process_behind(world):
    log = world["folder"] / "killed.log"
    proc = start(world["config"], log)
    wait_for(log, proc, "Beginning flow run")
    os.kill(proc.pid, signal.SIGKILL)  # the build only, not its process group
    proc.wait()
    assert not wait_gone(proc.pid), log.read_text()[-2000:]
    assert index_files(world["corpus"]) == world["old_index"]


def test_sigterm_after_the_shards_leaves_the_old_corpus_whole_and_the_run_cancelled(world, monkeypatch):
    log = world["folder"] / "sigterm.log"
    proc = start(world["config"], log, "--set", "shards.buckets=7")
    wait_for(log, proc, "files written")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    text = log.read_text()
    assert not wait_gone(proc.pid), text[-2000:]
    corpus = world["corpus"]
    assert card_files(corpus) == index_files(corpus) and all((corpus / p).is_file() for p in card_files(corpus))
    # The signal lands seconds before the release (the card's statistics and figures come first).
    assert code == 143, text[-3000:]
    assert "1 manifest row changed" in text  # the edited row is redone, not reused
    assert "Finished in state Cancelled(" in text and "stopped by SIGTERM" in text
    assert index_files(corpus) == world["old_index"] and not (corpus / ".release").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    loaded = datasets.load_dataset(str(corpus), "dialogues", cache_dir=str(world["folder"] / "hf"))
    assert sum(len(split) for split in loaded.values()) > 0


def test_the_rerun_publishes_the_new_row_and_drops_the_removed_one(world):
    log = world["folder"] / "rerun.log"
    proc = start(world["config"], log, "--set", "shards.buckets=7")
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert not wait_gone(proc.pid)
    corpus = world["corpus"]
    videos = {r["video_id"]: r for r in table_rows(corpus, "videos")}
    assert videos["bikes"]["uri"] == public_uri(str(world["folder"] / "other.mp4"))  # local:other.mp4
    assert videos["bikes"]["licence"] == "CC0-1.0"
    assert videos["bikes"]["sha256"] == sha256_file(world["folder"] / "other.mp4")
    for table in ("videos", "segments", "scenes", "dialogues", "quarantine"):
        assert all(r.get("video_id") != "generated_four_scenes" for r in table_rows(corpus, table)), table
    index = json.loads((corpus / "index.json").read_text())
    assert index["buckets"]["count"] == 7 and card_files(corpus) == index_files(corpus)
