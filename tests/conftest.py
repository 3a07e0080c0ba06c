"""Shared fixtures: the sample folder and small valid records to derive bad ones from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"

# Prefect must never talk to a user's server or the network from the test suite.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def samples_dir() -> Path:
    return SAMPLES


def dialogue_row(**overrides) -> dict:
    """A valid multi-question dialogue as plain data (what a JSONL line holds)."""
    row = {
        "dialogue_id": "bikes-mq-0",
        "video_id": "bikes",
        "kind": "multi_question",
        "duration_s": 10.0,
        "user_turns": [
            {"question_id": "bikes-mq-0-q0", "time_s": 0.0, "text": "Who walks past the cars?"},
            {"question_id": "bikes-mq-0-q1", "time_s": 6.0, "text": "What is behind the bollards?"},
        ],
        "references": [
            {"question_id": "bikes-mq-0-q0", "question": "Who walks past the cars?",
             "answer": "A man in a dark suit.", "reply_span": [1.2, 3.0], "evidence": ["bikes-s0001"]},
            {"question_id": "bikes-mq-0-q1", "question": "What is behind the bollards?",
             "answer": "A bicycle chained to a railing.", "reply_span": [7.5, 10.0],
             "evidence": ["bikes-s0005"]},
        ],
        "provenance": {"generator": "tests", "model": "hand-written", "prompt_version": "0",
                       "parameters": {"temperature": "0"}, "created_at": "2026-11-25T00:00:00Z"},
    }
    row.update(overrides)
    return row


@pytest.fixture
def make_dialogue_row():
    return dialogue_row


TINY_PIXELS = 56 * 56  # the tiny model's frames: 4 visual tokens each


def every_2s(duration_s: float, seconds_per_frame: float, max_frames: int) -> list[float]:
    """A frame timeline without a video: a frame every 2 s (what `frame_timeline` gives a build_episode)."""
    return [2.0 * (i + 1) for i in range(min(max_frames, int(duration_s // 2)))]


@pytest.fixture(scope="module")
def tiny_policy():
    """A tiny random Qwen2.5-VL (seed 0) whose tokenizer is trained on `dialogue_row()`'s texts,
    its processors (`TINY_PIXELS` a frame) and that dialogue: (model, ProcessorBits, Dialogue).
    One per test module, so a module may switch it to eval or train."""
    from schemas import Dialogue
    from training.data.chat_template import TurnRenderer
    from training.model import load_image_processor
    from training.rl.rollout import ProcessorBits
    from training.tiny import build_tiny_model, build_tiny_tokenizer

    row = dialogue_row()
    tokenizer = build_tiny_tokenizer([t["text"] for t in row["user_turns"]] + [r["answer"] for r in row["references"]])
    model = build_tiny_model(tokenizer, seed=0)
    image_processor = load_image_processor("/nonexistent-so-defaults", TINY_PIXELS)
    return model, ProcessorBits(TurnRenderer(tokenizer), image_processor, TINY_PIXELS), Dialogue.model_validate(row)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory):
    """One real `prefect server start` on loopback for the whole session (FACTS.md: start-up
    costs ~10 s, so never one per test), with a temporary Prefect home. Returns the environment
    a subprocess needs to use it."""
    import subprocess
    import sys
    import time
    import urllib.request

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "DO_NOT_TRACK": "1", "PREFECT_SERVER_LOGGING_LEVEL": "ERROR"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{api}/health", timeout=2).read()
            break
        except Exception:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
    yield {**env, "PREFECT_API_URL": api}
    stop_process(server)
    log.close()


def stop_process(proc, timeout_s: float = 30) -> None:
    """Ask a background server to stop; kill it if it has not within `timeout_s`."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def build_sample_corpus(output_dir: Path, *extra: str, env: dict | None = None, timeout_s: float = 600):
    """Run the README's sample build (the real flow, in its own process) into `output_dir`."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "flows.build_corpus", "--config", str(SAMPLES / "sample.yaml"),
           "--set", f"output_dir={output_dir}", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """The sample corpus, built once per session by the same command `make sample` runs."""
    out = tmp_path_factory.mktemp("sample") / "corpus"
    proc = build_sample_corpus(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (out.parent / "build.stderr").write_text(proc.stderr)  # what a user saw: tests check it is quiet
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model's matrices are too small to split; extra threads only spin on shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
