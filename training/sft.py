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
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from training import checkpoints
from training.data.chat_template import DEFAULT_SYSTEM_PROMPT, TemplateConfig
from training.data.dataset import batch_order, rank_batches
from training.data.episodes import EpisodeConfig
from training.data.offline import OfflineSource
from training.distributed import gather_fingerprints, is_main_process, per_rank, sum_counts
from training.model import load_trainable_model, mrope_inputs
from training.run_log import RunLog
from training.sft_data import SFTData, sft_data


class ExtraCorpus(BaseModel):
    """Another corpus of dialogue shards mixed into training (FACTS.md: the published SFT mixed in
    ordinary video QA and captions, written as dialogues so they stream like the rest)."""

    model_config = ConfigDict(extra="forbid")
    path: str
    split: str = "train"
    max_dialogues: int | None = Field(None, ge=1)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False  # published SFT is a full fine-tune
    rank: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)


class SFTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: str = "corpus"
    # A released MMDuet2 ms-swift SFT JSONL (training.data.mmduet2): trained on instead of the
    # corpus split (extra corpora still mix in; no held-out loss). Frame paths are relative to
    # `data_frames_root` (default: the file's folder); frame interval: the file's `N_sec_per_frame`.
    data: str | None = None
    data_frames_root: str | None = None
    split: str = "train"
    eval_split: str | None = "validation"  # evaluated only when the index has it
    max_dialogues: int | None = Field(None, ge=1)
    max_eval_dialogues: int | None = Field(64, ge=1)
    extra_corpora: list[ExtraCorpus] = []
    # FACTS.md: 25k video QA + 25k captions mixed in (messages/images JSONL; training.data.offline)
    offline: list[OfflineSource] = []
    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # FACTS.md: base model
    preset: Literal["tiny"] | None = None  # "tiny": random tiny Qwen2.5-VL, no download
    output_dir: str = "runs/sft"
    max_pixels: int = Field(128 * 28 * 28, ge=28 * 28)  # FACTS.md: 128 visual tokens per frame
    learning_rate: float = Field(1e-5, gt=0)  # FACTS.md: SFT lr 1e-5
    warmup_ratio: float = Field(0.05, ge=0, le=1)  # FACTS.md: warm-up 0.05
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"  # not published
    epochs: int = Field(1, ge=1)  # FACTS.md: 1 epoch
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(1, ge=1, description="episodes per device per micro-batch")
    grad_accum_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    freeze_vision_tower: bool = True  # FACTS.md: SFT with the vision tower frozen
    train_merger: bool = True
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where supported (FACTS.md)
    lora: LoraSettings = LoraSettings()
    seed: int = 0
    log_every_steps: int = Field(1, ge=1)
    eval_every_steps: int = Field(500, ge=1)
    save_every_steps: int = Field(500, ge=1)
    resume: bool = True  # continue from the latest checkpoint in output_dir if there is one
    # DataLoader workers per process; None: min(4, cores per process - 1), 0 where fork is not
    # the start method (training.data.dataset.loader_workers)
    num_workers: int | None = Field(None, ge=0)
    prefetch_batches: int = Field(2, ge=1, description="batches each worker prepares ahead")
    # "auto": frames from `python -m training.run prepare`'s cache when this run's key was
    # prepared (training.data.frame_cache), decoded otherwise; "off": always decode
    frame_cache: Literal["auto", "off"] = "auto"
    # the data summary and the tiny tokenizer read this many dialogues, spread over the split
    # (never the whole split: issue 17)
    summary_sample: int = Field(2000, ge=1)
    order_window_blocks: int = Field(4, ge=1, description="row groups shuffled together (dataset.batch_order)")
    episodes: EpisodeConfig = EpisodeConfig()
    template: TemplateConfig = TemplateConfig(system_prompt=DEFAULT_SYSTEM_PROMPT)


def load_config(path: str | None, overrides: list[str], **flags) -> SFTConfig:
    """YAML/JSON file, then `--model`/`--preset` flags, then dotted `key=value` overrides."""
    return checkpoints.load_config(SFTConfig, path, overrides, **flags)


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


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of SFTConfig fields")
    parser.add_argument("--model", help="checkpoint path or hub name (default: Qwen2.5-VL-3B-Instruct)")
    parser.add_argument("--preset", choices=["tiny"], help="tiny: a random tiny Qwen2.5-VL, no download")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. episodes.seconds_per_frame=1")


def main(args) -> int:
    cfg = load_config(args.config, args.overrides, model=args.model, preset=args.preset)
    checkpoints.require_corpus(cfg.corpus, cfg.data)
    summary = train(cfg)
    if is_main_process():
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}
                         | {"first_loss": (summary["losses"] or [None])[0],
                            "last_loss": (summary["losses"] or [None])[-1]}))
    return 0
