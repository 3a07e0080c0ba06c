"""The pure pieces of GRPO: group advantages, the clipped token-level loss, the k3 KL, the guard.

- Advantage (FACTS.md "advantage = (reward - group mean) / group std"): per group of rollouts of
  one episode, (r - mean) / (std + eps); a group whose rewards are all equal gets 0 everywhere
  (it carries no preference, and dividing by a zero std would blow it up).
- Policy loss (FACTS.md "PPO-style clipped ratio 0.2 with token-mean loss"): per assistant token,
  -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A), averaged over the assistant tokens of the
  whole optimizer step. The caller passes that token count (`n_tokens`), so gradient accumulation
  over micro-batches gives exactly the token mean of the step, not a mean of micro-batch means.
- KL (FACTS.md "coef 0.005 low-var-KL when on"): Schulman's k3 estimator
  exp(ref - logp) - (ref - logp) - 1, which is >= 0 and unbiased for KL(pi || ref).
- Rollout checks: a sampled vision/template token, and the reply statistics the guard reads.
- Reward-hacking guard (FACTS.md: the paper saw repetitive, long replies on egocentric data and
  stopped early): thresholds on the repetition term and the mean reply length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # imported by the functions that use it: GuardConfig is read before torch loads
    import torch


def group_advantages(rewards: Sequence[float], group_size: int, eps: float = 1e-6) -> list[float]:
    """(r - group mean) / (group std + eps) for consecutive groups of `group_size` rollouts."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    import torch

    r = torch.tensor(list(rewards), dtype=torch.float64).view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    # Sample std (unbiased), as the published GRPO code computes it; a group of one has none.
    std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    adv = (r - mean) / (std + eps)
    adv[(r == r[:, :1]).all(dim=1)] = 0.0  # equal rewards: no preference, not 0/eps noise
    return adv.view(-1).tolist()


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Low-variance KL estimator per token: exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    delta = (ref_logp - logp).clamp(-20.0, 20.0)  # as verl: keep exp() finite on outliers
    return delta.exp() - delta - 1.0


@dataclass
class LossParts:
    loss: torch.Tensor  # what to backpropagate (already divided by the step's token count)
    policy: float  # the sums below are over this micro-batch's tokens, divided by n_tokens
    kl: float
    clipped_tokens: int
    tokens: int


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    n_tokens: int,
    clip_ratio: float = 0.2,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> LossParts:
    """Clipped surrogate over masked tokens; `advantages` is one value per row (per rollout).

    logp, old_logp, ref_logp, mask: (batch, tokens); the loss is a SUM over this
    micro-batch's masked tokens divided by `n_tokens`, the masked-token count of the whole step.
    """
    import torch

    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).view(-1, 1)
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip_ratio, 1 + clip_ratio) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl_sum = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if ref_logp is not None and kl_coef:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + kl_coef * kl
        kl_sum = (kl * mask).sum()
    denom = float(max(n_tokens, 1))
    loss = (per_token * mask).sum() / denom
    was_clipped = (clipped < unclipped) & (mask > 0)  # min picked the clipped side
    policy = (-torch.minimum(unclipped, clipped) * mask).sum().detach()
    return LossParts(loss=loss, policy=float(policy) / denom, kl=float(kl_sum.detach()) / denom,
                     clipped_tokens=int(was_clipped.sum()), tokens=int(mask.sum()))


class GuardConfig(BaseModel):
    """Thresholds against reward hacking; None switches a check off. Not published: the paper
    stopped its run by hand when replies turned long and repetitive."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["off", "alert", "stop"] = "alert"
    # reward_repetition is -(share of repetitive replies): at or below this, the guard trips.
    min_reward_repetition: float | None = Field(-0.5, le=0)
    # mean characters per reply (NO REPLY turns excluded): above this, the guard trips.
    max_mean_reply_chars: float | None = Field(400.0, gt=0)


@dataclass
class GuardVerdict:
    tripped: bool
    reasons: list[str]


def check_reward_hacking(mean_reward_repetition: float, mean_reply_chars: float,
                         cfg: GuardConfig) -> GuardVerdict:
    """Did this step's rollouts cross a threshold? The caller alerts or stops by `cfg.action`."""
    reasons = []
    if cfg.action == "off":
        return GuardVerdict(False, reasons)
    if cfg.min_reward_repetition is not None and mean_reward_repetition <= cfg.min_reward_repetition:
        reasons.append(f"reward_repetition {mean_reward_repetition:.3f} <= {cfg.min_reward_repetition}")
    if cfg.max_mean_reply_chars is not None and mean_reply_chars > cfg.max_mean_reply_chars:
        reasons.append(f"mean reply length {mean_reply_chars:.1f} chars > {cfg.max_mean_reply_chars}")
    return GuardVerdict(bool(reasons), reasons)


def sampled_forbidden(rollout, forbidden_ids: set[int]) -> bool:
    """Did the policy sample a vision/template special token? Such a sequence cannot be re-encoded
    (an `<|image_pad|>` without an image), so its group is dropped and counted."""
    sampled = rollout.input_ids[rollout.assistant_mask.bool()].tolist()
    return any(t in forbidden_ids for t in sampled)


def reply_stats(rollouts: Sequence) -> dict[str, float]:
    replies = [t.text for r in rollouts for t in r.turns if t.is_reply]
    n_turns = sum(len(r.turns) for r in rollouts)
    return {"mean_reply_chars": sum(map(len, replies)) / len(replies) if replies else 0.0,
            "reply_rate": len(replies) / n_turns if n_turns else 0.0}
