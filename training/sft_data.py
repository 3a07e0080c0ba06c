"""SFT's data: the splits read lazily (training.data.lazy_split), the released SFT file, offline QA
mixed in, the data summary, and the datasets and collator the loop reads."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from curation.video.frames import frame_timeline
from training import checkpoints
from training.data.chat_template import TurnRenderer
from training.data.corpus import splits_of
from training.data.dataset import CollateEpisodes, EpisodeDataset, loader_workers
from training.data.frame_cache import find_cache
from training.data.lazy_split import LazySplit, SplitItems, spread_indices
from training.data.offline import IMAGE, OfflineDataset, OfflineEncoder, mix_offline
from training.data.summary import episode_summary
from training.model import corpus_texts, load_image_processor, load_tokenizer


@dataclass
class SFTData:
    cfg: object  # the SFTConfig, its `model` resolved (tiny preset)
    train_set: object
    eval_set: EpisodeDataset | None
    collate: CollateEpisodes
    blocks: list[int]  # row groups: the locality-aware batch order's blocks
    workers: int  # DataLoader workers per process
    summary: dict
    tokenizer: object
    image_processor: object
    renderer: TurnRenderer


def open_split(cfg, root: str, split: str, max_dialogues: int | None) -> LazySplit:
    """An index of the split; rows are read by the rank that trains them, frames from this run's cache."""
    lazy = LazySplit(root, split, max_dialogues)
    lazy.frame_cache = find_cache(root, cfg.frame_cache, cfg.episodes.seconds_per_frame, cfg.episodes.frame_cap,
                                  cfg.max_pixels)
    return lazy


def released_items(cfg, path: str | None, limit: int | None) -> list:
    """Episodes of a released SFT file (`data`, `eval_data`; none when unset); skipped lines are printed."""
    if not path:
        return []
    from training.data.mmduet2 import read_swift_sft

    episodes, counts = read_swift_sft(Path(path), Path(cfg.data_frames_root) if cfg.data_frames_root else None,
                                      cfg.episodes.seconds_per_frame)
    if counts.skipped:
        print(f"{path}: {counts.read} lines read, skipped {counts.skipped}")
    return episodes[:limit]


def sft_data(cfg, accelerator, output_dir: Path) -> SFTData:
    """Everything the loop reads, for `cfg` (an SFTConfig); the tiny preset's tokenizer is trained on
    a bounded sample of the items (built once per run folder)."""
    splits = [] if cfg.data else [open_split(cfg, cfg.corpus, cfg.split, cfg.max_dialogues)]
    splits += [open_split(cfg, x.path, x.split, x.max_dialogues) for x in cfg.extra_corpora]
    items = SplitItems(splits, released_items(cfg, cfg.data, cfg.max_dialogues))
    if not len(items):
        raise ValueError(f"{cfg.data or cfg.corpus}: {'no usable line' if cfg.data else f'split {cfg.split!r} has no dialogues'}")
    offline_items, offline_summary = mix_offline(cfg.offline, len(items), cfg.seed)
    sample = [items[i] for i in spread_indices(len(items), cfg.summary_sample)]
    items.drop_cache()
    texts = corpus_texts(sample, cfg.template.system_prompt) + [
        m.content.replace(IMAGE, "") for it in offline_items for m in it.example.messages]
    cfg = checkpoints.resolve_tiny_preset(cfg, texts, accelerator, output_dir)
    tokenizer = load_tokenizer(cfg.model)
    image_processor = load_image_processor(cfg.model, cfg.max_pixels)
    renderer = TurnRenderer(tokenizer, cfg.template.system_prompt, cfg.template.image_pad_token)
    # the summary counts labelled tokens with the run's tokenizer (the NO REPLY loss weight's share)
    summary = {"split": cfg.split, "items": len(items), "summarised": len(sample),
               "frame_cache": any(s.frame_cache for s in splits),
               **episode_summary([it[0] for it in sample if isinstance(it, tuple)], cfg.episodes, frame_timeline,
                                 renderer.labelled_tokens, cfg.template.no_reply_loss_weight,
                                 released=[it.episode for it in sample if hasattr(it, "episode")]),
               **offline_summary}
    accelerator.print("data " + json.dumps(summary))

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
        eval_set = dataset_of(open_split(cfg, cfg.corpus, cfg.eval_split, cfg.max_eval_dialogues))
    workers = loader_workers(cfg.num_workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if workers:  # forked workers tokenize too; the Rust tokenizer's own threads would be disabled noisily
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return SFTData(cfg, train_set, eval_set, CollateEpisodes(tokenizer.pad_token_id), items.block_sizes(), workers,
                   summary, tokenizer, image_processor, renderer)
