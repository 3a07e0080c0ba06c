"""Per-turn latency of the streaming loop with `NO REPLY` verified as a draft in the turn's own
forward (`training.streaming`, the default) against decoding it token by token, in one run.

The tiny Qwen2.5-VL preset on CPU streams one 90-turn episode (2 frames per turn) with both loops in
lockstep (one turn of each in turn, so load changes on a shared machine hit both alike), and the
run fails unless both produce the same tokens. The random tiny model never says `NO REPLY`, so a
next-token bias (`training.tiny.add_next_token_bias`, the same in both loops) makes it speak like a
trained policy: `NO REPLY` on silent turns, a fixed reply of `--reply-tokens` tokens on spoken
ones. Spoken turns are spread evenly at the silent share of the sample corpus (23 of its 52 turns
are silent; `--silent-share` to change it).

Five arms in lockstep: the draft (the default: a turn's frames enter the cache in their own
forward, then the decision forward holds the turn's text, closing tokens and the draft), plain
decoding (the same ingest, `NO REPLY` decoded token by token), the draft with the frames in the
decision forward (one model call per silent turn), and the draft and plain decoding on stock sdpa
(`cached_chunk_attention` off, on a second copy of the model) to show what the chunk attention
path (`training.cached_chunk_attention`) adds. Reported, each the ratio with / without the
draft: median silent-turn decision latency (goal <= 0.5), median spoken-turn decision latency (goal
<= 1.05: the draft must not slow replies), each also as the median of per-turn ratios (the two arms
of a turn run back to back, so that one is steadier on a shared machine), the same two with the
frames' ingest time added, and the episode's summed decision latency and whole-turn time at the
silent share, plus that sum projected at other shares from the per-turn medians.

    .venv/bin/python -m bench.no_reply_draft [--turns 90] [--silent-share 0.44] [--reply-tokens 20] [--repeats 2]
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from schemas import NO_REPLY
from schemas.cli import ArgumentParser
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


ARMS = (  # (config changes, model): 0 the draft (default), 1 plain decoding, 2 frames in the decision
    ({}, 0), ({"draft_no_reply": False}, 0), ({"ingest_frames_first": False}, 0),
    # 3, 4: the draft and plain decoding on stock sdpa (a second copy of the model, same weights)
    ({"cached_chunk_attention": False}, 1), ({"cached_chunk_attention": False, "draft_no_reply": False}, 1))


def run_lockstep(models, renderer, processor, turns, spoken, biases, config):
    """Per turn: (decision latency, ingest time) of each arm in ARMS and whether it spoke. Every
    arm's tokens must agree."""
    arms = [StreamingSession(models[m], renderer, processor, config.model_copy(update=u)) for u, m in ARMS]
    rows = []
    for i, turn in enumerate(turns):
        hooks = [add_next_token_bias(model, biases[i in spoken]) for model in models]
        try:  # the arms take turns going first, so a cost of running first or last hits each alike
            first = i % len(arms)
            order = [*range(first, len(arms)), *range(first)]
            stepped = {k: arms[k].step(turn) for k in order}
            replies = [stepped[k] for k in range(len(arms))]
        finally:
            for hook in hooks:
                hook.remove()
        assert all(r.token_ids == replies[0].token_ids for r in replies), (i, [r.text for r in replies])
        assert (replies[0].text == NO_REPLY) == (i not in spoken), (i, replies[0].text)
        rows.append(([(r.latency_s, r.ingest_s) for r in replies], i in spoken))
    assert all(arm.ids == arms[0].ids for arm in arms)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.no_reply_draft", description=__doc__.splitlines()[0])
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
    models = [build_tiny_model(tokenizer).eval() for _ in range(2)]  # same seed, same weights
    renderer = TurnRenderer(tokenizer)
    processor = load_image_processor("/nonexistent-so-defaults", args.frame_size**2)
    turns = make_turns(args.turns, args.frame_size)
    spoken = spoken_turns(args.turns, args.silent_share)
    biases = policy_biases(renderer, args.reply_tokens)
    config = StreamConfig()  # FACTS.md: at most 100 new tokens per turn; greedy
    run_lockstep(models, renderer, processor, turns[:3], spoken, biases, config)  # warm-up
    started = time.perf_counter()
    rows = [r for _ in range(args.repeats) for r in run_lockstep(models, renderer, processor, turns, spoken, biases,
                                                                 config)]
    wall_s = time.perf_counter() - started

    def median(kind: bool, arm: int, whole: bool = False) -> float:
        return statistics.median(r[0][arm][0] + whole * r[0][arm][1] for r in rows if r[1] == kind)

    def compare(kind: bool, whole: bool = False, arm: int = 0, base: int = 1) -> dict:
        """Ratio of the medians, and the median of per-turn ratios (each turn's two arms ran back to
        back at the same cache length, so a slow spell or a longer cache cancels out of it)."""
        a, b = 1e3 * median(kind, arm, whole), 1e3 * median(kind, base, whole)
        paired = statistics.median((r[0][arm][0] + whole * r[0][arm][1]) / (r[0][base][0] + whole * r[0][base][1])
                                   for r in rows if r[1] == kind)
        return {"with_ms": a, "without_ms": b, "ratio": a / b, "paired_ratio": paired}

    silent, speak = compare(False), compare(True)
    silent_turn, speak_turn = compare(False, True), compare(True, True)
    one_forward = compare(False, True, arm=2)  # the draft, frames in the decision forward
    stock_silent, stock_speak = compare(False, arm=3, base=4), compare(True, arm=3, base=4)
    stock_plain = compare(False, arm=1, base=4)  # plain decoding, chunk attention / stock sdpa

    def episode(arm: int, whole: bool) -> float:
        return sum(r[0][arm][0] + whole * r[0][arm][1] for r in rows) / args.repeats

    decisions = {"with_s": episode(0, False), "without_s": episode(1, False)}
    turns_s = {"with_s": episode(0, True), "without_s": episode(1, True), "one_forward_s": episode(2, True)}
    for d in (decisions, turns_s):
        d["ratio"] = d["with_s"] / d["without_s"]

    def projected(share: float) -> float:
        return ((share * silent["with_ms"] + (1 - share) * speak["with_ms"])
                / (share * silent["without_ms"] + (1 - share) * speak["without_ms"]))

    shares = [0.5, 0.75, 0.9]
    saved = len(no_reply_draft_ids(renderer)) - 1
    print(f"tiny Qwen2.5-VL, CPU ({torch.get_num_threads()} threads), {args.turns} turns x 2 frames of "
          f"{args.frame_size}x{args.frame_size}: {args.turns - len(spoken)} silent, {len(spoken)} spoken "
          f"({args.reply_tokens}-token replies), {args.repeats} repeats; bench wall time {wall_s:.0f} s")
    print(f"decision latency: from the turn's close (its frames already in the cache) to its last token; "
          f"the {len(ARMS)} arms gave the same tokens on every turn (checked)")
    print(f"{'':>30} {'with draft':>11} {'without':>9} {'ratio':>7} {'paired':>7}  goal")
    for name, d, goal in (("silent turn decision ms", silent, "<= 0.5"), ("spoken turn decision ms", speak, "<= 1.05"),
                          ("silent turn + ingest ms", silent_turn, ""), ("spoken turn + ingest ms", speak_turn, "")):
        print(f"{name:>30} {d['with_ms']:>11.1f} {d['without_ms']:>9.1f} {d['ratio']:>7.2f} {d['paired_ratio']:>7.2f}"
              f"  {goal}")
    print(f"{'episode decisions s':>30} {decisions['with_s']:>11.2f} {decisions['without_s']:>9.2f} "
          f"{decisions['ratio']:>7.2f}  (silent share {args.silent_share:.2f}"
          f"{', quoted: the sample corpus, 23 of 52 turns' if args.silent_share == SAMPLE_SILENT_SHARE else ''})")
    print(f"{'episode turns + ingest s':>30} {turns_s['with_s']:>11.2f} {turns_s['without_s']:>9.2f} "
          f"{turns_s['ratio']:>7.2f}")
    print(f"the draft with the frames in the decision forward (one call per silent turn): silent turn "
          f"{one_forward['with_ms']:.1f} ms ({one_forward['ratio']:.2f} of plain's turn + ingest), episode "
          f"{turns_s['one_forward_s']:.2f} s; the draft saves {saved} decode forwards per silent turn")
    print(f"on stock sdpa (no chunk attention): silent decision {stock_silent['with_ms']:.1f} / "
          f"{stock_silent['without_ms']:.1f} ms = {stock_silent['ratio']:.2f}, spoken {stock_speak['ratio']:.2f}; "
          f"plain decoding's silent decision with chunk attention / stock {stock_plain['ratio']:.2f}")
    print("episode decision ratio projected from the medians at silent share "
          + ", ".join(f"{s:.2f}: {projected(s):.2f}" for s in shares))
    print(json.dumps({"silent_turn": silent, "spoken_turn": speak, "silent_turn_with_ingest": silent_turn,
                      "spoken_turn_with_ingest": speak_turn, "silent_turn_one_forward": one_forward,
                      "stock_sdpa": {"silent_turn": stock_silent, "spoken_turn": stock_speak,
                                     "plain_silent_chunk_over_stock": stock_plain},
                      "episode_decisions": decisions, "episode_turns": turns_s, "silent_share": args.silent_share,
                      "decode_steps_saved": saved, "projected": {str(s): projected(s) for s in shares}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
