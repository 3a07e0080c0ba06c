"""Per-turn decision latency of the streaming loop: KV cache kept across turns vs re-encoding.

The tiny Qwen2.5-VL preset on CPU streams one 90-turn episode (2 frames per turn) twice in the same
run: with the cache (`training.streaming`, the default) and with the whole history re-encoded every
turn (`reencode=True`, the baseline). Latency is measured per turn from the turn's arrival (image
preprocessing included) to its last generated token; the table shows turns 1, 30, 60 and 90 (each
the median over repeats of that turn and its two neighbours on each side, and the two loops run in
lockstep, to damp scheduler noise on shared machines).

The random tiny model never emits `<|im_end|>` on its own, so every reply runs to the token cap;
the default cap of 5 tokens stands in for a `NO REPLY` turn (about as many tokens with Qwen's
tokenizer), the common case in proactive streaming. Goal (issue 7): turn-90 latency at most 2x
turn-1 with the cache.

    .venv/bin/python -m bench.streaming_latency [--turns 90] [--frame-size 112] [--reply-tokens 5] [--threads 1]
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from schemas.cli import ArgumentParser
from training.data.chat_template import TurnRenderer
from training.model import load_image_processor
from training.streaming import StreamConfig, StreamingSession, StreamTurn
from training.tiny import build_tiny_model, build_tiny_tokenizer

QUESTION = "What is happening in the video right now?"


def make_turns(n_turns: int, frame_size: int, seed: int = 0) -> list[StreamTurn]:
    rng = np.random.default_rng(seed)
    return [StreamTurn(time_s=4.0 * (i + 1),
                       frames=[rng.integers(0, 255, (frame_size, frame_size, 3), dtype=np.uint8) for _ in range(2)],
                       text=QUESTION if i == 0 else "")
            for i in range(n_turns)]


def run_lockstep(model, renderer, processor, turns, config: StreamConfig) -> tuple[list[float], list[float], int]:
    """Both loops over the same turns, one turn of each in turn, so load changes on a shared machine
    hit both alike; per-turn latencies of the cached and the re-encoding loop."""
    cached = StreamingSession(model, renderer, processor, config)
    again = StreamingSession(model, renderer, processor, config.model_copy(update={"reencode": True}))
    cached_s, again_s = [], []
    for turn in turns:
        cached_s.append(cached.step(turn).latency_s)
        again_s.append(again.step(turn).latency_s)
    assert cached.ids == again.ids  # same greedy conversation either way
    return cached_s, again_s, len(cached.ids)


def at_turn(latencies: list[list[float]], turn: int, half_window: int = 2) -> float:
    """Median over repeats and over turns `turn` +- `half_window` (1-based)."""
    i = turn - 1
    return statistics.median(x for run in latencies for x in run[max(0, i - half_window):i + half_window + 1])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.streaming_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=90)
    parser.add_argument("--frame-size", type=int, default=112, help="square frame side in pixels (112: 16 tokens)")
    parser.add_argument("--reply-tokens", type=int, default=5, help="token cap per reply (about a NO REPLY)")
    # One thread: the tiny model's matrices are too small to split, and on shared cores extra
    # threads mostly spin-wait (measured here: about 10x slower per step with 2 threads under load).
    parser.add_argument("--repeats", type=int, default=2, help="episodes per loop; medians over them")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = build_tiny_tokenizer([QUESTION, "A man walks past the parked cars."])
    model = build_tiny_model(tokenizer).eval()
    renderer = TurnRenderer(tokenizer)
    processor = load_image_processor("/nonexistent-so-defaults", args.frame_size**2)
    turns = make_turns(args.turns, args.frame_size)
    config = StreamConfig(max_new_tokens_per_turn=args.reply_tokens)
    run_lockstep(model, renderer, processor, turns[:3], config)  # warm-up: first-call allocations
    cached, reencoded = [], []
    started = time.perf_counter()
    for _ in range(args.repeats):
        c, r, tokens = run_lockstep(model, renderer, processor, turns, config)
        cached.append(c)
        reencoded.append(r)
    cached_total = sum(map(sum, cached)) / args.repeats
    reencoded_total = sum(map(sum, reencoded)) / args.repeats
    wall_s = time.perf_counter() - started

    points = sorted({1, *(t for t in (30, 60, 90) if t <= args.turns), args.turns})
    print(f"tiny Qwen2.5-VL, CPU ({torch.get_num_threads()} threads), {args.turns} turns x 2 frames of "
          f"{args.frame_size}x{args.frame_size}, {args.reply_tokens}-token replies, {tokens} tokens at the end")
    print(f"{'turn':>5} {'cache ms':>10} {'re-encode ms':>13} {'re-encode/cache':>16} {'cache/turn-1':>13}")
    rows = []
    for turn in points:
        c, r = at_turn(cached, turn), at_turn(reencoded, turn)
        rows.append({"turn": turn, "cache_ms": 1e3 * c, "reencode_ms": 1e3 * r, "reencode_over_cache": r / c,
                     "cache_over_turn1": c / at_turn(cached, 1)})
        print(f"{turn:>5} {1e3 * c:>10.1f} {1e3 * r:>13.1f} {r / c:>16.2f} {c / at_turn(cached, 1):>13.2f}")
    last = rows[-1]
    print(f"cache: turn-{last['turn']} / turn-1 = {last['cache_over_turn1']:.2f} (goal <= 2); "
          f"re-encode / cache at turn {last['turn']} = {last['reencode_over_cache']:.2f}; "
          f"summed turn latency per episode: cache {cached_total:.1f} s vs re-encode {reencoded_total:.1f} s "
          f"(bench wall time {wall_s:.0f} s); same tokens from both loops in every repeat: yes (checked)")
    print(json.dumps({"rows": rows, "cache_total_s": cached_total, "reencode_total_s": reencoded_total,
                      "final_tokens": tokens}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
