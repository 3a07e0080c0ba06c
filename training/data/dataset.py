"""Episodes as a torch dataset, and the seeded batch order that makes resume exact.

An item that cannot be built (video missing or undecodable, a turn longer than the budget) comes
back as a `Skip` and is counted by the collator — never swapped for another sample (FACTS.md,
MMDuet's loader). The batch order is a pure function of (seed, epoch), so a resumed run replays
the same order and skips the batches it already consumed.

Corpus items come from `training.data.lazy_split` (read on demand) and take their frames from the
frame cache (`training.data.frame_cache`) when it holds them, decoding otherwise. The order over
them is locality-aware (`batch_order` with `blocks`): the row groups are shuffled, and items are
shuffled within windows of `window_blocks` consecutive shuffled row groups, so a loader worker
decodes each row group about once per window instead of once per item. Items outside the blocks
(released episodes, offline rows) are spread over the whole order uniformly at random.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from curation.corpus.shards import CorpusError
from curation.skips import Skip
from training.data.chat_template import (
    EncodedEpisode,
    TemplateConfig,
    TurnRenderer,
    collate_episodes,
    encode_episode,
)
from training.data.episodes import STAGE, EpisodeConfig, build_episode, decode_episode_frames
from training.data.frame_cache import FrameCache
from training.data.frame_folders import load_frame_files
from training.data.lazy_split import CACHED_ROW_GROUPS
from training.data.mmduet2 import ReleasedEpisode


class EpisodeDataset(torch.utils.data.Dataset):
    """Items (any indexable sequence: a list, `lazy_split.SplitItems`) are (dialogue, video path)
    or `CorpusItem`s (dialogue, video path, frame cache) from a corpus, or episodes read from
    released MMDuet2 files (`training.data.mmduet2.ReleasedEpisode`), whose frames are image files."""

    def __init__(self, items, episode_config: EpisodeConfig,
                 renderer: TurnRenderer, image_processor, template_config: TemplateConfig,
                 max_pixels: int):
        self.items = items
        self.episode_config = episode_config
        self.renderer = renderer
        self.image_processor = image_processor
        self.template_config = template_config
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedEpisode | Skip:
        from curation.video.frames import decode_frames, frame_timeline  # the one frame decoder

        try:
            item = self.items[index]
        except CorpusError as error:  # a shard damaged after the run opened it: counted, not a crash mid-run
            return Skip(STAGE, "unreadable_shard", str(error)[:500])
        if isinstance(item, ReleasedEpisode):
            frames = load_frame_files(item.frame_paths, self.max_pixels)
            if isinstance(frames, Skip):
                return frames
            return encode_episode(item.episode, frames, self.renderer, self.image_processor, self.template_config)
        dialogue, video_path, cache = item if len(item) == 3 else (*item, None)
        episode = build_episode(dialogue, video_path or "", self.episode_config, frame_timeline)
        if not episode.turns:
            return Skip(STAGE, "no_frames", f"{dialogue.dialogue_id}: the timeline holds no frame")
        frames = cached_frames(cache, episode, self.max_pixels)
        if frames is None and video_path is None:
            return Skip(STAGE, "video_missing", f"{dialogue.dialogue_id}: no video row or path")
        if frames is None:
            frames = decode_episode_frames(episode, self.max_pixels, decode_frames)
        if isinstance(frames, Skip):
            return frames
        return encode_episode(episode, frames, self.renderer, self.image_processor, self.template_config)


def cached_frames(cache: FrameCache | None, episode, max_pixels: int) -> list | None:
    """The episode's frames from the frame cache, None on a miss (or another pixel budget)."""
    if cache is None or cache.max_pixels != max_pixels:
        return None
    return cache.load(episode.video_id, episode.frame_times_s)


@dataclass
class Batch:
    tensors: dict[str, torch.Tensor] | None  # None when every item of the batch was skipped
    skips: list[Skip] = field(default_factory=list)


class CollateEpisodes:
    """Batches the episodes that were built and carries the skips along to be counted."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[EncodedEpisode | Skip]) -> Batch:
        built = [x for x in items if not isinstance(x, Skip)]
        skips = [x for x in items if isinstance(x, Skip)]
        return Batch(collate_episodes(built, self.pad_id) if built else None, skips)


class BatchOrder(Sequence):
    """Batches of item indices over one permutation, held as a numpy array (8 bytes per item, not a
    Python list per batch: ~20 MiB at 99k dialogues); a batch is a list of ints when taken, a
    slice is another `BatchOrder`."""

    def __init__(self, order: np.ndarray, batch_size: int, batch_ids: np.ndarray | None = None):
        self.order = order
        self.batch_size = batch_size
        self.batch_ids = np.arange(-(-len(order) // batch_size)) if batch_ids is None else batch_ids

    def __len__(self) -> int:
        return len(self.batch_ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return BatchOrder(self.order, self.batch_size, self.batch_ids[index])
        b = int(self.batch_ids[index])
        return self.order[b * self.batch_size:(b + 1) * self.batch_size].tolist()

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # mutable-looking sequence semantics, like a list


def batch_order(n_items: int, batch_size: int, seed: int, epoch: int, blocks: list[int] | None = None,
                window_blocks: int = CACHED_ROW_GROUPS) -> BatchOrder:
    """A seeded permutation of the items cut into batches (the last one may be short).

    Without `blocks`, a uniform permutation. With `blocks` (sizes of consecutive blocks of items
    covering `range(sum(blocks))`: row groups), the locality-aware order of the module docstring.
    Either way a pure function of its arguments."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if not blocks:
        order = torch.randperm(n_items, generator=generator)
    else:
        order = local_permutation(n_items, blocks, window_blocks, generator)
    return BatchOrder(order.numpy(), batch_size)


def local_permutation(n_items: int, blocks: list[int], window_blocks: int, generator) -> torch.Tensor:
    starts = torch.tensor([0] + blocks).cumsum(0)
    n_blocked = int(starts[-1])
    if n_blocked > n_items:
        raise ValueError(f"blocks cover {n_blocked} items, there are {n_items}")
    shuffled = torch.randperm(len(blocks), generator=generator).tolist()
    blocked = []
    for w in range(0, len(shuffled), max(1, window_blocks)):
        members = torch.cat([torch.arange(int(starts[b]), int(starts[b + 1]))
                             for b in shuffled[w:w + window_blocks]])
        blocked.append(members[torch.randperm(len(members), generator=generator)])
    order = torch.cat(blocked) if blocked else torch.empty(0, dtype=torch.long)
    n_rest = n_items - n_blocked
    if n_rest:  # the unblocked items, at uniformly random places of the order
        rest = torch.randperm(n_rest, generator=generator) + n_blocked
        at = torch.zeros(n_items, dtype=torch.bool)
        at[torch.randperm(n_items, generator=generator)[:n_rest]] = True
        merged = torch.empty(n_items, dtype=torch.long)
        merged[at], merged[~at] = rest, order
        order = merged
    return order


def rank_batches(batches: BatchOrder, world: int, rank: int) -> BatchOrder:
    """This process's share: every `world`-th batch from `rank`, over the first whole rounds (the
    tail that cannot feed every process is dropped). Shares are disjoint and cover those rounds."""
    return batches[:len(batches) // world * world][rank::world]


def loader_workers(requested: int | None, processes_per_node: int = 1) -> int:
    """DataLoader workers per process: `requested`, else min(4, cores per process - 1), and 0 where
    workers would not be forked (spawn re-imports torch and pickles the dataset per worker, which
    costs more than it saves on a small run; macOS and Windows default to spawn)."""
    if requested is not None:
        return requested
    if multiprocessing.get_context().get_start_method() != "fork":
        return 0
    return max(0, min(4, usable_cores() // max(1, processes_per_node) - 1))


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
