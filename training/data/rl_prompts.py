"""RL prompts as data: stretches of the RL split's dialogues, each with the dialogue before it.

FACTS.md: "Each RL prompt is a 20-60 s stretch of a video, with the dialogue before it given as
context with its reference replies". Prompts are built at load time from one rule, so they follow
the episode settings of the run (frame interval, frame cap):

1. A dialogue's streamed length L is its duration, cut at the episode's frame cap.
2. [0, L] is cut into consecutive stretches of `stretch_s` from 0; a last piece shorter than
   `min_stretch_s` joins the stretch before it (so every stretch lies in [min, max] when
   `stretch_s + min_stretch_s <= max_stretch_s`, which the config checks). A dialogue shorter than
   `min_stretch_s` is one stretch of its whole length (the sample's clips are 5-48 s).
3. A user turn belongs to the stretch its time (its last frame) falls in, [start_s, end_s); every
   turn before `start_s` is context, fed with its reference reply (or `NO REPLY`).
4. A stretch none of whose reference windows reaches into [start_s, end_s) is dropped, counted as
   `no_answer_in_stretch`: it would score only silence.
5. A stretch is scored on the references whose window ends at or after its first turn (windows that
   closed within the context were shown, not generated); its context's reference replies are the
   reward's earlier replies (repetition and prefix terms).

`RLStretch` is the unit a verl exporter takes: dialogue, start_s, end_s and the context replies.
The GRPO validation set is a share of the RL videos (FACTS.md: ~7.97k training and 883 validation
prompts, about 10%), chosen by a hash of the video id like the corpus splits.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import NO_REPLY, Dialogue, ReferenceAnswer
from training.data.episodes import Episode, EpisodeConfig, build_episode


class RLPromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stretch_s: float = Field(40.0, gt=0)  # our choice, mid FACTS.md's 20-60 s
    min_stretch_s: float = Field(20.0, gt=0)  # FACTS.md: RL prompts cover 20-60 s stretches
    max_stretch_s: float = Field(60.0, gt=0)  # FACTS.md
    # FACTS.md: 883 validation of ~8.85k RL prompts (about 10%), held out by video
    validation_share: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: str = ""

    @model_validator(mode="after")
    def _stretches_fit(self) -> RLPromptConfig:
        if not self.min_stretch_s <= self.stretch_s <= self.max_stretch_s:
            raise ValueError("stretch_s must lie in [min_stretch_s, max_stretch_s]")
        if self.stretch_s + self.min_stretch_s > self.max_stretch_s + 1e-9:
            raise ValueError("stretch_s + min_stretch_s must not exceed max_stretch_s (a short last piece joins the one before)")
        return self


@dataclass(frozen=True)
class ContextReply:
    """A reference reply fed before the stretch, at the time of its turn."""

    time_s: float
    text: str


@dataclass(frozen=True)
class RLStretch:
    dialogue: Dialogue
    start_s: float
    end_s: float
    context: tuple[ContextReply, ...] = ()  # the replies (not `NO REPLY`) of the turns before start_s

    @property
    def prompt_id(self) -> str:
        return f"{self.dialogue.dialogue_id}@{self.start_s:g}-{self.end_s:g}s"

    @property
    def context_replies(self) -> tuple[str, ...]:
        return tuple(c.text for c in self.context)


@dataclass(frozen=True)
class StretchEpisode:
    """What a rollout streams for one stretch: the episode cut after the stretch's last turn, how
    many leading turns are context, and the references the stretch is scored on."""

    episode: Episode
    context_turns: int
    references: tuple[ReferenceAnswer, ...]


def stretch_bounds(length_s: float, cfg: RLPromptConfig) -> list[tuple[float, float]]:
    """Rule 2 of the module docstring."""
    if length_s <= 0:
        return []
    starts = [0.0]
    while length_s - starts[-1] > cfg.stretch_s + 1e-9:
        starts.append(starts[-1] + cfg.stretch_s)
    if len(starts) > 1 and length_s - starts[-1] < cfg.min_stretch_s - 1e-9:
        starts.pop()
    return [(round(s, 3), round(e, 3)) for s, e in zip(starts, [*starts[1:], length_s], strict=True)]


def _in_stretch(time_s: float, start_s: float, end_s: float, last: bool) -> bool:
    return start_s - 1e-6 <= time_s and (last or time_s < end_s - 1e-6)


def dialogue_stretches(dialogue: Dialogue, cfg: RLPromptConfig, episode_config: EpisodeConfig,
                       frame_timeline, dropped: Counter | None = None) -> list[RLStretch]:
    """The RL stretches of one dialogue (rules 1-4); `dropped` counts the stretches left out."""
    episode = build_episode(dialogue, "", episode_config, frame_timeline)
    if not episode.turns:
        if dropped is not None:
            dropped["no_frames"] += 1
        return []
    length_s = min(dialogue.duration_s, episode_config.frame_cap * episode_config.seconds_per_frame)
    bounds = stretch_bounds(length_s, cfg)
    out = []
    for k, (start_s, end_s) in enumerate(bounds):
        last = k == len(bounds) - 1
        if not any(_in_stretch(t.time_s, start_s, end_s, last) for t in episode.turns):
            reason = "no_turn_in_stretch"
        elif not any(s < end_s and e >= start_s for s, e in (r.reply_span for r in dialogue.references)):
            reason = "no_answer_in_stretch"
        else:
            context = tuple(ContextReply(t.time_s, t.reply) for t in episode.turns
                            if t.time_s < start_s - 1e-6 and t.reply != NO_REPLY)
            out.append(RLStretch(dialogue, start_s, end_s, context))
            continue
        if dropped is not None:
            dropped[reason] += 1
    return out


def stretch_episode(stretch: RLStretch, video_path: str | Path, episode_config: EpisodeConfig,
                    frame_timeline) -> StretchEpisode:
    """The stretch as streamed turns (rules 3 and 5): context turns, then the stretch's turns."""
    episode = build_episode(stretch.dialogue, video_path, episode_config, frame_timeline)
    at_end = abs(stretch.end_s - min(stretch.dialogue.duration_s,
                                     episode_config.frame_cap * episode_config.seconds_per_frame)) < 1e-6
    kept = tuple(t for t in episode.turns if t.time_s < stretch.start_s - 1e-6
                 or _in_stretch(t.time_s, stretch.start_s, stretch.end_s, at_end))
    context_turns = sum(t.time_s < stretch.start_s - 1e-6 for t in kept)
    first_s = kept[context_turns].time_s if context_turns < len(kept) else stretch.end_s
    scored = tuple(r for r in stretch.dialogue.references if r.reply_span[1] >= first_s - 1e-6)
    return StretchEpisode(replace(episode, turns=kept), context_turns, scored)


def video_fraction(video_id: str, seed: str) -> float:
    digest = hashlib.sha256(f"rl-prompts|{seed}|{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_videos(video_ids: set[str], cfg: RLPromptConfig) -> set[str]:
    """The videos whose prompts are validation prompts: those whose hash fraction is below
    `validation_share`; with two or more videos, each side keeps at least one (the lowest fraction
    goes to validation, as the corpus splits do), with one video all train."""
    videos = sorted(video_ids, key=lambda v: (video_fraction(v, cfg.split_seed), v))
    held = {v for v in videos if video_fraction(v, cfg.split_seed) < cfg.validation_share}
    if len(videos) >= 2 and cfg.validation_share > 0:
        if not held:
            held = {videos[0]}
        elif held == set(videos):
            held.discard(videos[-1])
    return held


def split_prompts(stretches: list[RLStretch], cfg: RLPromptConfig) -> tuple[list[RLStretch], list[RLStretch]]:
    """(training, validation) prompts, split by video (`held_videos`)."""
    held = held_videos({s.dialogue.video_id for s in stretches}, cfg)
    return ([s for s in stretches if s.dialogue.video_id not in held],
            [s for s in stretches if s.dialogue.video_id in held])


@dataclass
class RLPrompts:
    train: list[RLStretch]
    validation: list[RLStretch]
    dialogues: int
    dropped: dict[str, int]

    def summary(self) -> dict:
        return {"dialogues": self.dialogues, "prompts_train": len(self.train),
                "prompts_validation": len(self.validation), "stretches_dropped": dict(sorted(self.dropped.items()))}


def build_rl_prompts(dialogues: list[Dialogue], cfg: RLPromptConfig, episode_config: EpisodeConfig,
                     frame_timeline) -> RLPrompts:
    """Every RL prompt of a split's dialogues, split into GRPO training and validation prompts."""
    dropped: Counter = Counter()
    stretches = [s for d in dialogues for s in dialogue_stretches(d, cfg, episode_config, frame_timeline, dropped)]
    train, validation = split_prompts(stretches, cfg)
    return RLPrompts(train, validation, len(dialogues), dict(dropped))
