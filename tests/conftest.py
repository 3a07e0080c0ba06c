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
