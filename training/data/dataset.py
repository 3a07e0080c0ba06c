"""Episodes as a torch dataset, and the seeded batch order that makes resume exact.

An item that cannot be built (video missing or undecodable, a turn longer than the budget) comes
back as a `Skip` and is counted by the collator — never swapped for another sample (FACTS.md,
MMDuet's loader). The batch order is a pure function of (seed, epoch), so a resumed run replays
the same order and skips the batches it already consumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from curation.skips import Skip
from schemas import Dialogue
from training.data.chat_template import (
    EncodedEpisode,
    TemplateConfig,
    TurnRenderer,
    collate_episodes,
    encode_episode,
)
from training.data.episodes import STAGE, EpisodeConfig, build_episode, decode_episode_frames
from training.data.frame_folders import load_frame_files
from training.data.mmduet2 import ReleasedEpisode


class EpisodeDataset(torch.utils.data.Dataset):
    """Items are (dialogue, video path) from a corpus, or episodes read from released MMDuet2 files
    (`training.data.mmduet2.ReleasedEpisode`), whose frames are image files."""

    def __init__(self, items: list[tuple[Dialogue, Path | None] | ReleasedEpisode], episode_config: EpisodeConfig,
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

        item = self.items[index]
        if isinstance(item, ReleasedEpisode):
            frames = load_frame_files(item.frame_paths, self.max_pixels)
            if isinstance(frames, Skip):
                return frames
            return encode_episode(item.episode, frames, self.renderer, self.image_processor, self.template_config)
        dialogue, video_path = item
        if video_path is None:
            return Skip(STAGE, "video_missing", f"{dialogue.dialogue_id}: no video row or path")
        episode = build_episode(dialogue, video_path, self.episode_config, frame_timeline)
        if not episode.turns:
            return Skip(STAGE, "no_frames", f"{dialogue.dialogue_id}: the timeline holds no frame")
        frames = decode_episode_frames(episode, self.max_pixels, decode_frames)
        if isinstance(frames, Skip):
            return frames
        return encode_episode(episode, frames, self.renderer, self.image_processor, self.template_config)


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


def batch_order(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """A seeded permutation of the items cut into batches (the last one may be short)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n_items, batch_size)]
