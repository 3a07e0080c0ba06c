"""Multi-turn GRPO with the PAUC reward: data, model, optimizer, loop, checkpoint — top to bottom.

`python -m training.run grpo --config FILE [--model PATH] [--preset tiny] [key=value ...]`.
Data: the `rl` split's dialogues as RL prompts (training.data.rl_prompts: 20-60 s stretches, the
dialogue before each fed with its reference replies). Per step: a batch of prompts;
`rollouts_per_episode` streamed rollouts of each (training.rl.rollout, KV cache kept across turns); the four-term reward of each rollout (training.rl.reward, one judge
batch per step); group-normalised advantages; one update epoch over the rollouts with gradient
accumulation (training.rl.grpo_loss). Multi-GPU and FSDP come from `accelerate launch`, as in SFT.

Departures from the published code (MMDuet2 release / verl), and why:
- Log-probs are recomputed with the model's own forward over the whole rollout, so the M-RoPE
  3-D positions are the ones the rollout used (the public trainer used 1-D positions).
- Reply times are carried per turn from the rollout; a reply cut at the token cap stays in its own
  turn (the public loop re-prompted, shifting reply times against the reward's timestamps).
- The token mean is taken over the whole optimizer step (all micro-batches and processes), not as
  a mean of micro-batch means.
- A reward-hacking guard (alert or stop) replaces stopping the run by hand.
- RL prompts are built at load time from one rule over the corpus (the published run read a
  precomputed verl parquet table); their context replies reach the reward from the prompt itself.
- Rollouts come from the trainer's own HF model (no SGLang engine); the optional vLLM backend
  belongs to training.rl.rollout.
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
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from curation.skips import Skip
from curation.video.frames import frame_timeline
from training import checkpoints
from training.data.chat_template import (
    TurnRenderer,
)
from training.data.corpus import read_split
from training.data.dataset import batch_order, cached_frames
from training.data.frame_cache import find_cache
from training.data.frame_folders import load_frame_files
from training.data.mmduet2 import ReleasedEpisode, read_verl_rl
from training.data.rl_prompts import build_rl_prompts, stretch_episode
from training.data.summary import episode_summary
from training.distributed import (
    gather_by_rank,
    gather_fingerprints,
    is_main_process,
    sampling_policy,
    sum_counts,
)
from training.model import (
    corpus_texts,
    load_image_processor,
    load_model,
    load_tokenizer,
    load_trainable_model,
)

# The config lives with the command line, which checks it before torch is imported; names kept here.
from training.rl.grpo_config import GRPOConfig, check, load_config  # noqa: F401
from training.rl.grpo_loss import (
    GuardConfig,
    check_reward_hacking,
    clipped_policy_loss,
    group_advantages,
    reply_stats,
    sampled_forbidden,
)
from training.rl.judge import make_judge
from training.rl.reward import RewardConfig, Turn, compute_rewards
from training.rl.reward import Rollout as RewardRollout
from training.rl.rollout import (
    ProcessorBits,
    RolloutConfig,
    collate_rollouts,
    rollout_group,
    token_logprobs,
)
from training.tiny import SPECIAL_TOKENS

log = logging.getLogger(__name__)

# reward_fn(rollouts as the reward reads them, references of each) -> {term name: value} per rollout,
# "reward_total" included (TRL style: a plain callable; tests pass judge-free rewards).
RewardFn = Callable[[list[RewardRollout], list[Sequence]], list[dict[str, float]]]


def reward_rollout(rollout, earlier: tuple[str, ...] | None = None) -> RewardRollout:
    """A streamed rollout as the reward reads it: generated turns with their times; the replies of
    the dialogue before the prompt (a stretch's context; by default the turns fed with their
    reference replies) count as earlier replies for repetition and prefix."""
    if earlier is None:
        earlier = tuple(t.text for t in rollout.turns if t.forced)
    return RewardRollout(tuple(Turn(t, x) for t, x in rollout.replies()), earlier)


def judged_reward(judge, cfg: RewardConfig) -> RewardFn:
    def reward(rollouts, references):
        return [b.as_log() for b in compute_rewards(rollouts, references, judge, cfg)]
    return reward


def prepare_item(cfg: GRPOConfig, bits: ProcessorBits, item):
    """(episode, frames or None = decode from its video, context turns, the references scored,
    earlier replies or None = the context turns' own) of a corpus RL stretch or a released RL row,
    or why it cannot be rolled out."""
    if isinstance(item, ReleasedEpisode):
        frames = load_frame_files(item.frame_paths, bits.max_pixels)
        if isinstance(frames, Skip):
            return frames
        # windows that closed within the context turns were shown, not generated: not scored
        first_s = item.episode.turns[min(item.context_turns, len(item.episode.turns) - 1)].time_s
        scored = [r for r in item.references if r.reply_span[1] >= first_s]
        return item.episode, frames, item.context_turns, scored, None
    stretch, video_path, cache = item
    prompt = stretch_episode(stretch, video_path or "", cfg.episodes, frame_timeline)
    if len(prompt.episode.turns) <= prompt.context_turns:
        return Skip("episodes", "no_frames", stretch.dialogue.dialogue_id)
    frames = cached_frames(cache, prompt.episode, bits.max_pixels)  # None: the rollout decodes
    if frames is None and video_path is None:
        return Skip("episodes", "video_missing", stretch.dialogue.dialogue_id)
    return prompt.episode, frames, prompt.context_turns, list(prompt.references), stretch.context_replies


def rl_items(cfg: GRPOConfig) -> tuple[list, list, dict]:
    """(training prompts, validation prompts, data summary): rows of the released parquet named by
    `data` (no validation set), else the corpus split's stretches with their video paths."""
    if cfg.data:
        episodes, counts = read_verl_rl(Path(cfg.data), Path(cfg.data_user_turns) if cfg.data_user_turns else None,
                                        Path(cfg.data_frames_root) if cfg.data_frames_root else None,
                                        cfg.episodes.seconds_per_frame)
        return episodes[:cfg.max_dialogues], [], {"data": cfg.data, "rows_read": counts.read,
                                                  "rows_skipped": counts.skipped}
    # The rl split is read whole (3.6% of the videos; every dialogue's stretches are counted to
    # number the prompts): at 52k videos ~3.5k dialogues, unlike SFT's train split (lazy_split).
    split = read_split(cfg.corpus, cfg.split, cfg.max_dialogues)
    prompts = build_rl_prompts(split.dialogues, cfg.prompts, cfg.episodes, frame_timeline)
    cache = find_cache(cfg.corpus, cfg.frame_cache, cfg.episodes.seconds_per_frame, cfg.episodes.frame_cap,
                       cfg.max_pixels)
    items = [(p, split.video_path(p.dialogue.video_id), cache) for p in prompts.train]
    val_items = [(p, split.video_path(p.dialogue.video_id), cache)
                 for p in prompts.validation][:cfg.max_validation_prompts]
    summary = {"split": cfg.split, **prompts.summary(), **episode_summary(split.dialogues, cfg.episodes, frame_timeline)}
    return items, val_items, summary


def collect_rollouts(cfg: GRPOConfig, accelerator, model, bits: ProcessorBits, items, indices: list[int],
                     step: int, forbidden: set[int], count_skip, greedy: bool = False,
                     on_episode: Callable[[int, int], None] = lambda done, total: None) -> tuple[list, list, list]:
    """A group of rollouts per RL prompt, sampled by the current policy (seeded by step and item, so
    a resumed run samples what an uninterrupted one would): the rollouts, the reward's view of each
    (the prompt's context replies as earlier replies) and the references each is scored on.
    `greedy`: one rollout per prompt at temperature 0 (validation); `on_episode` reports progress."""
    rollouts, judged, references = [], [], []
    with sampling_policy(accelerator, model) as policy:  # entered once per call on every rank (FSDP: a collective)
        for number, index in enumerate(indices):
            on_episode(number, len(indices))
            prepared = prepare_item(cfg, bits, items[index])
            if isinstance(prepared, Skip):
                count_skip(prepared.reason)
                continue
            episode, frames, context_turns, scored, earlier = prepared
            rcfg = RolloutConfig(n=1 if greedy else cfg.rollouts_per_episode,
                                 temperature=0.0 if greedy else cfg.temperature, top_k=cfg.top_k,
                                 max_new_tokens_per_turn=cfg.max_new_tokens_per_turn, context_turns=context_turns,
                                 seed=cfg.seed * 1_000_003 + step * 1_009 + index, draft_no_reply=cfg.draft_no_reply)
            group = rollout_group(policy, bits, episode, rcfg, frames)
            if isinstance(group, Skip):
                count_skip(group.reason)
            elif any(sampled_forbidden(r, forbidden) for r in group):
                count_skip("sampled_special_token")
            else:
                rollouts += group
                judged += [reward_rollout(r, earlier) for r in group]
                references += [scored] * len(group)
    return rollouts, judged, references


def validate(cfg: GRPOConfig, accelerator, model, bits: ProcessorBits, items, forbidden: set[int],
             reward_fn: RewardFn) -> dict[str, float]:
    """Greedy rollouts of the validation prompts (each process every `world`-th), mean reward terms."""
    world, rank = accelerator.num_processes, accelerator.process_index
    skipped: dict[str, int] = {}

    def count(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    _, judged, references = collect_rollouts(cfg, accelerator, model, bits, items, list(range(rank, len(items), world)),
                                             0, forbidden, count, greedy=True)
    from accelerate.utils import gather_object

    terms = reward_fn(judged, references) if judged else []
    terms = gather_object(terms) if world > 1 else terms
    out = {"prompts": float(len(terms)), "skipped": float(sum(skipped.values()))}
    for key in sorted({k for t in terms for k in t}):
        out[key] = sum(t[key] for t in terms) / len(terms)
    return out


def update_epoch(cfg: GRPOConfig, accelerator, model, ref_model, optimizer, rollouts: list,
                 advantages: list[float], pad_id: int) -> dict[str, float]:
    """One update epoch over the step's rollouts: old log-probs under the sampling policy, then
    `updates_per_step` optimizer updates, each a token mean over all its micro-batches and processes."""
    micro = [list(range(i, min(i + cfg.micro_batch_rollouts, len(rollouts))))
             for i in range(0, len(rollouts), cfg.micro_batch_rollouts)]
    batches = [collate_rollouts([rollouts[i] for i in m], pad_id) for m in micro]
    model.train()
    with torch.no_grad():
        old = [token_logprobs(model, b, cfg.temperature) for b in batches]
        ref = [token_logprobs(ref_model, b, cfg.temperature) for b in batches] if ref_model else None
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
    """What one step logs: losses, reply statistics and the mean of each reward term by its name
    (`judged` holds one entry per rollout)."""
    record = {"step": step, "rollouts": len(judged), **logged, **reply_stats(judged)}
    for key in sorted({k for t in terms for k in t}):
        record[key] = sum(t[key] for t in terms) / len(terms)
    return record


def step_postfix(record: dict[str, float]) -> str:
    """The bar's short form of a step: total reward, each term, reply length and rate."""
    terms = " ".join(f"{k.removeprefix('reward_')} {record[k]:.3g}" for k in
                     ("reward_pauc", "reward_repetition", "reward_outspan", "reward_prefix") if k in record)
    total = f"reward {record['reward_total']:.3g} ({terms}) " if "reward_total" in record else ""
    return (f"{total}reply {record.get('mean_reply_chars', 0.0):.0f} chars, "
            f"{100 * record.get('reply_rate', 0.0):.0f}% of turns")


def guard_message(record: dict[str, float], cfg: GuardConfig) -> str | None:
    """The reward-hacking guard's warning for this step, or None when it did not trip."""
    verdict = check_reward_hacking(record.get("reward_repetition", 0.0), record["mean_reply_chars"], cfg)
    if not verdict.tripped:
        return None
    return f"reward-hacking guard at step {int(record['step'])}: " + "; ".join(verdict.reasons)


def train_grpo(cfg: GRPOConfig, reward_fn: RewardFn | None = None) -> dict:
    """Train; returns a summary with each step's logged values (`history`). `reward_fn` replaces
    the judged four-term reward (tests, synthetic tasks)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    out = Path(cfg.output_dir)
    accelerator = checkpoints.make_accelerator(cfg.mixed_precision, cfg.seed, out)
    out.mkdir(parents=True, exist_ok=True)

    # --- data: RL prompts (stretches with context, or released rows), the tokenizer, the reward ------
    items, val_items, data_summary = rl_items(cfg)
    accelerator.print("data " + json.dumps(data_summary))
    if not items:
        raise ValueError(f"{cfg.data or cfg.corpus}: no RL prompts ({data_summary})")
    texts = corpus_texts([it if isinstance(it, ReleasedEpisode) else (it[0].dialogue, it[1]) for it in items],
                         cfg.template.system_prompt)
    cfg = checkpoints.resolve_tiny_preset(cfg, texts, accelerator, out)
    tokenizer = load_tokenizer(cfg.model)
    image_processor = load_image_processor(cfg.model, cfg.max_pixels)
    renderer = TurnRenderer(tokenizer, cfg.template.system_prompt, cfg.template.image_pad_token)
    bits = ProcessorBits(renderer, image_processor, cfg.max_pixels)
    forbidden = {i for i in tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) if i is not None} - {renderer.eos_id}
    reward_fn = reward_fn or judged_reward(make_judge(cfg.judge, cfg.judge_endpoint), cfg.reward)

    # --- model (and the frozen reference when the KL term is on) -----------------------------------
    model = load_trainable_model(cfg.model, cfg.freeze_vision_tower, True, cfg.gradient_checkpointing, cfg.lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    ref_model = None
    if cfg.kl_coef:
        ref_model = load_model(cfg.model, dtype=torch.float32).eval().requires_grad_(False)
        ref_model = accelerator.prepare_model(ref_model, evaluation_mode=True)

    # --- the seeded episode order; resume continues the step count and the order --------------------
    world, rank = accelerator.num_processes, accelerator.process_index
    steps_per_epoch = len(batch_order(len(items), cfg.episodes_per_step, cfg.seed, 0)) // world
    if steps_per_epoch == 0:
        raise ValueError(f"{len(items)} dialogues cannot feed {world} processes")
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    order_key = {"items": len(items), "episodes_per_step": cfg.episodes_per_step, "seed": cfg.seed,
                 "processes": world}
    state = {"step": 0, "epoch": 0, "batch": 0, "skipped": {}, "order": order_key, "history": []}
    state = checkpoints.resume_state(accelerator, out, state, cfg.resume)

    def count_skip(reason: str) -> None:
        state["skipped"][reason] = state["skipped"].get(reason, 0) + 1

    # --- loop: rollouts, rewards and advantages, one update epoch, log, guard, checkpoint -----------
    writer = SummaryWriter(str(out / "tensorboard")) if accelerator.is_main_process else None
    order_log = (out / "data_order.jsonl").open("a") if accelerator.is_main_process else None
    stopped = None
    # A step takes minutes on a real model: the bar names the phase it is in, and after each step
    # the reward terms and reply length (the per-step line is printed above it, on stdout).
    bar = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_main_process,
               desc="grpo", dynamic_ncols=True)

    def phase(text: str) -> None:
        bar.set_description_str(f"grpo step {state['step'] + 1}: {text}")

    def say(line: str) -> None:
        if accelerator.is_main_process:
            bar.write(line)

    while state["step"] < total_steps and stopped is None:
        mine = batch_order(len(items), cfg.episodes_per_step, cfg.seed, state["epoch"])[:steps_per_epoch * world]
        mine = mine[rank::world]
        if state["batch"] >= len(mine):
            state.update(epoch=state["epoch"] + 1, batch=0)
            continue
        indices = mine[state["batch"]]
        rollouts, judged, references = collect_rollouts(
            cfg, accelerator, model, bits, items, indices, state["step"], forbidden, count_skip,
            on_episode=lambda done, total: phase(f"rollouts, episode {done + 1}/{total}"))
        phase("reward")
        terms = reward_fn(judged, references) if rollouts else []  # one judge batch for the step
        advantages = group_advantages([t["reward_total"] for t in terms], cfg.rollouts_per_episode,
                                      cfg.advantage_eps) if terms else []
        phase("update")
        logged = update_epoch(cfg, accelerator, model, ref_model, optimizer, rollouts, advantages,
                              tokenizer.pad_token_id)
        everyone, everyone_terms, everyone_logged = gather_step(accelerator, judged, terms, logged)
        record = step_record(state["step"] + 1, everyone, everyone_terms, everyone_logged)
        state["history"].append(record)
        state.update(step=state["step"] + 1, batch=state["batch"] + 1)
        by_rank = gather_by_rank(accelerator, indices)
        if order_log:
            order_log.write(json.dumps({"step": state["step"], "epoch": state["epoch"],
                                        "items": [i for b in by_rank for i in b], "by_rank": by_rank}) + "\n")
        if writer:
            for key, value in record.items():
                writer.add_scalar(f"train/{key}", value, state["step"])
        say(" ".join(f"{k}={v:.4g}" for k, v in record.items()))
        bar.set_description_str("grpo", refresh=False)
        bar.set_postfix_str(step_postfix(record), refresh=False)
        bar.update(1)
        if message := guard_message(record, cfg.guard):
            log.warning(message)
            say(f"WARNING {message}")
            if cfg.guard.action == "stop":
                stopped = f"{message}; training stopped, checkpoint {checkpoints.save_checkpoint(accelerator, out, state)}"
                break
        if val_items and cfg.validate_every_steps and state["step"] % cfg.validate_every_steps == 0:
            validation = validate(cfg, accelerator, model, bits, val_items, forbidden, reward_fn)
            accelerator.print("validation " + json.dumps(validation))
            for key, value in validation.items():
                if writer:
                    writer.add_scalar(f"val/{key}", value, state["step"])
        if state["step"] % cfg.save_every_steps == 0 or state["step"] >= total_steps:
            checkpoints.save_checkpoint(accelerator, out, state)

    bar.close()

    # --- final model ------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    validation = validate(cfg, accelerator, model, bits, val_items, forbidden, reward_fn) if val_items else None
    summary = {"steps": state["step"], "skipped": sum_counts(accelerator, state["skipped"]), "stopped": stopped,
               "history": state["history"], "data": data_summary, "validation": validation,
               "weights_sha256_by_rank": gather_fingerprints(accelerator, model)}
    checkpoints.save_final(accelerator, model, tokenizer, image_processor, out, summary)
    if accelerator.is_main_process:
        writer.close()
        order_log.close()
    if stopped:
        accelerator.print(stopped)
    return summary


def main(args) -> int:
    """`python -m training.run grpo ...` (training.run checked the arguments before importing this)."""
    cfg = check(args)
    summary = train_grpo(cfg)
    first, last = (summary["history"] or [{}])[0], (summary["history"] or [{}])[-1]
    if is_main_process():
        print(json.dumps({"steps": summary["steps"], "skipped": summary["skipped"], "stopped": summary["stopped"],
                          "first_reward": first.get("reward_total"), "last_reward": last.get("reward_total")}))
    return 1 if summary["stopped"] else 0
