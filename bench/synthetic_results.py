"""Synthetic per-video results at corpus scale, written by the project's own `write_result`.

Each result looks like a real one of about 11 KB: a video row, 12 caption segments, 4 scenes,
2 dialogues (one single-question, one multi-question) and, for one video in 20, a quarantined
dialogue. Texts vary per video so the shards compress like real text, not like repeats.

    python -m bench.synthetic_results --videos 5000 --out /tmp/results
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from curation.corpus import results as results_mod
from curation.corpus.results import VideoResult, write_result
from schemas.cli import ArgumentParser
from schemas.records import (
    Dialogue,
    Provenance,
    Quarantine,
    ReferenceAnswer,
    Scene,
    Segment,
    UserTurn,
    Video,
)

CREATED = datetime(2026, 11, 25, tzinfo=UTC)
WORDS = ("red", "green", "blue", "amber", "violet", "teal", "ochre", "silver", "man", "woman", "dog", "car",
         "bicycle", "kitchen", "street", "knife", "pan", "door", "window", "table", "walks", "cuts", "opens")
DURATION_S = 60.0


def _text(seed: int, n: int) -> str:
    digest = hashlib.sha512(str(seed).encode()).digest()
    return " ".join(WORDS[b % len(WORDS)] for b in digest[:n]).capitalize() + "."


def synthetic_result(video_id: str, number: int, fingerprint: str = "bench") -> VideoResult:
    video = Video(video_id=video_id, source="bench", uri=f"https://example.invalid/{video_id}.mp4",
                  path=f"videos/{video_id}.mp4", sha256=hashlib.sha256(video_id.encode()).hexdigest(),
                  bytes=10_000_000 + number, duration_s=DURATION_S, fps=25.0, width=640, height=360,
                  codec="h264", has_audio=True, licence="CC-BY-4.0", metadata={"title": _text(number, 6), "description": _text(-number, 64)})
    segments = [Segment(segment_id=f"{video_id}-s{i:04d}", video_id=video_id, start_s=5.0 * i,
                        end_s=5.0 * i + 4.5, text=_text(number * 100 + i, 64), origin="caption", scene_id=i // 3)
                for i in range(12)]
    scenes = [Scene(video_id=video_id, scene_id=i, start_s=15.0 * i, end_s=15.0 * (i + 1), detector="adaptive",
                    score=3.5 + i) for i in range(4)]
    provenance = Provenance(generator="curation.dialogues", model="bench", prompt_version="dialogues.v1",
                            parameters={"temperature": "0.7"}, created_at=CREATED)
    dialogues = []
    for d, (kind, questions) in enumerate((("single_question", 1), ("multi_question", 3))):
        did = f"{video_id}-d{d}"
        turns, refs = [], []
        for q in range(questions):
            qid, start = f"{did}-q{q}", 5.0 + 18.0 * q
            question = _text(number * 10 + d * 3 + q, 14).rstrip(".") + "?"
            turns.append(UserTurn(question_id=qid, time_s=start - 5.0, text=question))
            refs.append(ReferenceAnswer(question_id=qid, question=question, answer=_text(number * 7 + q, 40),
                                        reply_span=(start, start + 9.5),
                                        evidence=[f"{video_id}-s{1 + 3 * q:04d}", f"{video_id}-s{2 + 3 * q:04d}"]))
        dialogues.append(Dialogue(dialogue_id=did, video_id=video_id, kind=kind, duration_s=DURATION_S,
                                  user_turns=turns, references=refs, provenance=provenance))
    quarantine = [Quarantine(item_id=f"{video_id}-d2", video_id=video_id, stage="dialogues",
                             reason="window_outside_video", detail="end 64 s > 60 s", created_at=CREATED)
                  ] if number % 20 == 0 else []
    return VideoResult(video_id=video_id, config_fingerprint=fingerprint, video=video, segments=segments,
                       scenes=scenes, dialogues=dialogues, quarantine=quarantine,
                       stage_durations_s={"probe": 0.2, "scenes": 1.5, "dialogues": 9.0},
                       llm_usage={"prompt_tokens": 4000, "completion_tokens": 600})


def video_id_of(number: int) -> str:
    return f"v{number:06d}"


@contextmanager
def _no_fsync() -> Iterator[None]:
    # Set-up only, never measured: 52k fsyncs would take minutes on a shared disk and prove nothing.
    real = results_mod.os.fsync
    results_mod.os.fsync = lambda fd: None
    try:
        yield
    finally:
        results_mod.os.fsync = real


def write_results(results_dir: Path, numbers: range, fingerprint: str = "bench") -> int:
    """Write the results for `numbers` that are not there yet; returns how many were written."""
    written = 0
    with _no_fsync():
        for number in numbers:
            video_id = video_id_of(number)
            if not results_mod.result_path(results_dir, video_id).exists():
                write_result(results_dir, synthetic_result(video_id, number, fingerprint))
                written += 1
    return written


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench.synthetic_results")
    parser.add_argument("--videos", type=int, default=5000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    n = write_results(args.out, range(args.videos))
    size = os.path.getsize(results_mod.result_path(args.out, video_id_of(0)))
    print(f"wrote {n} results ({size} bytes each) under {args.out}")


if __name__ == "__main__":
    main()
