"""Multi-turn GRPO with the PAUC reward: data, model, optimizer, loop, checkpoint — top to bottom.

`python -m training.run grpo [--config FILE] [--corpus DIR] [--model PATH | --preset tiny] [key=value ...]`.
Data: the `rl` split's dialogues as RL prompts (training.data.rl_prompts: 20-60 s stretches, the
dialogue before each fed with its reference replies), streamed (training.data.rl_prompt_index).
Per step (training.rl.grpo_step): a batch of prompts; `rollouts_per_episode` streamed rollouts of
each, from the policy itself or a vLLM engine that follows it (training.rl.samplers); the four-term
reward of each rollout (training.rl.reward, one judge batch per step); group-normalised
advantages; the policy's log-probs recomputed and checked against the sampler's (training.rl.drift);
one update epoch with gradient accumulation (training.rl.grpo_loss). Multi-GPU and FSDP come from
`accelerate launch`, as in SFT.

Departures from the published code (MMDuet2 release / verl), and why:
- Log-probs are recomputed with the model's own forward over the whole rollout, so the M-RoPE
  3-D positions are the ones the rollout used (the public trainer used 1-D positions); logits are
  projected only where a sampled token is predicted (memory at 180 frames).
- Reply times are carried per turn from the rollout; a reply cut at the token cap stays in its own
  turn (the public loop re-prompted, shifting reply times against the reward's timestamps).
- The token mean is taken over the whole optimizer step (all micro-batches and processes), not as
  a mean of micro-batch means.
- A reward-hacking guard (alert or stop) replaces stopping the run by hand; a log-prob drift guard
  stops a run whose sampler does not hold the policy's weights (verl only logs the gap).
- RL prompts are built at load time from one rule over the corpus (the published run read a
  precomputed verl parquet table); their context replies reach the reward from the prompt itself.
- Rollouts come from the trainer's own HF model by default (no SGLang engine); `rollout.backend:
  vllm` samples with vLLM (colocated or a server), given the policy's weights after every update.
- A group in which the policy sampled a vision/template special token (`<|image_pad|>` with no
  image behind it) is dropped and counted (`sampled_special_token`), never re-encoded wrongly.
Log-probs for the ratio and the KL are taken at the sampling temperature (as verl does).
Limits: with FSDP2 the HF rollouts sample from a whole copy of the policy on each rank, refreshed
once per rollout batch (training.distributed.sampling_policy; FSDP1's `summon_full_params` is
untested here, no GPU); every process must get rollouts each step (one whose episodes were all skipped
would leave the others waiting in the gradient all-reduce).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from training import checkpoints
from training.data.dataset import batch_order
from training.distributed import gather_fingerprints, is_main_process, sum_counts
from training.model import load_model, load_trainable_model

# The config lives with the command line, which checks it before torch is imported; names kept here.
from training.rl.grpo_config import GRPOConfig, load_config
from training.rl.grpo_data import load_processing, rl_data
from training.rl.grpo_step import (
    RewardFn,
    Trainee,
    counter,
    grpo_step,
    guard_message,
    step_postfix,
    validate,
)
from training.rl.judge import make_judge
from training.rl.reward import compute_rewards
from training.rl.samplers import make_sampler
from training.run_log import RunLog

log = logging.getLogger(__name__)
__all__ = ["GRPOConfig", "load_config", "train_grpo"]


def judged_reward(judge, cfg) -> RewardFn:
    def reward(rollouts, references):
        return [b.as_log() for b in compute_rewards(rollouts, references, judge, cfg)]
    return reward


def build_policy(cfg: GRPOConfig, accelerator):
    """The trained model and its optimizer, prepared by accelerate, and the frozen reference (KL on)."""
    model = load_trainable_model(cfg.model, cfg.freeze_vision_tower, True, cfg.gradient_checkpointing, cfg.lora,
                                 cfg.vision_checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    ref_model = None
    if cfg.kl_coef:
        ref_model = load_model(cfg.model, dtype=torch.float32).eval().requires_grad_(False)
        ref_model = accelerator.prepare_model(ref_model, evaluation_mode=True)
    return model, optimizer, ref_model


class EpisodeOrder:
    """The seeded episode order (training.data.dataset.batch_order), `episodes_per_step` prompts per
    process per step, each process every `world`-th batch; its key decides whether a checkpoint resumes."""

    def __init__(self, n_items: int, per_step: int, seed: int, accelerator):
        self.n_items, self.per_step, self.seed = n_items, per_step, seed
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.steps_per_epoch = len(batch_order(n_items, per_step, seed, 0)) // self.world
        if self.steps_per_epoch == 0:
            raise ValueError(f"{n_items} dialogues cannot feed {self.world} processes")
        self.key = {"items": n_items, "episodes_per_step": per_step, "seed": seed, "processes": self.world}

    def batch(self, state: dict) -> list[int] | None:
        """This process's prompts at the state's position; None (and the state moved on to the next
        epoch) where an epoch ends."""
        mine = batch_order(self.n_items, self.per_step, self.seed, state["epoch"])[:self.steps_per_epoch * self.world]
        mine = mine[self.rank::self.world]
        if state["batch"] >= len(mine):
            state.update(epoch=state["epoch"] + 1, batch=0)
            return None
        return mine[state["batch"]]


def report_step(runlog: RunLog, record: dict) -> None:
    runlog.scalars("train", record, int(record["step"]))
    runlog.say(" ".join(f"{k}={v:.4g}" for k, v in record.items()))
    runlog.bar.set_description_str("grpo", refresh=False)
    runlog.bar.set_postfix_str(step_postfix(record), refresh=False)
    runlog.bar.update(1)


def guard_stop(cfg: GRPOConfig, record: dict | None, drift_alarm: str | None, runlog: RunLog) -> str | None:
    """Warn for every guard that tripped this step; the message of the first one set to stop."""
    stop = None
    for message, action in ((drift_alarm, cfg.drift_guard.action),
                            (record and guard_message(record, cfg.guard), cfg.guard.action)):
        if message:
            log.warning(message)
            runlog.say(f"WARNING {message}")
            stop = stop or (message if action == "stop" else None)
    return stop


def report_validation(cfg: GRPOConfig, trainee: Trainee, items, reward_fn: RewardFn) -> dict:
    validation = validate(cfg, trainee, items, reward_fn)
    trainee.accelerator.print("validation " + json.dumps(validation))
    return validation


def train_grpo(cfg: GRPOConfig, reward_fn: RewardFn | None = None) -> dict:
    """Train; returns a summary with each step's logged values (`history`). `reward_fn` replaces
    the judged four-term reward (tests, synthetic tasks)."""
    out = Path(cfg.output_dir)
    accelerator = checkpoints.make_accelerator(cfg.mixed_precision, cfg.seed, out)
    out.mkdir(parents=True, exist_ok=True)

    # --- data: RL prompts (the split streamed, or released rows), processors, the reward ----------
    data = rl_data(cfg)
    accelerator.print("data " + json.dumps(data.summary))
    if not len(data.items):
        raise ValueError(f"{cfg.data or cfg.corpus}: no RL prompts ({data.summary})")
    cfg = checkpoints.resolve_tiny_preset(cfg, data.texts, accelerator, out)
    processing = load_processing(cfg)
    reward_fn = reward_fn or judged_reward(make_judge(cfg.judge, cfg.judge_endpoint), cfg.reward)

    # --- model, optimizer, the seeded order; resume continues the step count and the order -------
    model, optimizer, ref_model = build_policy(cfg, accelerator)
    order = EpisodeOrder(len(data.items), cfg.episodes_per_step, cfg.seed, accelerator)
    total_steps = cfg.max_steps or cfg.epochs * order.steps_per_epoch
    fresh = {"step": 0, "epoch": 0, "batch": 0, "skipped": {}, "order": order.key, "history": []}
    state = checkpoints.resume_state(accelerator, out, fresh, cfg.resume)
    # the sampler: the policy itself, or a vLLM engine given the (resumed) policy's weights
    sampler = make_sampler(cfg.rollout, accelerator, model, processing.bits, cfg.model, out,
                           cfg.lora.rank if cfg.lora.enabled else None)
    trainee = Trainee(accelerator, model, optimizer, ref_model, sampler, processing)

    # --- loop: rollouts, rewards, drift check, update, log, guards, validation, checkpoint --------
    runlog = RunLog(accelerator, out, "grpo", total_steps, state["step"])
    stopped = None
    while state["step"] < total_steps and stopped is None:
        indices = order.batch(state)
        if indices is None:
            continue
        record, drift_alarm = grpo_step(cfg, trainee, reward_fn, data.items, indices, state["step"],
                                        counter(state["skipped"]), runlog.phase)
        if record is not None:
            state["history"].append(record)
            state.update(step=state["step"] + 1, batch=state["batch"] + 1)
            runlog.order({"step": state["step"], "epoch": state["epoch"]}, indices)
            report_step(runlog, record)
        if message := guard_stop(cfg, record, drift_alarm, runlog):
            stopped = f"{message}; training stopped, checkpoint {checkpoints.save_checkpoint(accelerator, out, state)}"
        elif len(data.validation) and cfg.validate_every_steps and state["step"] % cfg.validate_every_steps == 0:
            runlog.scalars("val", report_validation(cfg, trainee, data.validation, reward_fn), state["step"])
        if not stopped and (state["step"] % cfg.save_every_steps == 0 or state["step"] >= total_steps):
            checkpoints.save_checkpoint(accelerator, out, state)
    runlog.close()

    # --- final model ------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    summary = {"steps": state["step"], "skipped": sum_counts(accelerator, state["skipped"]), "stopped": stopped,
               "history": state["history"], "data": data.summary,
               "validation": report_validation(cfg, trainee, data.validation, reward_fn) if len(data.validation) else None,
               "weights_sha256_by_rank": gather_fingerprints(accelerator, model)}
    checkpoints.save_final(accelerator, model, processing.tokenizer, processing.bits.image_processor, out, summary)
    if stopped:
        accelerator.print(stopped)
    return summary


def main(args, cfg: GRPOConfig) -> int:
    """`python -m training.run grpo ...`: `cfg` is `check(args)`, run by training.run before importing this."""
    summary = train_grpo(cfg)
    first, last = (summary["history"] or [{}])[0], (summary["history"] or [{}])[-1]
    if is_main_process():
        print(json.dumps({"steps": summary["steps"], "skipped": summary["skipped"], "stopped": summary["stopped"],
                          "first_reward": first.get("reward_total"), "last_reward": last.get("reward_total")}))
    return 1 if summary["stopped"] else 0
