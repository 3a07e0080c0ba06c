"""The RL split's prompts, streamed: an index over a lazily read split, stretches built on demand.

`build_rl_prompts` needs every `Dialogue` of the split in memory at once. `RLPromptIndex` reads the
split once through `LazySplit` (a row group at a time, each dialogue dropped once its stretches are
counted) and keeps per prompt two integers, the dialogue's item index and the stretch's number
within that dialogue, in numpy arrays; prompt i is rebuilt from its dialogue when it is asked for
(`dialogue_stretches` is a pure function of the dialogue and the settings, so it is the same
stretch). Prompts are numbered and split into training and validation exactly as
`build_rl_prompts` numbers and splits them (same stretch rule, same `held_videos`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from training.data.episodes import EpisodeConfig
from training.data.lazy_split import LazySplit, spread_indices
from training.data.rl_prompts import RLPromptConfig, dialogue_stretches, held_videos


class PromptItems:
    """One side (training or validation) of an `RLPromptIndex`: item i is (stretch, video path,
    frame cache), what `training.rl.grpo_data.prepare_item` takes."""

    def __init__(self, index: RLPromptIndex, rows: np.ndarray):
        self.index, self.rows = index, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        if not -len(self.rows) <= i < len(self.rows):
            raise IndexError(f"prompt {i} of {len(self.rows)}")
        return self.index.prompt(int(self.rows[i]))

    def head(self, n: int | None) -> PromptItems:
        return self if n is None else PromptItems(self.index, self.rows[:n])


class RLPromptIndex:
    def __init__(self, split: LazySplit, cfg: RLPromptConfig, episode_config: EpisodeConfig,
                 frame_timeline: Callable, frame_cache=None):
        self.split, self.cfg, self.episode_config = split, cfg, episode_config
        self.frame_timeline, self.frame_cache = frame_timeline, frame_cache
        self.dropped: Counter = Counter()
        items, numbers, videos = [], [], []
        for i in range(len(split)):
            dialogue = split.dialogue(i)
            count = len(dialogue_stretches(dialogue, cfg, episode_config, frame_timeline, self.dropped))
            items += [i] * count
            numbers += range(count)
            videos += [dialogue.video_id] * count
        split.drop_cache()
        self.item = np.asarray(items, dtype=np.int64)
        self.number = np.asarray(numbers, dtype=np.int32)
        held = held_videos(set(videos), cfg)
        validation = np.asarray([v in held for v in videos], dtype=bool)
        self.train = PromptItems(self, np.flatnonzero(~validation))
        self.validation = PromptItems(self, np.flatnonzero(validation))

    def prompt(self, row: int):
        dialogue = self.split.dialogue(int(self.item[row]))
        stretch = dialogue_stretches(dialogue, self.cfg, self.episode_config, self.frame_timeline)[int(self.number[row])]
        return stretch, self.split.video_path(dialogue.video_id), self.frame_cache

    def sample_dialogues(self, limit: int) -> list:
        """At most `limit` of the split's dialogues, spread over it (the data summary's and the tiny
        tokenizer's sample)."""
        return [self.split.dialogue(i) for i in spread_indices(len(self.split), limit)]

    def summary(self) -> dict:
        return {"dialogues": len(self.split), "prompts_train": len(self.train),
                "prompts_validation": len(self.validation), "stretches_dropped": dict(sorted(self.dropped.items()))}
