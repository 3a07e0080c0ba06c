"""The RL reward of one rollout (one whole episode): four terms, each its own function and log name.

    total = w_pauc * reward_pauc + w_repetition * reward_repetition
          + w_outspan * reward_outspan + w_prefix * reward_prefix

- reward_pauc: per reference answer whose window starts by the episode's last turn (a window
  starting exactly at the last turn's time counts, as in the public code), the step-area
  PAUC (training.rl.pauc) of its distinct in-window replies judged on 1..5 (mapped to 0..4); mean.
- reward_repetition: -(share of replies whose information is all in earlier replies); an exact
  duplicate is "yes" without asking the judge.
- reward_outspan: -(share of turns outside every window that are not `NO REPLY`).
- reward_prefix: -(share of replies sharing a >= 50-character prefix with an earlier reply).

`compute_rewards` plans the judge questions of a whole group of rollouts, asks them in one
`Judge.judge_batch` (one `complete_many` for the LLM judge), then assembles each breakdown.

Departures from the published reward code, on purpose:
- judge results are keyed by (window, turn), not by reply time, so two windows sharing a
  boundary no longer overwrite each other's scores;
- each reply's repetition verdict is counted once (the public code counts some twice);
- times are carried per turn by the caller (no re-derivation from the rollout text);
- the first reply of an episode with no earlier replies is "not a repetition" without a judge call;
- reward_prefix averages over replies (as FACTS.md states), not over all turns incl. `NO REPLY`;
- a judge answer that cannot be parsed is dropped like a failed call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from training.rl.judge import Judge, RepetitionItem, ScoreItem
from training.rl.pauc import window_pauc

NO_REPLY = "NO REPLY"  # schemas.NO_REPLY; repeated so this module needs no pydantic records


class RewardConfig(BaseModel):
    # FACTS.md "Published run: 3, 2, 0.5, 2" (the public code's defaults are the preset below).
    w_pauc: float = 3.0
    w_repetition: float = 2.0
    w_outspan: float = 0.5
    w_prefix: float = 2.0
    # MMDuet2 reward: floor time weight w in x = (t - s) * (1 - w).
    floor_time_weight: float = Field(0.5, ge=0.0, le=1.0)
    # MMDuet2 reward: the step curve starts at 0.5 before the first judged reply.
    start_score: float = 0.5
    # MMDuet2 reward: judge scale 5 (scores 1..5 mapped to 0..4); a 3-point scale exists.
    judge_scale: Literal[3, 5] = 5
    # MMDuet2 reward: a shared prefix of >= 50 characters counts as a common prefix.
    common_prefix_chars: int = Field(50, gt=0)
    # MMDuet2 reward: repetition is judged against earlier replies in all windows by default.
    repetition_scope: Literal["all_windows", "same_window"] = "all_windows"
    # Public option (off by default): the judge sees all distinct in-window replies so far.
    pauc_judge_sees_previous: bool = False


REWARD_PRESETS: dict[str, RewardConfig] = {
    "published_run": RewardConfig(),
    # The public reward code's defaults (FACTS.md "Code defaults: 3, 3, 2, 0").
    "code_defaults": RewardConfig(w_pauc=3.0, w_repetition=3.0, w_outspan=2.0, w_prefix=0.0),
}


@dataclass(frozen=True)
class Turn:
    time_s: float
    text: str

    @property
    def is_reply(self) -> bool:
        return self.text.strip() != NO_REPLY


@dataclass(frozen=True)
class Rollout:
    """One generated episode: the assistant's turn texts with their turn times, in order.

    `context_replies` are the reference replies shown in the prompt before the stretch (published
    RL prompts carry the dialogue so far as context); repetition and prefix look at them too.
    """

    turns: tuple[Turn, ...]
    context_replies: tuple[str, ...] = ()


class Reference(Protocol):
    """What the reward reads of a reference answer (schemas.ReferenceAnswer fits)."""

    question: str
    answer: str
    reply_span: tuple[float, float]


@dataclass
class RewardBreakdown:
    reward_pauc: float
    reward_repetition: float
    reward_outspan: float
    reward_prefix: float
    total: float
    window_pauc: list[float] = field(default_factory=list)
    n_windows: int = 0
    n_replies: int = 0
    n_judge_failures: int = 0

    def as_log(self) -> dict[str, float]:
        return {"reward_pauc": self.reward_pauc, "reward_repetition": self.reward_repetition,
                "reward_outspan": self.reward_outspan, "reward_prefix": self.reward_prefix,
                "reward_total": self.total, "judge_failures": float(self.n_judge_failures)}


# ---------------------------------------------------------------- the four terms

def reward_pauc(
    window_scores: Sequence[Sequence[tuple[float, int | None]]],
    spans_s: Sequence[tuple[float, float]],
    cfg: RewardConfig,
) -> tuple[float, list[float]]:
    """Mean PAUC over windows; each window's (turn time, raw 1..scale score or None) in time order."""
    per_window = []
    for scores, span in zip(window_scores, spans_s, strict=True):
        points = [(t, s - 1) for t, s in scores if s is not None]  # failed calls are dropped
        per_window.append(window_pauc(points, span, cfg.judge_scale - 1, cfg.start_score,
                                      cfg.floor_time_weight))
    return (sum(per_window) / len(per_window) if per_window else 0.0), per_window


def reward_repetition(verdicts: Sequence[bool | None]) -> float:
    known = [v for v in verdicts if v is not None]
    return -(sum(known) / len(known)) if known else 0.0


def in_any_window(time_s: float, spans_s: Sequence[tuple[float, float]]) -> bool:
    return any(s <= time_s <= e for s, e in spans_s)


def reward_outspan(turns: Sequence[Turn], spans_s: Sequence[tuple[float, float]]) -> float:
    outside = [t for t in turns if not in_any_window(t.time_s, spans_s)]
    return -(sum(t.is_reply for t in outside) / len(outside)) if outside else 0.0


def reward_prefix(rollout: Rollout, cfg: RewardConfig) -> float:
    earlier = [c.strip() for c in rollout.context_replies]
    hits: list[int] = []
    for turn in rollout.turns:
        if not turn.is_reply:
            continue
        text = turn.text.strip()
        hits.append(int(any(len(os.path.commonprefix([p, text])) >= cfg.common_prefix_chars for p in earlier)))
        earlier.append(text)
    return -(sum(hits) / len(hits)) if hits else 0.0


# ---------------------------------------------------------------- planning the judge questions

@dataclass
class _Plan:
    spans_s: list[tuple[float, float]]  # counted windows only
    window_turns: list[list[int]]  # per counted window: turn indices to score, in time order
    score_items: list[ScoreItem]
    repetition_fixed: dict[int, bool]  # turn index -> verdict decided without a judge call
    repetition_items: list[tuple[int, RepetitionItem]]


def plan_rollout(rollout: Rollout, references: Sequence[Reference], cfg: RewardConfig) -> _Plan:
    turns = rollout.turns
    last_s = max((t.time_s for t in turns), default=float("-inf"))
    # Windows that start after the last turn were cut off (the stretch ends first): not counted.
    counted = [r for r in references if r.reply_span[0] <= last_s]
    plan = _Plan([tuple(r.reply_span) for r in counted], [], [], {}, [])
    for ref in counted:
        start_s, end_s = ref.reply_span
        if not end_s > start_s:
            raise ValueError(f"zero-length reference window {ref.reply_span!r}")
        distinct: list[str] = []
        chosen: list[int] = []
        for i, turn in enumerate(turns):
            text = turn.text.strip()
            if not (start_s <= turn.time_s <= end_s) or not turn.is_reply or text in distinct:
                continue
            distinct.append(text)
            chosen.append(i)
            shown = " ".join(distinct) if cfg.pauc_judge_sees_previous else text
            plan.score_items.append(ScoreItem(ref.question, ref.answer, shown, cfg.judge_scale))
        plan.window_turns.append(chosen)

    for i, turn in enumerate(turns):
        if not turn.is_reply:
            continue
        text = turn.text.strip()
        if cfg.repetition_scope == "all_windows":
            earlier = [c.strip() for c in rollout.context_replies]
            earlier += [t.text.strip() for t in turns[:i] if t.is_reply]
        else:
            spans = [s for s in plan.spans_s if s[0] <= turn.time_s <= s[1]]
            if not spans:
                continue  # same-window scope judges in-window replies only
            earlier = [t.text.strip() for t in turns[:i] if t.is_reply and in_any_window(t.time_s, spans)]
        distinct_earlier = tuple(dict.fromkeys(earlier))
        if text in distinct_earlier:
            plan.repetition_fixed[i] = True  # an exact duplicate is a repetition
        elif not distinct_earlier:
            plan.repetition_fixed[i] = False
        else:
            plan.repetition_items.append((i, RepetitionItem(distinct_earlier, text)))
    return plan


def _weighted_total(pauc: float, rep: float, out: float, prefix: float, cfg: RewardConfig) -> float:
    return cfg.w_pauc * pauc + cfg.w_repetition * rep + cfg.w_outspan * out + cfg.w_prefix * prefix


def as_rollout(rollout: Rollout | Sequence[tuple[float, str]] | Sequence[Turn]) -> Rollout:
    if isinstance(rollout, Rollout):
        return rollout
    return Rollout(tuple(t if isinstance(t, Turn) else Turn(float(t[0]), str(t[1])) for t in rollout))


def compute_rewards(
    rollouts: Sequence[Rollout | Sequence[tuple[float, str]]],
    references: Sequence[Sequence[Reference]],
    judge: Judge,
    cfg: RewardConfig | None = None,
) -> list[RewardBreakdown]:
    """Rewards of a group of rollouts; `references[k]` are rollout k's reference answers."""
    cfg = cfg or RewardConfig()
    if len(rollouts) != len(references):
        raise ValueError(f"{len(rollouts)} rollouts but {len(references)} reference lists")
    episodes = [as_rollout(r) for r in rollouts]
    plans = [plan_rollout(r, refs, cfg) for r, refs in zip(episodes, references, strict=True)]
    # Skip the judge entirely for a term whose weight is 0 (as the public code does).
    score_items = [it for p in plans for it in p.score_items] if cfg.w_pauc else []
    rep_items = [it for p in plans for _, it in p.repetition_items] if cfg.w_repetition else []
    scores, verdicts = judge.judge_batch(score_items, rep_items)
    if len(scores) != len(score_items) or len(verdicts) != len(rep_items):
        raise RuntimeError("judge returned a different number of answers than questions")

    results, s_at, v_at = [], 0, 0
    for rollout, plan in zip(episodes, plans, strict=True):
        failures = 0
        window_scores: list[list[tuple[float, int | None]]] = []
        for chosen in plan.window_turns:
            got = scores[s_at:s_at + len(chosen)] if cfg.w_pauc else [None] * len(chosen)
            s_at += len(chosen) if cfg.w_pauc else 0
            failures += sum(g is None for g in got) if cfg.w_pauc else 0
            window_scores.append([(rollout.turns[i].time_s, g) for i, g in zip(chosen, got, strict=True)])
        by_turn: dict[int, bool | None] = dict(plan.repetition_fixed)
        if cfg.w_repetition:
            for (i, _), verdict in zip(plan.repetition_items, verdicts[v_at:v_at + len(plan.repetition_items)],
                                       strict=True):
                by_turn[i] = verdict
                failures += verdict is None
            v_at += len(plan.repetition_items)
        pauc, per_window = reward_pauc(window_scores, plan.spans_s, cfg)
        rep = reward_repetition([by_turn[i] for i in sorted(by_turn)]) if cfg.w_repetition else 0.0
        all_spans = plan.spans_s  # uncounted windows hold no turn, so they change nothing here
        out = reward_outspan(rollout.turns, all_spans)
        prefix = reward_prefix(rollout, cfg)
        results.append(RewardBreakdown(
            reward_pauc=pauc, reward_repetition=rep, reward_outspan=out, reward_prefix=prefix,
            total=_weighted_total(pauc, rep, out, prefix, cfg), window_pauc=per_window,
            n_windows=len(plan.spans_s), n_replies=sum(t.is_reply for t in rollout.turns),
            n_judge_failures=failures,
        ))
    return results
