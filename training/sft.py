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
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from curation.video.frames import frame_timeline
from training import checkpoints
from training.data.chat_template import TurnRenderer
from training.data.corpus import splits_of
from training.data.dataset import (
    CollateEpisodes,
    EpisodeDataset,
    batch_order,
    loader_workers,
    rank_batches,
)
from training.data.frame_cache import find_cache
from training.data.lazy_split import LazySplit, SplitItems, spread_indices
from training.data.offline import IMAGE, OfflineDataset, OfflineEncoder, mix_offline
from training.data.summary import episode_summary
from training.distributed import (
    gather_by_rank,
    gather_fingerprints,
    is_main_process,
    per_rank,
    sum_counts,
)
from training.model import (
    corpus_texts,
    load_image_processor,
    load_tokenizer,
    load_trainable_model,
    mrope_inputs,
)

# The config lives with the command line, which checks it before torch is imported; names kept here.
from training.sft_config import ExtraCorpus, LoraSettings, SFTConfig, check, load_config  # noqa: F401


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


def released_items(cfg: SFTConfig, path: str | None, limit: int | None) -> list:
    """Episodes of a released SFT file (`data`, `eval_data`; none when unset); skipped lines are printed."""
    if not path:
        return []
    from training.data.mmduet2 import read_swift_sft

    episodes, counts = read_swift_sft(Path(path), Path(cfg.data_frames_root) if cfg.data_frames_root else None,
                                      cfg.episodes.seconds_per_frame)
    if counts.skipped:
        print(f"{path}: {counts.read} lines read, skipped {counts.skipped}")
    return episodes[:limit]


def train(cfg: SFTConfig) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    out = Path(cfg.output_dir)
    accelerator = checkpoints.make_accelerator(cfg.mixed_precision, cfg.seed, out)
    out.mkdir(parents=True, exist_ok=True)

    # --- data -------------------------------------------------------------------------------
    def open_split(root: str, split: str, max_dialogues: int | None) -> LazySplit:
        lazy = LazySplit(root, split, max_dialogues)  # an index; rows are read by the rank that trains them
        lazy.frame_cache = find_cache(root, cfg.frame_cache, cfg.episodes.seconds_per_frame,
                                      cfg.episodes.frame_cap, cfg.max_pixels)
        return lazy

    splits = [] if cfg.data else [open_split(cfg.corpus, cfg.split, cfg.max_dialogues)]
    splits += [open_split(x.path, x.split, x.max_dialogues) for x in cfg.extra_corpora]
    items = SplitItems(splits, released_items(cfg, cfg.data, cfg.max_dialogues))
    if not len(items):
        raise ValueError(f"{cfg.data or cfg.corpus}: {'no usable line' if cfg.data else f'split {cfg.split!r} has no dialogues'}")
    offline_items, offline_summary = mix_offline(cfg.offline, len(items), cfg.seed)
    # the summary and the tiny tokenizer's texts: a bounded sample spread over the items
    sample = [items[i] for i in spread_indices(len(items), cfg.summary_sample)]
    for split in splits:
        split.drop_cache()
    # tiny preset: a tokenizer trained on this corpus's text, built once per run dir
    texts = corpus_texts(sample, cfg.template.system_prompt) + [
        m.content.replace(IMAGE, "") for it in offline_items for m in it.example.messages]
    cfg = checkpoints.resolve_tiny_preset(cfg, texts, accelerator, out)
    tokenizer = load_tokenizer(cfg.model)
    image_processor = load_image_processor(cfg.model, cfg.max_pixels)
    renderer = TurnRenderer(tokenizer, cfg.template.system_prompt, cfg.template.image_pad_token)
    data_summary = {"split": cfg.split, "items": len(items), "summarised": len(sample),
                    "frame_cache": any(s.frame_cache for s in splits),
                    **episode_summary([it[0] for it in sample if isinstance(it, tuple)], cfg.episodes, frame_timeline,
                                      renderer.labelled_tokens, cfg.template.no_reply_loss_weight,
                                      released=[it.episode for it in sample if hasattr(it, "episode")]),
                    **offline_summary}
    accelerator.print("data " + json.dumps(data_summary))

    def dataset_of(pairs):
        return EpisodeDataset(pairs, cfg.episodes, renderer, image_processor, cfg.template, cfg.max_pixels)

    train_set = dataset_of(items)
    if offline_items:
        encoder = OfflineEncoder(renderer, image_processor, cfg.template)
        train_set = torch.utils.data.ConcatDataset([train_set, OfflineDataset(offline_items, encoder)])
    eval_set = None
    if cfg.data and cfg.eval_data:  # a released file's own held-out set
        eval_set = dataset_of(SplitItems([], released_items(cfg, cfg.eval_data, cfg.max_eval_dialogues)))
    elif cfg.eval_split and not cfg.data and cfg.eval_split in splits_of(cfg.corpus):
        eval_set = dataset_of(open_split(cfg.corpus, cfg.eval_split, cfg.max_eval_dialogues))
    collate = CollateEpisodes(tokenizer.pad_token_id)
    blocks = items.block_sizes()  # row groups: the locality-aware batch order's blocks
    workers = loader_workers(cfg.num_workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if workers:  # forked workers tokenize too; the Rust tokenizer's own threads would be disabled noisily
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    # --- model and optimizer ------------------------------------------------------------------
    model = load_trainable_model(cfg.model, cfg.freeze_vision_tower, cfg.train_merger,
                                 cfg.gradient_checkpointing, cfg.lora)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro_per_epoch = math.ceil(len(train_set) / cfg.batch_size) // world
    if micro_per_epoch == 0:
        raise ValueError(f"{len(train_set)} dialogues cannot feed {world} processes")
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / cfg.grad_accum_steps))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    optimizer, scheduler = optimizer_and_schedule(cfg, model, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # --- resume: the step count and the position in the seeded batch order ---------------------
    order_key = {"items": len(train_set), "batch_size": cfg.batch_size, "seed": cfg.seed, "processes": world,
                 "blocks": len(blocks), "window_blocks": cfg.order_window_blocks}
    state = {"step": 0, "epoch": 0, "micro": 0, "skipped": {}, "order": order_key}
    state = checkpoints.resume_state(accelerator, out, state, cfg.resume)

    def evaluate() -> float | None:
        return evaluate_loss(accelerator, model, eval_set, collate, renderer.image_pad_id)

    # --- loop -------------------------------------------------------------------------------
    writer = SummaryWriter(str(out / "tensorboard")) if accelerator.is_main_process else None
    order_log = (out / "data_order.jsonl").open("a") if accelerator.is_main_process else None
    bar = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_main_process,
               desc="sft", dynamic_ncols=True)
    losses: list[float] = []
    started = time.monotonic()  # the loop's own time: steps/s without start-up (bench.distributed_sft)
    model.train()
    while state["step"] < total_steps and (cfg.max_steps or state["epoch"] < cfg.epochs):
        batches = batch_order(len(train_set), cfg.batch_size, cfg.seed, state["epoch"], blocks,
                              cfg.order_window_blocks)
        mine = rank_batches(batches, world, rank)
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=mine[state["micro"]:], collate_fn=collate,
                                             num_workers=workers, prefetch_factor=cfg.prefetch_batches if workers else None)
        for batch in loader:
            state["micro"] += 1
            for skip in batch.skips:
                state["skipped"][skip.reason] = state["skipped"].get(skip.reason, 0) + 1
            if batch.tensors is not None:
                loss = batch_loss(model, batch.tensors, accelerator.device, renderer.image_pad_id)
                accelerator.backward(loss / cfg.grad_accum_steps)
                losses.append(loss.item())
            by_rank = gather_by_rank(accelerator, mine[state["micro"] - 1])  # as each process read it
            if order_log:
                order_log.write(json.dumps({"epoch": state["epoch"], "micro": state["micro"],
                                            "items": [i for b in by_rank for i in b], "by_rank": by_rank}) + "\n")
            if state["micro"] % cfg.grad_accum_steps and state["micro"] < len(mine):
                continue
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            if state["micro"] >= len(mine):  # the epoch is consumed: a checkpoint resumes at the next
                state.update(epoch=state["epoch"] + 1, micro=0)
            bar.update(1)
            if losses and writer and state["step"] % cfg.log_every_steps == 0:
                skipped = sum(state["skipped"].values())
                for key, value in {"loss": losses[-1], "lr": scheduler.get_last_lr()[0], "skipped": skipped}.items():
                    writer.add_scalar(f"train/{key}", value, state["step"])
                bar.set_postfix(loss=f"{losses[-1]:.4f}", skipped=skipped)
            if eval_set is not None and state["step"] % cfg.eval_every_steps == 0:
                eval_loss = evaluate()  # every process: the loss is reduced across them
                if writer and eval_loss is not None:
                    writer.add_scalar("eval/loss", eval_loss, state["step"])
            if state["step"] % cfg.save_every_steps == 0 or state["step"] >= total_steps:
                checkpoints.save_checkpoint(accelerator, out, state)
            if state["step"] >= total_steps or state["micro"] == 0:
                break
    bar.close()

    # --- final checkpoint -------------------------------------------------------------------
    accelerator.wait_for_everyone()
    summary = {"steps": state["step"], "train_s": round(time.monotonic() - started, 3), **gather_run_log(accelerator, losses, state["skipped"]), "data": data_summary,
               "eval_loss": evaluate() if eval_set is not None else None,
               "weights_sha256_by_rank": gather_fingerprints(accelerator, model)}
    checkpoints.save_final(accelerator, model, tokenizer, image_processor, out, summary)
    if accelerator.is_main_process:
        writer.close()
        order_log.close()
    return summary


def main(args) -> int:
    """`python -m training.run sft ...` (training.run checked the arguments before importing this)."""
    cfg = check(args)
    summary = train(cfg)
    if is_main_process():
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}
                         | {"first_loss": (summary["losses"] or [None])[0],
                            "last_loss": (summary["losses"] or [None])[-1]}))
    return 0
