"""The trainer's data side at corpus scale (issue 17): memory to open a split, and loader speed.

Corpora of 5k and 52k videos are built by the project's own writers: synthetic per-video results
(`bench.synthetic_results`, 60 s videos, ~1.9 dialogues each) sharded by `curation.corpus.shards.
build_shards`. No video is decoded: the result rows name video files that do not exist, and the
frame cache entries the loader reads are written directly with `FrameCache.write` (seeded noise
frames of the size `smart_resize` gives a 1280x720 video at the trainer's pixel budget), only for
the videos of the episodes the loader measures.

1. RSS: in a fresh process per size, after the trainer's imports, open the train split the way
   `training.sft.train` does (`LazySplit`, the bounded summary sample, the tiny tokenizer's texts,
   the batch order and this rank's share); RSS(52k) / RSS(5k), goal <= 1.2 (read_split: ~5).
2. Speed, in one process on the 5k corpus: loader episodes/s (`EpisodeDataset` over the lazy split
   with the frame cache, built and collated in this process) / tiny-preset SFT steps/s (forward,
   backward and optimizer step of one episode of the same set, pre-collated), in alternating
   rounds, medians, one torch thread each (a per-core ratio). Goal >= 5 (decoding the video: 0.1). The trainer's DataLoader with its default
   workers over the same episodes is printed beside it: it multiplies the first number by up to
   the worker count where the cores are free.

    python -m bench.training_loader [--sizes 5000 52000] [--episodes 48] [--workdir /tmp/pv-bench-loader]

Corpora are kept in the work folder between runs (results and shards at 52k take a few minutes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from schemas.cli import ArgumentParser


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def build_corpus(n: int, workdir: Path) -> Path:
    from bench.synthetic_results import write_results
    from curation.corpus.shards import build_shards

    results_dir, corpus = workdir / f"results-{n}", workdir / f"corpus-{n}"
    if not (corpus / "index.json").is_file():
        write_results(results_dir, range(n))
        build_shards(results_dir, corpus)
    return corpus


def measure_rss(corpus: Path) -> dict:
    """In a fresh process: the trainer's imports, then the data section of `training.sft.train`."""
    import gc

    import training.sft  # noqa: F401  (the trainer's imports are the baseline)
    from curation.video.frames import frame_timeline
    from training.data.dataset import batch_order, rank_batches
    from training.data.episodes import EpisodeConfig
    from training.data.lazy_split import LazySplit, SplitItems, spread_indices
    from training.data.summary import episode_summary
    from training.model import corpus_texts

    gc.collect()
    base = rss_mib()
    started = time.perf_counter()
    items = SplitItems([LazySplit(corpus, "train")])
    sample = [items[i] for i in spread_indices(len(items), 2000)]
    summary = episode_summary([it[0] for it in sample], EpisodeConfig(), frame_timeline)
    texts = corpus_texts(sample, "system")
    for split in items.splits:
        split.drop_cache()
    mine = rank_batches(batch_order(len(items), 1, 0, 0, items.block_sizes()), 2, 0)
    seconds = time.perf_counter() - started
    del sample, texts
    gc.collect()
    return {"dialogues": len(items), "episodes_summarised": summary["episodes"], "my_batches": len(mine),
            "base_rss_mib": base, "rss_mib": rss_mib(), "open_s": seconds}


def noise_frames(count: int, max_pixels: int, seed: int):
    import numpy as np

    from curation.video.frames import smart_resize

    h, w = smart_resize(720, 1280, max_pixels)
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]


def measure_speed(corpus: Path, episodes: int, workdir: Path, workers: int | None) -> dict:
    import torch

    from curation.video.frames import frame_timeline
    from training.data.chat_template import DEFAULT_SYSTEM_PROMPT, TemplateConfig, TurnRenderer
    from training.data.dataset import CollateEpisodes, EpisodeDataset, batch_order, loader_workers
    from training.data.frame_cache import FrameCache
    from training.data.lazy_split import LazySplit, spread_indices
    from training.model import (
        corpus_texts,
        load_image_processor,
        load_tokenizer,
        prepare_tiny_checkpoint,
    )
    from training.sft import SFTConfig, batch_loss

    # One thread for both sides: on a shared host, a multi-threaded step's time swings 5x with the
    # load (spinning threads), a single-threaded loader's does not; per core, the ratio is stable.
    torch.set_num_threads(1)
    cfg = SFTConfig(preset="tiny")
    split = LazySplit(corpus, "train")
    split.frame_cache = cache = FrameCache(corpus, cfg.episodes.seconds_per_frame, cfg.episodes.frame_cap,
                                           cfg.max_pixels)
    order = batch_order(len(split), 1, cfg.seed, 0, split.block_sizes())[:episodes + 2]
    for batch in order:  # cache entries for exactly the episodes measured
        dialogue = split.dialogue(batch[0])
        if cache.frame_count(dialogue.video_id) is None:
            count = len(frame_timeline(dialogue.duration_s, cfg.episodes.seconds_per_frame, cfg.episodes.frame_cap))
            cache.write(dialogue.video_id, noise_frames(count, cfg.max_pixels, len(dialogue.video_id)))
    texts = corpus_texts([split[i] for i in spread_indices(len(split), 2000)], DEFAULT_SYSTEM_PROMPT)
    model_dir = prepare_tiny_checkpoint(texts, workdir / "tiny-model", seed=0)
    tokenizer = load_tokenizer(str(model_dir))
    image_processor = load_image_processor(str(model_dir), cfg.max_pixels)
    renderer = TurnRenderer(tokenizer, DEFAULT_SYSTEM_PROMPT, cfg.template.image_pad_token)
    dataset = EpisodeDataset(split, cfg.episodes, renderer, image_processor, TemplateConfig(), cfg.max_pixels)
    collate = CollateEpisodes(tokenizer.pad_token_id)

    from training.model import load_trainable_model

    model = load_trainable_model(str(model_dir), True, True, False, cfg.lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def sft_step(tensors) -> None:
        loss = batch_loss(model, tensors, torch.device("cpu"), renderer.image_pad_id)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Rounds that alternate loading and training in this process, so both see the same machine load
    # (the host may be shared): the ratio is of the medians. This is what one loader process gives.
    first = collate([dataset[order[0][0]]])
    sft_step(first.tensors)  # warm-up
    per_episode, per_step, skipped = [], [], 0
    rounds, per_round = 4, max(1, episodes // 4)
    for r in range(rounds):
        began = time.perf_counter()
        for batch in order[1 + r * per_round:1 + (r + 1) * per_round]:
            skipped += len(collate([dataset[i] for i in batch]).skips)
        per_episode.append((time.perf_counter() - began) / per_round)
        began = time.perf_counter()
        sft_step(first.tensors)
        per_step.append(time.perf_counter() - began)
    # The trainer's DataLoader with its default workers over the same episodes, for the record.
    workers = loader_workers(workers)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=order[1:], collate_fn=collate, num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    batches = iter(loader)
    next(batches)  # worker start
    began, seen = time.perf_counter(), 0
    for _ in batches:
        seen += 1
    loader_per_s = seen / (time.perf_counter() - began)
    import os
    import statistics

    return {"workers": workers, "cores": len(os.sched_getaffinity(0)), "episodes": rounds * per_round,
            "skipped": skipped, "episodes_per_s": 1 / statistics.median(per_episode),
            "steps_per_s": 1 / statistics.median(per_step), "dataloader_episodes_per_s": loader_per_s,
            "frames_per_episode": int(first.tensors["image_grid_thw"].shape[0]),
            "tokens_per_episode": int(first.tensors["input_ids"].shape[1])}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.training_loader", "--child", *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench.training_loader")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 52000])
    parser.add_argument("--episodes", type=int, default=48)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pv-bench-loader"))
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the trainer's)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, corpus = args.child[0], Path(args.child[1])
        result = measure_rss(corpus) if mode == "rss" else measure_speed(corpus, args.episodes, args.workdir, args.workers)
        print(json.dumps(result))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpora = {n: build_corpus(n, args.workdir) for n in args.sizes}
    rows = {n: _child("rss", str(corpus)) for n, corpus in corpora.items()}
    print(f"{'videos':>7} {'dialogues':>9} {'base RSS MiB':>12} {'RSS MiB':>8} {'open s':>7}")
    for n, r in rows.items():
        print(f"{n:>7} {r['dialogues']:>9} {r['base_rss_mib']:>12.0f} {r['rss_mib']:>8.0f} {r['open_s']:>7.2f}")
    small, large = min(rows), max(rows)
    if small != large:
        print(f"RSS after reading the split, {large} / {small} videos: "
              f"{rows[large]['rss_mib'] / rows[small]['rss_mib']:.2f} (goal <= 1.2; read_split: ~5)")
    speed = _child("speed", str(corpora[small]), "--episodes", str(args.episodes), "--workdir", str(args.workdir),
                   *(["--workers", str(args.workers)] if args.workers is not None else []))
    print(f"loader from the frame cache, one process: {speed['episodes_per_s']:.2f} episodes/s "
          f"({speed['episodes']} episodes of {speed['frames_per_episode']} frames, {speed['skipped']} skipped); "
          f"tiny SFT: {speed['steps_per_s']:.2f} steps/s ({speed['tokens_per_episode']} tokens); "
          f"DataLoader with {speed['workers']} workers on {speed['cores']} cores: "
          f"{speed['dataloader_episodes_per_s']:.2f} episodes/s")
    print(f"loader episodes/s (one process) / SFT steps/s: {speed['episodes_per_s'] / speed['steps_per_s']:.1f} "
          "(goal >= 5; decoding: 0.1); each DataLoader worker adds about one more where cores allow")


if __name__ == "__main__":
    main()
