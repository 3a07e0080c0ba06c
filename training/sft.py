"""SFT on streaming episodes: data, model, optimizer, loop, eval, checkpoint — top to bottom.

`python -m training.run sft --config FILE [--model PATH_OR_NAME] [--preset tiny] [key=value ...]`.
Multi-process, multi-GPU and FSDP come from `accelerate launch` with a config from configs/accelerate/
(README "Distributed training"); training.distributed checks the launch.

Departures from the published code (MMDuet2 release), and why:
- Labels are built per turn and asserted against one tokenisation of the whole episode (FACTS.md
  "Trainer masks"); a template that does not split into turns is an error, not silent mislabels.
- Over-long episodes are truncated from the left at whole turns, keeping the system prompt and
  moving the dropped turns' questions to the first kept turn (the published loader's truncation
  is not documented).
- A video that cannot be decoded is skipped and counted, never replaced by a random sample.
- Optional loss weight on `NO REPLY` turns (`template.no_reply_loss_weight`, Streamo's lesson; 1 =
  published), carried per token beside the labels; the data summary shows its share of the loss.
- The patch merger stays trainable when the vision tower is frozen (Qwen2.5-VL fine-tuning
  default; set `train_merger: false` to freeze it too). ZeRO-3 is replaced by accelerate/FSDP.
- The learning-rate schedule (cosine after warm-up) is not published; it is a config value.
- The data order is locality-aware, not a uniform shuffle: row groups shuffled, items shuffled within
  windows of `order_window_blocks` row groups (training.data.dataset), so a rank reads only its
  share of a lazily read split; frames come from the prepared frame cache when there is one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from training import checkpoints
from training.data.dataset import batch_order, rank_batches
from training.distributed import gather_fingerprints, is_main_process, per_rank, sum_counts
from training.model import load_trainable_model, mrope_inputs
from training.run_log import RunLog
from training.sft_config import ExtraCorpus, LoraSettings, SFTConfig, load_config  # noqa: F401
from training.sft_data import SFTData, sft_data


def weighted_token_loss(logits, labels, weights) -> torch.Tensor:
    """Cross-entropy over labelled tokens, each weighted (NO REPLY turns may weigh less)."""
    logits, labels, weights = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                         ignore_index=-100, reduction="none")
    return (ce * weights.reshape(-1)).sum() / weights.sum().clamp_min(1e-8)



def batch_loss(model, tensors: dict, device, image_pad_id: int) -> torch.Tensor:
    """The weighted token loss of one collated batch, with Qwen's 3-D M-RoPE positions."""
    b = {k: v.to(device) for k, v in tensors.items()}
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                   pixel_values=b["pixel_values"], image_grid_thw=b["image_grid_thw"],
                   **mrope_inputs(model, b["input_ids"], image_pad_id)).logits
    return weighted_token_loss(logits, b["labels"], b["loss_weights"])


def evaluate_loss(accelerator, model, eval_set, collate, image_pad_id: int) -> float | None:
    """Mean episode loss over the held-out set, each process taking every `world`-th episode."""
    world, rank = accelerator.num_processes, accelerator.process_index
    model.eval()
    total = torch.zeros(2, device=accelerator.device)  # (loss sum, episodes) over all processes
    with torch.no_grad():
        for index in range(rank, len(eval_set), world):
            batch = collate([eval_set[index]])
            if batch.tensors is not None:
                total += torch.stack([batch_loss(model, batch.tensors, accelerator.device, image_pad_id),
                                      torch.ones((), device=accelerator.device)])
    model.train()
    total = accelerator.reduce(total, reduction="sum")
    return (total[0] / total[1]).item() if total[1] > 0 else None


def gather_run_log(accelerator, losses: list[float], skipped: dict[str, int]) -> dict:
    """The run's losses (per micro-batch, the mean over processes) and skips (summed over them),
    not the main process's own share."""
    if accelerator.num_processes == 1:
        return {"losses": losses, "skipped": skipped}
    # equal lengths: a rank that skipped a batch another trained on would have hung the all-reduce
    by_rank = per_rank(accelerator, losses)
    return {"losses": [sum(xs) / len(xs) for xs in zip(*by_rank, strict=True)],
            "skipped": sum_counts(accelerator, skipped)}


def optimizer_and_schedule(cfg: SFTConfig, model, total_steps: int):
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_schedule if cfg.lr_schedule != "constant" else "constant_with_warmup",
                              optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler


def optimizer_step(cfg: SFTConfig, accelerator, model, optimizer, scheduler) -> None:
    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_micro_batch(cfg: SFTConfig, accelerator, model, batch, skipped: dict[str, int], image_pad_id: int) -> list[float]:
    """Count the batch's skips; backward its loss (a share of the accumulated step); its loss, if any."""
    for skip in batch.skips:
        skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
    if batch.tensors is None:
        return []
    loss = batch_loss(model, batch.tensors, accelerator.device, image_pad_id)
    accelerator.backward(loss / cfg.grad_accum_steps)
    return [loss.item()]


def epoch_loader(cfg: SFTConfig, data: SFTData, batches: list[list[int]]):
    """The DataLoader of this process's remaining batches of an epoch (its batch sampler is the order)."""
    return torch.utils.data.DataLoader(data.train_set, batch_sampler=batches, collate_fn=data.collate,
                                       num_workers=data.workers,
                                       prefetch_factor=cfg.prefetch_batches if data.workers else None)


def train(cfg: SFTConfig) -> dict:
    out = Path(cfg.output_dir)
    accelerator = checkpoints.make_accelerator(cfg.mixed_precision, cfg.seed, out)
    out.mkdir(parents=True, exist_ok=True)

    # --- data: lazily read splits, offline QA, the summary, tokenizer and datasets (training.sft_data)
    data = sft_data(cfg, accelerator, out)
    cfg = data.cfg

    # --- model, optimizer and schedule ----------------------------------------------------------------
    model = load_trainable_model(cfg.model, cfg.freeze_vision_tower, cfg.train_merger, cfg.gradient_checkpointing,
                                 cfg.lora)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro_per_epoch = math.ceil(len(data.train_set) / cfg.batch_size) // world
    if micro_per_epoch == 0:
        raise ValueError(f"{len(data.train_set)} dialogues cannot feed {world} processes")
    total_steps = cfg.max_steps or cfg.epochs * max(1, math.ceil(micro_per_epoch / cfg.grad_accum_steps))
    optimizer, scheduler = optimizer_and_schedule(cfg, model, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # --- resume: the step count and the position in the seeded batch order ----------------------------
    order_key = {"items": len(data.train_set), "batch_size": cfg.batch_size, "seed": cfg.seed, "processes": world,
                 "blocks": len(data.blocks), "window_blocks": cfg.order_window_blocks}
    state = {"step": 0, "epoch": 0, "micro": 0, "skipped": {}, "order": order_key}
    state = checkpoints.resume_state(accelerator, out, state, cfg.resume)

    def evaluate() -> float | None:  # every process: the loss is reduced across them
        return evaluate_loss(accelerator, model, data.eval_set, data.collate, data.renderer.image_pad_id)

    # --- loop: micro-batches, an optimizer step every grad_accum_steps, log, eval, checkpoint ---------
    runlog = RunLog(accelerator, out, "sft", total_steps, state["step"])
    losses: list[float] = []
    started = time.monotonic()  # the loop's own time: steps/s without start-up (bench.distributed_sft)
    model.train()
    while state["step"] < total_steps and (cfg.max_steps or state["epoch"] < cfg.epochs):
        order = batch_order(len(data.train_set), cfg.batch_size, cfg.seed, state["epoch"], data.blocks,
                            cfg.order_window_blocks)
        mine = rank_batches(order, world, rank)
        for batch in epoch_loader(cfg, data, mine[state["micro"]:]):
            state["micro"] += 1
            losses += train_micro_batch(cfg, accelerator, model, batch, state["skipped"], data.renderer.image_pad_id)
            runlog.order({"epoch": state["epoch"], "micro": state["micro"]}, mine[state["micro"] - 1])
            if state["micro"] % cfg.grad_accum_steps and state["micro"] < len(mine):
                continue
            optimizer_step(cfg, accelerator, model, optimizer, scheduler)
            state["step"] += 1
            if state["micro"] >= len(mine):  # the epoch is consumed: a checkpoint resumes at the next
                state.update(epoch=state["epoch"] + 1, micro=0)
            runlog.bar.update(1)
            if losses and state["step"] % cfg.log_every_steps == 0:
                report_loss(runlog, losses[-1], scheduler.get_last_lr()[0], state)
            if data.eval_set is not None and state["step"] % cfg.eval_every_steps == 0:
                runlog.scalars("eval", {"loss": evaluate()}, state["step"])
            if state["step"] % cfg.save_every_steps == 0 or state["step"] >= total_steps:
                checkpoints.save_checkpoint(accelerator, out, state)
            if state["step"] >= total_steps or state["micro"] == 0:
                break
    runlog.close()

    # --- final checkpoint -----------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    summary = {"steps": state["step"], "train_s": round(time.monotonic() - started, 3),
               **gather_run_log(accelerator, losses, state["skipped"]), "data": data.summary,
               "eval_loss": evaluate() if data.eval_set is not None else None,
               "weights_sha256_by_rank": gather_fingerprints(accelerator, model)}
    checkpoints.save_final(accelerator, model, data.tokenizer, data.image_processor, out, summary)
    return summary


def report_loss(runlog: RunLog, loss: float, lr: float, state: dict) -> None:
    skipped = sum(state["skipped"].values())
    runlog.scalars("train", {"loss": loss, "lr": lr, "skipped": skipped}, state["step"])
    runlog.bar.set_postfix(loss=f"{loss:.4f}", skipped=skipped)


def main(args, cfg: SFTConfig) -> int:
    """`python -m training.run sft ...`: `cfg` is `check(args)`, run by training.run before importing this."""
    summary = train(cfg)
    if is_main_process():
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}
                         | {"first_loss": (summary["losses"] or [None])[0],
                            "last_loss": (summary["losses"] or [None])[-1]}))
    return 0
