"""Ordinary offline video data mixed into SFT: video QA and captions in the messages/images shape.

FACTS.md: the published SFT mixed the proactive dialogues with 25k video QA and 25k video captions
so the model keeps its offline skills. FORMATS.md gives their shape (ms-swift JSONL, one example a
line): `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
"images": [{"path": P} | P, ...]}`, one `<image>` placeholder per image in the user text,
placeholders before their turn's text. Image paths are relative to the JSONL file.

Each source joins the run at `ratio` examples per proactive dialogue (25k + 25k beside the
proactive set: two sources), drawn by a seeded permutation, so a run is reproducible. Every line
is untrusted: a bad row, a missing image or an example over the length budget is a counted skip.
Departure: an example's own system message is kept; without one the run's system prompt is used.
The `videos` field (clips instead of frames) is not read: such rows are skipped as
`offline_videos_unsupported` (decoding them would need a frame rule per example).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curation.skips import Skip
from training.data.chat_template import (
    IGNORE_INDEX,
    EncodedEpisode,
    TemplateConfig,
    TurnRenderer,
    assistant_message,
    check_against_full_render,
    image_inputs,
    system_message,
    tokens_per_image,
    user_message,
)

STAGE = "offline"
IMAGE = "<image>"


class OfflineSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # a messages/images JSONL file
    ratio: float = Field(0.0, ge=0.0, description="examples per proactive dialogue")
    name: str = ""


class OfflineMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class OfflineExample(BaseModel):
    messages: list[OfflineMessage] = Field(min_length=2)
    images: list[str] = []
    videos: list = []

    @field_validator("images", mode="before")
    @classmethod
    def _paths(cls, value):
        return [v["path"] if isinstance(v, dict) else v for v in value or []]


@dataclass(frozen=True)
class OfflineItem:
    example: OfflineExample
    root: Path
    where: str  # file:line, for skip details


def read_offline(source: OfflineSource, skipped: Counter) -> list[OfflineItem]:
    """The usable lines of one source; bad ones are counted by reason, never raised."""
    path = Path(source.path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        skipped["offline_unreadable_file"] += 1
        return []
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            example = OfflineExample.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError, TypeError):
            skipped["offline_bad_row"] += 1
            continue
        if example.videos:
            skipped["offline_videos_unsupported"] += 1
            continue
        if not example.images:  # text-only rows are not video data (and a batch needs its frames)
            skipped["offline_no_images"] += 1
            continue
        pads = sum(m.content.count(IMAGE) for m in example.messages if m.role == "user")
        if pads != len(example.images) or any(IMAGE in m.content for m in example.messages if m.role != "user"):
            skipped["offline_image_count_mismatch"] += 1
            continue
        items.append(OfflineItem(example, path.parent, f"{path}:{number}"))
    return items


def mix_offline(sources: list[OfflineSource], n_dialogues: int, seed: int) -> tuple[list[OfflineItem], dict]:
    """The offline examples of a run and a summary: per source, `round(ratio * n_dialogues)` drawn
    without replacement by a seeded permutation (all of them, counted short, when fewer exist)."""
    chosen: list[OfflineItem] = []
    skipped: Counter = Counter()
    per_source = {}
    for k, source in enumerate(sources):
        pool = read_offline(source, skipped)
        wanted = round(source.ratio * n_dialogues)
        import torch  # here, not at import: SFTConfig (which holds OfflineSource) is read before torch loads

        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed * 7_919 + k)).tolist()
        picked = [pool[i] for i in order[:wanted]]
        chosen += picked
        per_source[source.name or source.path] = {"available": len(pool), "wanted": wanted, "used": len(picked)}
    return chosen, {"offline": per_source, "offline_skipped": dict(sorted(skipped.items()))}


def load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class OfflineEncoder:
    """One offline example as token ids with labels on assistant turns, like a streamed episode."""

    def __init__(self, renderer: TurnRenderer, image_processor, config: TemplateConfig):
        self.renderer, self.image_processor, self.config = renderer, image_processor, config
        self._renderers = {renderer.system_prompt: renderer}

    def renderer_for(self, system_prompt: str) -> TurnRenderer:
        if system_prompt not in self._renderers:
            base = self.renderer
            self._renderers[system_prompt] = TurnRenderer(base.tokenizer, system_prompt,
                                                          self.config.image_pad_token)
        return self._renderers[system_prompt]

    def __call__(self, item: OfflineItem) -> EncodedEpisode | Skip:
        messages = item.example.messages
        system = messages[0].content if messages[0].role == "system" else self.renderer.system_prompt
        renderer = self.renderer_for(system)
        try:
            frames = [load_image((item.root / p).resolve()) for p in item.example.images]
        except (OSError, ValueError) as error:
            return Skip(STAGE, "offline_image_unreadable", f"{item.where}: {type(error).__name__}: {error}")
        pixel_values, grid = image_inputs(frames, self.image_processor)
        per_image = tokens_per_image(grid, self.image_processor.merge_size)
        ids = renderer.system_ids()
        labels = [IGNORE_INDEX] * len(ids)
        rendered, at = [system_message(system)], 0
        for message in (m for m in messages if m.role != "system"):
            if message.role == "user":
                n = message.content.count(IMAGE)
                text = message.content.replace(IMAGE, "").strip()
                user = renderer.user_turn_ids(per_image[at:at + n], text)
                ids, labels = ids + user, labels + [IGNORE_INDEX] * len(user)
                rendered.append(user_message(n, text))
                at += n
            else:
                reply_ids, reply_labels = renderer.assistant_turn(message.content)
                ids, labels = ids + reply_ids, labels + reply_labels
                rendered.append(assistant_message(message.content))
        if all(x == IGNORE_INDEX for x in labels):
            return Skip(STAGE, "offline_no_answer", f"{item.where}: no assistant message")
        if len(ids) > self.config.max_length_tokens:
            return Skip(STAGE, "offline_too_long", f"{item.where}: {len(ids)} > {self.config.max_length_tokens} tokens")
        check_against_full_render(ids, rendered, renderer, per_image, item.where)
        return EncodedEpisode(input_ids=ids, labels=labels, loss_weights=[float(x != IGNORE_INDEX) for x in labels],
                              pixel_values=pixel_values, image_grid_thw=grid, first_turn=0, reply_turns=[])


class OfflineDataset:
    """A map-style dataset (DataLoader and ConcatDataset need only `len` and indexing)."""

    def __init__(self, items: list[OfflineItem], encoder: OfflineEncoder):
        self.items, self.encoder = items, encoder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedEpisode | Skip:
        return self.encoder(self.items[index])
