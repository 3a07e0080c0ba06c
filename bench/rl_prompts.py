"""How many RL prompts a corpus yields: the sample corpus, and a synthetic corpus sized like the paper's.

    .venv/bin/python -m bench.rl_prompts [--corpus corpus] [--scale 1.0]

The synthetic corpus follows FACTS.md: 50,228 web videos (about 92.7 s on average) and 2,543
egocentric ones (about 164.4 s); two to four dialogues per video by length, half single- and half
multi-question, an answer window per 8-15 s segment. Only its video ids, sources and lengths
matter for the split; only the rl split's dialogues are built. It reports the videos per split
(default shares and the paper's per-source shares) and the RL prompts at 2 s and 1 s per frame,
next to the paper's 1,900 RL videos and ~7.97k training / 883 validation prompts.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from curation.corpus.shards import ShardConfig, split_of
from curation.video.frames import frame_timeline
from schemas import Dialogue
from schemas.cli import ArgumentParser
from training.data.corpus import read_split
from training.data.episodes import EpisodeConfig
from training.data.rl_prompts import RLPromptConfig, build_rl_prompts

WEB, EGO = 50_228, 2_543  # FACTS.md
PROVENANCE = {"generator": "bench.rl_prompts", "model": "synthetic", "prompt_version": "0",
              "parameters": {}, "created_at": "2026-01-01T00:00:00Z"}


def synthetic_dialogues(video_id: str, duration_s: float, rng: random.Random) -> list[Dialogue]:
    """Two to four dialogues by length (FACTS.md), alternating single- and multi-question."""
    out = []
    for d in range(min(4, 2 + int(duration_s // 120))):
        did = f"{video_id}-d{d}"
        bounds = [0.0]
        while bounds[-1] < duration_s - 4:
            bounds.append(min(duration_s, bounds[-1] + rng.uniform(8.0, 15.0)))
        kind = "single_question" if d % 2 == 0 else "multi_question"
        asked = [0.0] if kind == "single_question" else [0.0] + sorted(rng.sample(bounds[1:-1], min(2, len(bounds) - 2)))
        turns = [{"question_id": f"{did}-q{k}", "time_s": t, "text": f"Question {k}?"} for k, t in enumerate(asked)]
        refs = []
        for s, e in zip(bounds, bounds[1:], strict=False):
            k = max(i for i, t in enumerate(asked) if t <= s)
            if kind == "multi_question" and s == asked[k] and k > 0:
                refs.append({"question_id": f"{did}-q{k}", "question": f"Question {k}?", "immediate": True,
                             "answer": f"So far {k}.", "reply_span": [s, min(e, s + 1.0)]})
            refs.append({"question_id": f"{did}-q{k}", "question": f"Question {k}?", "answer": f"Answer at {s:.0f} s.",
                         "reply_span": [s, e]})
        out.append(Dialogue.model_validate({"dialogue_id": did, "video_id": video_id, "kind": kind,
                                            "duration_s": duration_s, "user_turns": turns, "references": refs,
                                            "provenance": PROVENANCE}))
    return out


def synthetic_corpus(scale: float, shards: ShardConfig, seed: int = 0) -> tuple[Counter, list[Dialogue]]:
    rng = random.Random(seed)
    splits: Counter = Counter()
    rl: list[Dialogue] = []
    for source, count, low, high in (("web", round(WEB * scale), 30.0, 155.4), ("ego", round(EGO * scale), 60.0, 268.8)):
        for i in range(count):
            video_id, duration_s = f"{source}{i:06d}", rng.uniform(low, high)  # means 92.7 s and 164.4 s
            split = split_of(video_id, shards, source)
            splits[(source, split)] += 1
            if split == "rl":
                rl += synthetic_dialogues(video_id, round(duration_s, 1), rng)
    return splits, rl


def prompt_counts(dialogues: list[Dialogue]) -> dict:
    out = {}
    for spf in (2.0, 1.0):
        prompts = build_rl_prompts(dialogues, RLPromptConfig(), EpisodeConfig(seconds_per_frame=spf), frame_timeline)
        out[f"{spf:g}s_per_frame"] = prompts.summary()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.rl_prompts")
    parser.add_argument("--corpus", default="corpus", help="a built corpus (the sample: make sample)")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the paper's 52,771 videos")
    args = parser.parse_args(argv)
    report = {}
    if (Path(args.corpus) / "index.json").is_file():
        report["sample"] = {"rl_videos": len({d.video_id for d in read_split(args.corpus, "rl").dialogues}),
                            **prompt_counts(read_split(args.corpus, "rl").dialogues)}
    for name, shards in (("synthetic_default_shares", ShardConfig()),
                         ("synthetic_paper_shares", ShardConfig(rl_share_by_source={"web": 0.03, "ego": 0.157}))):
        splits, rl = synthetic_corpus(args.scale, shards)
        report[name] = {"videos": {f"{s}/{p}": n for (s, p), n in sorted(splits.items())},
                        "rl_dialogues": len(rl), **prompt_counts(rl)}
    report["paper_quoted"] = {"source": "FACTS.md (MMDuet2 paper)", "rl_videos": 1_900, "prompts_train": 7_970,
                              "prompts_validation": 883}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
