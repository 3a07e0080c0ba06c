"""`python -m training.run prepare [--config FILE] [--corpus DIR] [key=value ...]`: fill the frame cache.

Decodes, once, the frames every episode of the corpus needs at the run's interval, frame cap and
pixel budget (the SFT config's `episodes.seconds_per_frame`, `episodes.max_frames`, `max_pixels`)
into `<corpus>/cache/frames/<key>/` (training.data.frame_cache), so `sft` (with `frame_cache:
auto`, the default) decodes no video. Resumable: a re-run decodes only videos not cached yet; a
changed interval or pixel budget is another key, so another folder. An undecodable or missing
video is counted by reason and left to the trainer, which skips it as before.
"""

from __future__ import annotations

import json

from training import checkpoints
from training.data.corpus import splits_of
from training.sft_config import SFTConfig, load_config


def add_arguments(parser) -> None:
    parser.add_argument("--splits", help="comma-separated dialogue splits (default: every split in the index)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: the usable cores)")
    checkpoints.add_run_arguments(parser, SFTConfig, None)  # the SFT run's corpus, episodes, max_pixels


def check(args) -> SFTConfig:
    cfg = load_config(args.config, args.overrides, corpus=args.corpus)
    checkpoints.require_corpus(cfg.corpus, None)
    return cfg


def main(args, cfg: SFTConfig) -> int:
    """`cfg` is `check(args)`, run by training.run before the decoder and torch are imported."""
    from training.data.dataset import usable_cores
    from training.data.frame_cache import FrameCache  # the decoder and torch: after the check
    from training.data.prepare_frames import prepare_cache

    splits = args.splits.split(",") if args.splits else sorted(splits_of(cfg.corpus))
    cache = FrameCache(cfg.corpus, cfg.episodes.seconds_per_frame, cfg.episodes.frame_cap, cfg.max_pixels)
    counts = prepare_cache(cfg.corpus, splits, cache, args.workers or usable_cores())
    print(json.dumps({"cache": str(cache.folder), "splits": splits, "written": counts.written,
                      "present": counts.present, "skipped": counts.skipped}))
    return 0
