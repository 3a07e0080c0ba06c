"""One GRPO step, in the order it runs: rollouts of a batch of prompts, their rewards and group
advantages, the policy's recomputed log-probs (and their drift from the sampler's), one update epoch,
and the step's record over every process. Also the greedy validation pass."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from curation.skips import Skip
from training.rl.drift import Drift, drift_message
from training.rl.grpo_config import GRPOConfig
from training.rl.grpo_data import Processing, prepare_item
from training.rl.grpo_loss import (
    check_reward_hacking,
    clipped_policy_loss,
    group_advantages,
    reply_stats,
    sampled_forbidden,
)
from training.rl.reward import Rollout as RewardRollout
from training.rl.reward import Turn
from training.rl.rollout import RolloutConfig, collate_rollouts, token_logprobs, token_logprobs_at

# reward_fn(rollouts as the reward reads them, references of each) -> {term name: value} per rollout,
# "reward_total" included (TRL style: a plain callable; tests pass judge-free rewards).
RewardFn = Callable[[list[RewardRollout], list[Sequence]], list[dict[str, float]]]


@dataclass
class Trainee:
    """What a step trains and samples with."""

    accelerator: object
    model: object
    optimizer: object
    ref_model: object | None  # the frozen reference when the KL term is on
    sampler: object  # training.rl.samplers: HF or a vLLM engine that follows the policy
    processing: Processing


def reward_rollout(rollout, earlier: tuple[str, ...] | None = None) -> RewardRollout:
    """A streamed rollout as the reward reads it: generated turns with their times; the replies of
    the dialogue before the prompt (a stretch's context; by default the turns fed with their
    reference replies) count as earlier replies for repetition and prefix."""
    if earlier is None:
        earlier = tuple(t.text for t in rollout.turns if t.forced)
    return RewardRollout(tuple(Turn(t, x) for t, x in rollout.replies()), earlier)


def counter(counts: dict[str, int]) -> Callable[[str], None]:
    """`count_skip` for `collect_rollouts`: one more of a reason in `counts`."""
    def count(reason: str) -> None:
        counts[reason] = counts.get(reason, 0) + 1
    return count


def collect_rollouts(cfg: GRPOConfig, sample, processing: Processing, items, indices: list[int], step: int,
                     count_skip, greedy: bool = False,
                     on_episode: Callable[[int, int], None] = lambda done, total: None) -> tuple[list, list, list]:
    """A group of rollouts per RL prompt from `sample(episode, rollout config, frames)` (seeded by
    step and item, so a resumed run samples what an uninterrupted one would): the rollouts, the
    reward's view of each (the prompt's context replies as earlier replies) and the references each
    is scored on. `greedy`: one rollout per prompt at temperature 0 (validation)."""
    rollouts, judged, references = [], [], []
    for number, index in enumerate(indices):
        on_episode(number, len(indices))
        prepared = prepare_item(cfg, processing.bits, items[index])
        if isinstance(prepared, Skip):
            count_skip(prepared.reason)
            continue
        episode, frames, context_turns, scored, earlier = prepared
        rcfg = RolloutConfig(n=1 if greedy else cfg.rollouts_per_episode,
                             temperature=0.0 if greedy else cfg.temperature, top_k=cfg.top_k,
                             max_new_tokens_per_turn=cfg.max_new_tokens_per_turn, context_turns=context_turns,
                             seed=cfg.seed * 1_000_003 + step * 1_009 + index, draft_no_reply=cfg.draft_no_reply)
        group = sample(episode, rcfg, frames)
        if isinstance(group, Skip):
            count_skip(group.reason)
        elif any(sampled_forbidden(r, processing.forbidden) for r in group):
            count_skip("sampled_special_token")
        else:
            rollouts += group
            judged += [reward_rollout(r, earlier) for r in group]
            references += [scored] * len(group)
    return rollouts, judged, references


def validate(cfg: GRPOConfig, trainee: Trainee, items, reward_fn: RewardFn) -> dict[str, float]:
    """Greedy rollouts of the validation prompts (each process every `world`-th), mean reward terms."""
    accelerator = trainee.accelerator
    world, rank = accelerator.num_processes, accelerator.process_index
    skipped: dict[str, int] = {}
    with trainee.sampler.session() as sample:
        _, judged, references = collect_rollouts(cfg, sample, trainee.processing, items,
                                                 list(range(rank, len(items), world)), 0, counter(skipped), greedy=True)
    from accelerate.utils import gather_object

    terms = reward_fn(judged, references) if judged else []
    terms = gather_object(terms) if world > 1 else terms
    out = {"prompts": float(len(terms)), "skipped": float(sum(skipped.values()))}
    for key in sorted({k for t in terms for k in t}):
        out[key] = sum(t[key] for t in terms) / len(terms)
    return out


def old_logprobs(cfg: GRPOConfig, trainee: Trainee, batches: list[dict]) -> tuple[list, list | None, Drift]:
    """The policy's log-probs of the sampled tokens before the update (the ratio's denominator, at
    the sampling temperature), the reference's (KL on), and their drift from the sampler's own (at
    temperature 1, as samplers record them), from the same forward. In eval mode: the policy that
    sampled had no dropout (LoRA's would otherwise show up as drift, ~0.02 mean at dropout 0.05)."""
    trainee.model.eval()
    drift = Drift()
    old = []
    with torch.no_grad():
        for batch in batches:
            at_one, at_t = token_logprobs_at(trainee.model, batch, (1.0, cfg.temperature))
            drift.add(batch["old_logprobs"], at_one, batch["assistant_mask"])
            old.append(at_t)
        ref = [token_logprobs(trainee.ref_model, b, cfg.temperature) for b in batches] if trainee.ref_model else None
    trainee.model.train()
    return old, ref, drift.reduced(trainee.accelerator)


def update_epoch(cfg: GRPOConfig, trainee: Trainee, batches: list[dict], micro: list[list[int]], old: list,
                 ref: list | None, advantages: list[float]) -> dict[str, float]:
    """One update epoch over the step's micro-batches: `updates_per_step` optimizer updates, each a
    token mean over all its micro-batches and processes."""
    accelerator, model, optimizer = trainee.accelerator, trainee.model, trainee.optimizer
    logged = {"policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    per_update = max(1, math.ceil(len(micro) / cfg.updates_per_step))
    for start in range(0, max(len(micro), 1), per_update):
        chunk = range(start, min(start + per_update, len(micro)))
        local = sum(int(batches[j]["assistant_mask"].sum()) for j in chunk)
        n_tokens = max(1, int(accelerator.reduce(torch.tensor(local, device=accelerator.device), "sum")))
        for j in chunk:
            logp = token_logprobs(model, batches[j], cfg.temperature)
            adv = torch.tensor([advantages[i] for i in micro[j]], device=logp.device)
            mask = batches[j]["assistant_mask"].to(logp.device)
            parts = clipped_policy_loss(logp, old[j], adv, mask, n_tokens, cfg.clip_ratio,
                                        ref[j] if ref else None, cfg.kl_coef)
            accelerator.backward(parts.loss * accelerator.num_processes)  # DDP/FSDP average over processes
            logged["policy_loss"] += parts.policy
            logged["kl"] += parts.kl
            logged["clip_fraction"] += parts.clipped_tokens / n_tokens
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return logged


def gather_step(accelerator, judged: list[RewardRollout], terms: list[dict[str, float]],
                logged: dict[str, float]) -> tuple[list, list, dict[str, float]]:
    """Every process's rollouts and reward terms of a step, and its loss parts summed (each is a
    share of the step's token mean over all processes): the record and the guard see the whole
    batch, so every rank takes the same stop decision."""
    if accelerator.num_processes == 1:
        return judged, terms, logged
    from accelerate.utils import gather_object

    parts = accelerator.reduce(torch.tensor([logged[k] for k in sorted(logged)], dtype=torch.float64,
                                            device=accelerator.device), "sum")
    return gather_object(judged), gather_object(terms), dict(zip(sorted(logged), parts.tolist(), strict=True))


def step_record(step: int, judged: list[RewardRollout], terms: list[dict[str, float]],
                logged: dict[str, float]) -> dict[str, float]:
    """What one step logs: losses, log-prob drift, reply statistics and the mean of each reward term
    by its name (`judged` holds one entry per rollout)."""
    record = {"step": step, "rollouts": len(judged), **logged, **reply_stats(judged)}
    for key in sorted({k for t in terms for k in t}):
        record[key] = sum(t[key] for t in terms) / len(terms)
    return record


def grpo_step(cfg: GRPOConfig, trainee: Trainee, reward_fn: RewardFn, items, indices: list[int], step: int,
              count_skip, phase: Callable[[str], None]) -> tuple[dict | None, str | None]:
    """Step `step + 1` on this process's prompts `indices`: its record (None when the drift guard
    stopped it before the update) and the drift guard's message, if it tripped. The record's
    `rollout_s` and `step_s` are this process's seconds."""
    started = time.perf_counter()
    with trainee.sampler.session() as sample:
        rollouts, judged, references = collect_rollouts(
            cfg, sample, trainee.processing, items, indices, step, count_skip,
            on_episode=lambda done, total: phase(f"rollouts, episode {done + 1}/{total}"))
    rollout_s = time.perf_counter() - started
    phase("reward")
    terms = reward_fn(judged, references) if rollouts else []  # one judge batch for the step
    advantages = group_advantages([t["reward_total"] for t in terms], cfg.rollouts_per_episode,
                                  cfg.advantage_eps) if terms else []
    phase("update")
    micro = [list(range(i, min(i + cfg.micro_batch_rollouts, len(rollouts))))
             for i in range(0, len(rollouts), cfg.micro_batch_rollouts)]
    batches = [collate_rollouts([rollouts[i] for i in m], trainee.processing.tokenizer.pad_token_id) for m in micro]
    old, ref, drift = old_logprobs(cfg, trainee, batches)
    alarm = drift_message(step + 1, drift, cfg.drift_guard)
    if alarm and cfg.drift_guard.action == "stop":
        return None, alarm  # no update from rollouts another policy sampled
    trainee.sampler.before_update()
    logged = update_epoch(cfg, trainee, batches, micro, old, ref, advantages)
    trainee.sampler.after_update(step + 1)
    everyone, everyone_terms, everyone_logged = gather_step(trainee.accelerator, judged, terms, logged)
    timing = {"rollout_s": rollout_s, "step_s": time.perf_counter() - started}
    return step_record(step + 1, everyone, everyone_terms, everyone_logged | drift.record() | timing), alarm


def step_postfix(record: dict[str, float]) -> str:
    """The bar's short form of a step: total reward, each term, reply length and rate."""
    terms = " ".join(f"{k.removeprefix('reward_')} {record[k]:.3g}" for k in
                     ("reward_pauc", "reward_repetition", "reward_outspan", "reward_prefix") if k in record)
    total = f"reward {record['reward_total']:.3g} ({terms}) " if "reward_total" in record else ""
    return (f"{total}reply {record.get('mean_reply_chars', 0.0):.0f} chars, "
            f"{100 * record.get('reply_rate', 0.0):.0f}% of turns")


def guard_message(record: dict[str, float], cfg) -> str | None:
    """The reward-hacking guard's warning for this step, or None when it did not trip."""
    verdict = check_reward_hacking(record.get("reward_repetition", 0.0), record["mean_reply_chars"], cfg)
    if not verdict.tripped:
        return None
    return f"reward-hacking guard at step {int(record['step'])}: " + "; ".join(verdict.reasons)
