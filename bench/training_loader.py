"""The trainer's data side at corpus scale (issue 17): memory to open a split, and loader speed.

Corpora of 5k and 52k videos are built by the project's own writers: synthetic per-video results
(`bench.synthetic_results`, 60 s videos, ~1.9 dialogues each) sharded by `curation.corpus.shards.
build_shards`. Only the videos of the episodes the loader measures exist: each a link to one
generated 60 s 1280x720 clip (kept in the work folder), and their frame cache entries are that
clip's timeline frames, decoded once by `decode_frames` and written with `FrameCache.write`.

1. RSS: in a fresh process per size and way, after the trainer's imports, open the train split
   the way `training.sft.train` does (`LazySplit`, the bounded summary sample, the tiny
   tokenizer's texts, the batch order and this rank's share); RSS(52k) / RSS(5k), goal <= 1.2.
   The baseline, measured the same way: `read_split`, which builds every `Dialogue` in memory.
2. Speed, in one process on the 5k corpus: loader episodes/s (`EpisodeDataset` over the lazy split
   with the frame cache, built and collated in this process) / tiny-preset SFT steps/s (forward,
   backward and optimizer step of one episode of the same set, pre-collated), in alternating
   rounds, medians, one torch thread each (a per-core ratio). Goal >= 5. The baseline, in the same
   rounds: the loader without the frame cache, decoding the clip for each episode; its episodes
   are checked equal (every tensor) to the cached ones. The trainer's DataLoader with its default
   workers over the same episodes is printed beside it, with the batches it delivered.

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


def measure_rss(corpus: Path, way: str) -> dict:
    """In a fresh process: the trainer's imports, then the data section of `training.sft.train`
    ("lazy"), or the whole split read into `Dialogue` objects ("read_split", the baseline)."""
    import gc

    import training.sft  # noqa: F401  (the trainer's imports are the baseline)
    from curation.video.frames import frame_timeline
    from training.data.corpus import read_split
    from training.data.dataset import batch_order, rank_batches
    from training.data.episodes import EpisodeConfig
    from training.data.lazy_split import LazySplit, SplitItems, spread_indices
    from training.data.summary import episode_summary
    from training.model import corpus_texts

    gc.collect()
    base = rss_mib()
    started = time.perf_counter()
    if way == "read_split":
        split = read_split(corpus, "train")
        seconds = time.perf_counter() - started
        gc.collect()
        return {"dialogues": len(split.dialogues), "base_rss_mib": base, "rss_mib": rss_mib(), "open_s": seconds}
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


def real_clip(workdir: Path) -> Path:
    """A generated 60 s 1280x720 H.264 clip (the synthetic results' length), made once."""
    from bench.synthetic_results import DURATION_S
    from curation.video.synthetic import make_video

    path = workdir / "clip-60s-720p.mp4"
    if not path.exists():
        part = path.with_suffix(".part.mp4")
        make_video(part, [DURATION_S / 4] * 4, size=(1280, 720), crf=23)
        part.rename(path)
    return path


def measure_speed(corpus: Path, episodes: int, workdir: Path, workers: int | None) -> dict:
    import torch

    from curation.video.frames import decode_frames, frame_timeline
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
    clip, timelines = real_clip(workdir), {}
    for batch in order:  # videos and cache entries for exactly the episodes measured
        dialogue = split.dialogue(batch[0])
        video = split.video_path(dialogue.video_id)
        video.parent.mkdir(parents=True, exist_ok=True)
        video.unlink(missing_ok=True)
        video.symlink_to(clip)
        if dialogue.duration_s not in timelines:
            times = frame_timeline(dialogue.duration_s, cfg.episodes.seconds_per_frame, cfg.episodes.frame_cap)
            timelines[dialogue.duration_s] = decode_frames(clip, times, cfg.max_pixels)
        cache.write(dialogue.video_id, timelines[dialogue.duration_s])
    texts = corpus_texts([split[i] for i in spread_indices(len(split), 2000)], DEFAULT_SYSTEM_PROMPT)
    model_dir = prepare_tiny_checkpoint(texts, workdir / "tiny-model", seed=0)
    tokenizer = load_tokenizer(str(model_dir))
    image_processor = load_image_processor(str(model_dir), cfg.max_pixels)
    renderer = TurnRenderer(tokenizer, DEFAULT_SYSTEM_PROMPT, cfg.template.image_pad_token)
    dataset = EpisodeDataset(split, cfg.episodes, renderer, image_processor, TemplateConfig(), cfg.max_pixels)
    # The baseline: the same episodes with no frame cache, so each decodes its video.
    decoding = EpisodeDataset(LazySplit(corpus, "train"), cfg.episodes, renderer, image_processor, TemplateConfig(),
                              cfg.max_pixels)
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
    per_episode, per_step, per_decoded, skipped, loaded, same = [], [], [], 0, [], True
    rounds, per_round = 4, max(1, episodes // 4)
    for r in range(rounds):
        batches = order[1 + r * per_round:1 + (r + 1) * per_round]
        began = time.perf_counter()
        built = [collate([dataset[i] for i in batch]) for batch in batches]
        per_episode.append((time.perf_counter() - began) / per_round)
        skipped += sum(len(b.skips) for b in built)
        loaded += [(int(b.tensors["image_grid_thw"].shape[0]), int(b.tensors["input_ids"].shape[1]))
                   for b in built if b.tensors is not None]
        began = time.perf_counter()
        decoded = collate([decoding[i] for i in batches[0]])
        per_decoded.append(time.perf_counter() - began)
        same = same and same_tensors(decoded.tensors, built[0].tensors)
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
            "steps_per_s": 1 / statistics.median(per_step), "decoded_episodes_per_s": 1 / statistics.median(per_decoded),
            "decoded_episodes": rounds, "decoded_same_as_cached": same,
            "dataloader_episodes_per_s": loader_per_s, "dataloader_batches": 1 + seen, "order_batches": len(order) - 1,
            "frames_per_episode": int(first.tensors["image_grid_thw"].shape[0]),
            "tokens_per_episode": int(first.tensors["input_ids"].shape[1]),
            "loaded_frames_median": statistics.median(f for f, _ in loaded),
            "loaded_tokens_median": statistics.median(t for _, t in loaded)}


def same_tensors(a: dict | None, b: dict | None) -> bool:
    import torch

    return a is not None and b is not None and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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
        result = measure_speed(corpus, args.episodes, args.workdir, args.workers) if mode == "speed" else \
            measure_rss(corpus, mode)
        print(json.dumps(result))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpora = {n: build_corpus(n, args.workdir) for n in args.sizes}
    rows = {(n, way): _child(way, str(corpus)) for n, corpus in corpora.items() for way in ("lazy", "read_split")}
    print(f"{'videos':>7} {'dialogues':>9} {'way':>10} {'base RSS MiB':>12} {'RSS MiB':>8} {'open s':>7}")
    for (n, way), r in rows.items():
        print(f"{n:>7} {r['dialogues']:>9} {way:>10} {r['base_rss_mib']:>12.0f} {r['rss_mib']:>8.0f} "
              f"{r['open_s']:>7.2f}")
    small, large = min(corpora), max(corpora)
    if small != large:
        def growth(way: str) -> float:
            return rows[(large, way)]["rss_mib"] / rows[(small, way)]["rss_mib"]
        same = all(rows[(n, "lazy")]["dialogues"] == rows[(n, "read_split")]["dialogues"] for n in corpora)
        print(f"RSS after reading the split, {large} / {small} videos: {growth('lazy'):.2f} (goal <= 1.2); "
              f"read_split, the baseline: {growth('read_split'):.2f}; "
              f"same dialogues both ways: {'yes' if same else 'NO'}")
    speed = _child("speed", str(corpora[small]), "--episodes", str(args.episodes), "--workdir", str(args.workdir),
                   *(["--workers", str(args.workers)] if args.workers is not None else []))
    print(f"loader from the frame cache, one process: {speed['episodes_per_s']:.2f} episodes/s "
          f"({speed['episodes']} episodes, median {speed['loaded_frames_median']:g} frames and "
          f"{speed['loaded_tokens_median']:g} tokens, {speed['skipped']} skipped); "
          f"tiny SFT: {speed['steps_per_s']:.2f} steps/s (an episode of {speed['frames_per_episode']} frames and "
          f"{speed['tokens_per_episode']} tokens)")
    print(f"loader decoding the video instead (no frame cache): {speed['decoded_episodes_per_s']:.2f} episodes/s "
          f"over {speed['decoded_episodes']} episodes, the same as from the cache: "
          f"{'yes' if speed['decoded_same_as_cached'] else 'NO'}")
    print(f"DataLoader with {speed['workers']} workers on {speed['cores']} cores: "
          f"{speed['dataloader_episodes_per_s']:.2f} episodes/s ({speed['dataloader_batches']} of "
          f"{speed['order_batches']} batches delivered), "
          f"{speed['dataloader_episodes_per_s'] / speed['episodes_per_s']:.2f} x one process")
    print(f"loader episodes/s / SFT steps/s, one process: {speed['episodes_per_s'] / speed['steps_per_s']:.1f} "
          f"(goal >= 5); decoding the video: {speed['decoded_episodes_per_s'] / speed['steps_per_s']:.2f}")


if __name__ == "__main__":
    main()
