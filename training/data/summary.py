"""The trainer's data summary: what the episode rule made of a split's dialogues.

Counts the turns, the `NO REPLY` share of targets at this run's frame interval, and every reference
answer that did not simply take its own turn (moved, merged, superseded, dropped, late; see
`training.data.episodes.place_answers`). Built from the timeline alone: no frame is decoded.

Given the tokenizer's count of a reply's labelled tokens, it also says what the `NO REPLY` loss
weight does (`template.no_reply_loss_weight`, training.data.chat_template): the share of labelled
tokens on silent turns, and the share of the loss weight they carry unweighted and at the run's
weight (before left truncation, which drops whole turns of over-long episodes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from schemas import Dialogue
from training.data.episodes import Episode, EpisodeConfig, build_episode


def episode_summary(dialogues: list[Dialogue], config: EpisodeConfig, frame_timeline,
                    label_tokens: Callable[[str], int] | None = None, no_reply_loss_weight: float = 1.0,
                    released: Sequence[Episode] = ()) -> dict:
    """Totals over the corpus dialogues' episodes and `released` ones (read from a released file,
    already built: `sft data=`), whose answers are their reply turns (the file lists no others)."""
    totals = {"episodes": 0, "turns": 0, "reply_turns": 0, "answers": 0, "answers_moved": 0,
              "answers_merged": 0, "answers_superseded": 0, "answers_dropped": 0, "answers_late": 0}
    tokens = {True: 0, False: 0}  # labelled tokens of silent / reply turns
    built = [(build_episode(d, "", config, frame_timeline), len(d.references)) for d in dialogues]
    for episode, answers in built + [(e, sum(not t.is_silent for t in e.turns)) for e in released]:
        totals["episodes"] += 1
        totals["turns"] += len(episode.turns)
        totals["reply_turns"] += sum(not t.is_silent for t in episode.turns)
        totals["answers"] += answers
        totals["answers_moved"] += episode.moved_answers
        totals["answers_merged"] += episode.merged_answers
        totals["answers_superseded"] += episode.superseded_answers
        totals["answers_dropped"] += episode.dropped_answers
        totals["answers_late"] += episode.late_answers
        if label_tokens is not None:
            for turn in episode.turns:
                tokens[turn.is_silent] += label_tokens(turn.reply)
    share = 1.0 - totals["reply_turns"] / totals["turns"] if totals["turns"] else 0.0
    summary = {"seconds_per_frame": config.seconds_per_frame, "frame_cap": config.frame_cap, **totals,
               "no_reply_share": round(share, 4)}
    if label_tokens is not None:
        summary |= loss_weight_shares(tokens[True], tokens[False], no_reply_loss_weight)
    return summary


def loss_weight_shares(no_reply_tokens: int, reply_tokens: int, no_reply_loss_weight: float) -> dict:
    """The share of the loss weight on `NO REPLY` tokens, unweighted (weight 1, the published
    setting) and at `no_reply_loss_weight` (each token's loss is weighted, then divided by the sum
    of weights: training.sft.weighted_token_loss)."""
    def weighted(weight: float) -> float:
        total = weight * no_reply_tokens + reply_tokens
        return round(weight * no_reply_tokens / total, 4) if total else 0.0

    return {"no_reply_label_tokens": no_reply_tokens, "reply_label_tokens": reply_tokens,
            "no_reply_loss_weight": no_reply_loss_weight, "no_reply_loss_share_unweighted": weighted(1.0),
            "no_reply_loss_share": weighted(no_reply_loss_weight)}
