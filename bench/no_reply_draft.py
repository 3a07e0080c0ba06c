"""Per-turn latency of the streaming loop with `NO REPLY` verified as a draft in the turn's own
forward (`training.streaming`, the default) against decoding it token by token, in one run.

The tiny Qwen2.5-VL preset on CPU streams one 90-turn episode (2 frames per turn) with both loops in
lockstep (one turn of each in turn, so load changes on a shared machine hit both alike), and the
run fails unless both produce the same tokens. The random tiny model never says `NO REPLY`, so a
next-token bias (`training.tiny.add_next_token_bias`, the same in both loops) makes it speak like a
trained policy: `NO REPLY` on silent turns, a fixed reply of `--reply-tokens` tokens on spoken
ones. Spoken turns are spread evenly at the silent share of the sample corpus (23 of its 52 turns
are silent; `--silent-share` to change it).

Reported, each the ratio with / without the draft: median silent-turn latency (goal <= 0.5),
median spoken-turn latency (goal <= 1.05: the draft must not slow replies), and the summed
latency of the whole episode at the silent share, plus that sum projected at other shares from
the per-turn medians.

    .venv/bin/python -m bench.no_reply_draft [--turns 90] [--silent-share 0.44] [--reply-tokens 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from schemas import NO_REPLY
from training.data.chat_template import TurnRenderer
from training.model import load_image_processor
from training.streaming import StreamConfig, StreamingSession, StreamTurn, no_reply_draft_ids
from training.tiny import add_next_token_bias, build_tiny_model, build_tiny_tokenizer

SAMPLE_SILENT_SHARE = 23 / 52  # the sample corpus (samples/ built by build-corpus): 23 of 52 episode turns silent
REPLY_TEXT = ("A man in a dark suit and tie walks between parked cars while a cyclist in dark clothes "
              "rides past a waiting van near the railing.")
STEER = 30.0  # far above the random model's logit spread (~0.16 std): the biased choice always wins


def spoken_turns(n_turns: int, silent_share: float) -> set[int]:
    """Indices of the spoken turns, spread evenly so that about `1 - silent_share` of them speak."""
    speak = 1.0 - silent_share
    return {i for i in range(n_turns) if int((i + 1) * speak) > int(i * speak)}


def make_turns(n_turns: int, frame_size: int, seed: int = 0) -> list[StreamTurn]:
    rng = np.random.default_rng(seed)
    return [StreamTurn(time_s=4.0 * (i + 1),
                       frames=[rng.integers(0, 255, (frame_size, frame_size, 3), dtype=np.uint8) for _ in range(2)])
            for i in range(n_turns)]


def policy_biases(renderer: TurnRenderer, reply_tokens: int) -> tuple[dict, dict]:
    """Next-token biases of a silent turn and of a spoken one: after the generation prompt, `NO
    REPLY` or the reply (its distinct tokens, so each has one successor), then `<|im_end|>`."""
    prompt_end = renderer.user_turn_ids([1])[-1]
    draft = no_reply_draft_ids(renderer)
    taken = {prompt_end, *draft}
    reply = [t for t in dict.fromkeys(renderer.encode(REPLY_TEXT)) if t not in taken][:reply_tokens]
    if len(reply) < reply_tokens:
        raise SystemExit(f"the tiny tokenizer gives only {len(reply)} distinct reply tokens")

    def chain(tokens: list[int]) -> dict:
        return {a: {b: STEER} for a, b in zip([prompt_end, *tokens[:-1]], tokens, strict=True)}

    return chain(draft), chain([*reply, renderer.eos_id])


def run_lockstep(model, renderer, processor, turns, spoken, biases, config):
    """Per-turn latencies (drafted, plain) and whether each turn spoke; both loops' tokens must agree."""
    drafted = StreamingSession(model, renderer, processor, config)
    plain = StreamingSession(model, renderer, processor, config.model_copy(update={"draft_no_reply": False}))
    rows = []
    for i, turn in enumerate(turns):
        hook = add_next_token_bias(model, biases[i in spoken])
        try:
            a, b = drafted.step(turn), plain.step(turn)
        finally:
            hook.remove()
        assert a.token_ids == b.token_ids and (a.text == NO_REPLY) == (i not in spoken), (i, a.text, b.text)
        rows.append((a.latency_s, b.latency_s, i in spoken))
    assert drafted.ids == plain.ids
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.no_reply_draft", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=90)
    parser.add_argument("--frame-size", type=int, default=112, help="square frame side in pixels (112: 16 tokens)")
    parser.add_argument("--silent-share", type=float, default=SAMPLE_SILENT_SHARE)
    parser.add_argument("--reply-tokens", type=int, default=20, help="tokens of a spoken reply (the sample's ~15 words)")
    parser.add_argument("--repeats", type=int, default=2, help="episodes per loop; medians over them")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = build_tiny_tokenizer([REPLY_TEXT])
    model = build_tiny_model(tokenizer).eval()
    renderer = TurnRenderer(tokenizer)
    processor = load_image_processor("/nonexistent-so-defaults", args.frame_size**2)
    turns = make_turns(args.turns, args.frame_size)
    spoken = spoken_turns(args.turns, args.silent_share)
    biases = policy_biases(renderer, args.reply_tokens)
    config = StreamConfig()  # FACTS.md: at most 100 new tokens per turn; greedy
    run_lockstep(model, renderer, processor, turns[:3], spoken, biases, config)  # warm-up
    started = time.perf_counter()
    rows = [r for _ in range(args.repeats) for r in run_lockstep(model, renderer, processor, turns, spoken, biases,
                                                                 config)]
    wall_s = time.perf_counter() - started

    def median(kind: bool, arm: int) -> float:
        return statistics.median(r[arm] for r in rows if r[2] == kind)

    silent = {"with_ms": 1e3 * median(False, 0), "without_ms": 1e3 * median(False, 1)}
    speak = {"with_ms": 1e3 * median(True, 0), "without_ms": 1e3 * median(True, 1)}
    episode = {"with_s": sum(r[0] for r in rows) / args.repeats, "without_s": sum(r[1] for r in rows) / args.repeats}
    for d, a, b in ((silent, "with_ms", "without_ms"), (speak, "with_ms", "without_ms"), (episode, "with_s", "without_s")):
        d["ratio"] = d[a] / d[b]

    def projected(share: float) -> float:
        return ((share * silent["with_ms"] + (1 - share) * speak["with_ms"])
                / (share * silent["without_ms"] + (1 - share) * speak["without_ms"]))

    shares = [0.5, 0.75, 0.9]
    # Without the draft a silent turn is one forward over the new turn (image preprocessing and the
    # vision tower included) plus one decode forward per draft token after the first; a spoken turn
    # has `reply_tokens` of them. The draft removes only those decode forwards, so this is its best.
    saved = len(no_reply_draft_ids(renderer)) - 1
    step_ms = (speak["without_ms"] - silent["without_ms"]) / (args.reply_tokens - saved)
    first_ms = silent["without_ms"] - saved * step_ms
    print(f"tiny Qwen2.5-VL, CPU ({torch.get_num_threads()} threads), {args.turns} turns x 2 frames of "
          f"{args.frame_size}x{args.frame_size}: {args.turns - len(spoken)} silent, {len(spoken)} spoken "
          f"({args.reply_tokens}-token replies), {args.repeats} repeats; bench wall time {wall_s:.0f} s")
    print(f"{'':>22} {'with draft':>11} {'without':>9} {'ratio':>7}  goal")
    print(f"{'silent turn median ms':>22} {silent['with_ms']:>11.1f} {silent['without_ms']:>9.1f} {silent['ratio']:>7.2f}  <= 0.5")
    print(f"{'spoken turn median ms':>22} {speak['with_ms']:>11.1f} {speak['without_ms']:>9.1f} {speak['ratio']:>7.2f}  <= 1.05")
    print(f"{'episode s':>22} {episode['with_s']:>11.2f} {episode['without_s']:>9.2f} {episode['ratio']:>7.2f}  "
          f"(silent share {args.silent_share:.2f})")
    print(f"a silent turn without the draft: first forward {first_ms:.1f} ms + {saved} decode forwards of "
          f"{step_ms:.1f} ms; best ratio a one-forward silent turn can reach here: "
          f"{first_ms / silent['without_ms']:.2f}")
    print("episode ratio projected from the medians at silent share "
          + ", ".join(f"{s:.2f}: {projected(s):.2f}" for s in shares))
    print(json.dumps({"silent_turn": silent, "spoken_turn": speak, "episode": episode,
                      "silent_share": args.silent_share, "first_forward_ms": first_ms, "decode_step_ms": step_ms,
                      "decode_steps_saved": saved, "projected": {str(s): projected(s) for s in shares}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
