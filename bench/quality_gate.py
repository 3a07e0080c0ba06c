"""CPU time of the dialogue quality gate per dialogue, against the validator it runs after.

    python -m bench.quality_gate [--repeat 20]

Runs the labelled set of tests/quality_cases.py (good and garbage dialogues over the sample's
segments) through `dialogue_problems` (the validator, the baseline) and `assess_dialogue` (the
gate), each on the same built dialogues in the same run, and prints CPU milliseconds per dialogue
for both, their ratio, and whether the gate stays under its 5 ms budget. Both sides see the same
dialogues; the verdict counts printed beside the timing show they did the same work.
"""

from __future__ import annotations

import argparse
import time

from curation.text.config import DialogueConfig
from curation.text.dialogue_quality import assess_dialogue
from curation.text.dialogue_records import dialogue_from_output
from curation.text.dialogue_validation import dialogue_problems
from schemas.cli import ArgumentParser
from schemas.records import Provenance, Video
from tests.quality_cases import DURATIONS, GARBAGE, GOOD, segments_of

BUDGET_MS = 5.0


def _built(cfg: DialogueConfig):
    prov = Provenance(generator="bench", model="m", prompt_version="p")
    segments = {v: segments_of(v) for v in DURATIONS}
    out = []
    for video_id, kind, data in GOOD + GARBAGE:
        video = Video(video_id=video_id, source="sample", uri="u", sha256="0" * 64, bytes=1,
                      duration_s=DURATIONS[video_id], fps=25.0, width=64, height=64, codec="h264", has_audio=False)
        dialogue, _ = dialogue_from_output(kind, data, f"{video_id}-d0", video, segments[video_id], prov, cfg)
        if dialogue is not None:
            out.append((dialogue, segments[video_id]))
    return out


def _cpu_ms_per_dialogue(fn, items, repeat: int) -> tuple[float, int]:
    flagged = 0
    started = time.process_time()
    for _ in range(repeat):
        flagged = sum(bool(fn(d, s)) for d, s in items)
    return (time.process_time() - started) * 1000 / (repeat * len(items)), flagged


def main() -> None:
    ap = ArgumentParser(prog="python -m bench.quality_gate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    cfg = DialogueConfig()
    items = _built(cfg)
    assess_dialogue(*items[0], cfg.quality)  # the prompt n-grams are built once per process
    validator_ms, invalid = _cpu_ms_per_dialogue(lambda d, s: dialogue_problems(d, s, cfg), items, args.repeat)
    gate_ms, refused = _cpu_ms_per_dialogue(lambda d, s: assess_dialogue(d, s, cfg.quality).broken, items, args.repeat)
    print(f"{len(items)} dialogues x {args.repeat}: validator {validator_ms:.3f} ms CPU per dialogue "
          f"({invalid} invalid), gate {gate_ms:.3f} ms ({refused} refused); gate / validator = "
          f"{gate_ms / validator_ms:.2f}; gate under {BUDGET_MS:g} ms: {'yes' if gate_ms < BUDGET_MS else 'NO'}")


if __name__ == "__main__":
    main()
