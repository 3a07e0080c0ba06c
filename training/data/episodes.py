"""Streaming episodes: a dialogue and its video as a sequence of user turns with assistant targets.

A video is streamed as user turns of `frames_per_turn` frames each (FACTS.md: 2 frames per turn,
one frame every 2 s by default, at most 90 frames). A turn's time is the time of its LAST frame:
that is the moment the assistant has seen everything in the turn and must speak or stay silent.
A question asked at `time_s` enters as text after the frames of the first turn whose time is at or
after it. Each reference answer sits at one turn inside its reply window: the last such turn by
default (FACTS.md: "each answer sits at the end of its segment's span"), the first one with
`answer_position="start"` (the issue's wording). An `immediate` reply (the summary given when a
mid-video question arrives) sits at the question's own turn. Every other turn's target is the
literal `NO REPLY`. Two answers that land on one turn are resolved by one rule (`place_answers`:
move, else supersede an immediate reply of the same question, else merge in order), so no
target joins "nothing yet" with the answer that contradicts it.

Frame pixels are not decoded here (`decode_episode_frames` does it with the one frame decoder of
`curation.video.frames`), so building and checking an episode's timeline is cheap and pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.skips import Skip
from schemas import NO_REPLY, Dialogue, ReferenceAnswer

STAGE = "episodes"
MAX_VIDEO_S = 180.0  # FACTS.md: both published frame caps (90 at 2 s, 180 at 1 s) cover about 180 s


class EpisodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # FACTS.md: frames every 2 s by default; 1 s (`episodes.seconds_per_frame=1`) was the decisive
    # factor in the paper's SFT ablation.
    seconds_per_frame: float = Field(2.0, gt=0)
    # None: as many frames as cover MAX_VIDEO_S (FACTS.md: 90 frames at 2 s/frame, 180 at 1 s/frame)
    max_frames: int | None = Field(None, ge=1)
    frames_per_turn: int = Field(2, ge=1)  # FACTS.md: 2 frames per user turn in the published data
    answer_position: Literal["end", "start"] = "end"  # FACTS.md: SFT answers sit at the window's end

    @property
    def frame_cap(self) -> int:
        return self.max_frames or max(1, round(MAX_VIDEO_S / self.seconds_per_frame))


@dataclass(frozen=True)
class Turn:
    """One user turn and the assistant's target after it."""

    index: int
    time_s: float  # time of the turn's last frame
    frame_times_s: tuple[float, ...]
    questions: tuple[str, ...] = ()  # text after the frames, in asking order
    reply: str = NO_REPLY
    question_ids: tuple[str, ...] = ()  # the questions whose answers this reply carries

    @property
    def is_silent(self) -> bool:
        return self.reply == NO_REPLY


@dataclass(frozen=True)
class Episode:
    dialogue_id: str
    video_id: str
    video_path: str
    turns: tuple[Turn, ...]
    dropped_questions: tuple[str, ...] = ()  # asked after the last turn (frame cap): not streamed
    dropped_answers: int = 0  # references whose window or question lies after the last turn
    merged_answers: int = 0  # joined after the reply of a turn they could not move off
    late_answers: int = 0  # windows holding no turn time: answered at the first turn after them
    moved_answers: int = 0  # to another turn inside the window, off a turn already holding a reply
    superseded_answers: int = 0  # immediate replies replaced by their own question's answer
    dropped_texts: int = 0  # timed texts (subtitles) after the last turn: not streamed

    @property
    def frame_times_s(self) -> list[float]:
        return [t for turn in self.turns for t in turn.frame_times_s]


@dataclass
class EpisodeCounts:
    """What a pass over a corpus built, and what it skipped (by reason) — never silently swapped."""

    built: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def add_skip(self, skip: Skip) -> None:
        self.skipped[skip.reason] = self.skipped.get(skip.reason, 0) + 1


def split_turns(frame_times_s: list[float], frames_per_turn: int) -> list[tuple[float, ...]]:
    """Consecutive groups of frames; a short last group is kept so the video's end is streamed."""
    return [tuple(frame_times_s[i:i + frames_per_turn])
            for i in range(0, len(frame_times_s), frames_per_turn)]


def first_turn_at_or_after(turn_times_s: list[float], time_s: float) -> int | None:
    for i, t in enumerate(turn_times_s):
        if t >= time_s - 1e-6:
            return i
    return None


def turns_inside(turn_times_s: list[float], span_s: tuple[float, float]) -> list[int]:
    start_s, end_s = span_s
    return [i for i, t in enumerate(turn_times_s) if start_s - 1e-6 <= t <= end_s + 1e-6]


def choose_answer_turn(turn_times_s: list[float], span_s: tuple[float, float],
                       position: str) -> int | None:
    """The turn that carries an answer with window [s, e]: the last (or first) turn inside it.
    If no turn time falls inside (a window shorter than a turn), the first turn after it opens:
    the turn whose frames show the window, answered late rather than dropped (counted)."""
    inside = turns_inside(turn_times_s, span_s)
    if inside:
        return inside[-1] if position == "end" else inside[0]
    return first_turn_at_or_after(turn_times_s, span_s[0])


@dataclass
class _Placed:
    turn: int
    ref: ReferenceAnswer


@dataclass
class PlacementCounts:
    moved: int = 0
    merged: int = 0
    superseded: int = 0
    late: int = 0


def place_answers(refs: list[ReferenceAnswer], turn_times_s: list[float], asked_turn: dict[str, int],
                  position: str) -> tuple[list[_Placed], PlacementCounts]:
    """Every reference on a turn, in time order (window start, an immediate reply first, window
    end), never earlier than its question's turn or than the answer before it. When an answer's
    turn already holds the previous answer, one rule decides:
    1. move: the answer takes the next free turn inside its own window; failing that, the previous
       answer steps back to a free turn inside its window (after the one before it), so both keep
       their order and stay inside their windows;
    2. supersede: what cannot move and lands on its own question's immediate reply replaces it (the
       reply says what was shown *before* the answer; joined, the target would contradict itself);
    3. merge: anything else is joined after the turn's reply, in order (answers to other questions,
       or successive windows of one question that a 4 s turn cannot tell apart)."""
    placed: list[_Placed] = []
    counts = PlacementCounts()
    for ref in refs:
        asked = asked_turn[ref.question_id]
        turn = asked if ref.immediate else choose_answer_turn(turn_times_s, ref.reply_span, position)
        if turn is None:
            continue
        turn = max(turn, asked)
        if placed and turn <= placed[-1].turn:  # the previous answer holds this turn or a later one
            holder = placed[-1]
            later = [i for i in turns_inside(turn_times_s, ref.reply_span) if i > holder.turn]
            before = placed[-2].turn if len(placed) > 1 else -1
            earlier = [i for i in turns_inside(turn_times_s, holder.ref.reply_span)
                       if max(before, asked_turn[holder.ref.question_id] - 1) < i < turn]
            if later:
                turn = later[0]
                counts.moved += 1
            elif earlier:
                holder.turn = earlier[-1]
                counts.moved += 1
            else:
                turn = holder.turn
        counts.late += turn_times_s[turn] > ref.reply_span[1] + 1e-6
        if placed and turn == placed[-1].turn:
            if placed[-1].ref.immediate and placed[-1].ref.question_id == ref.question_id:
                placed[-1] = _Placed(turn, ref)
                counts.superseded += 1
                continue
            counts.merged += 1
        placed.append(_Placed(turn, ref))
    return placed, counts


def build_episode(dialogue: Dialogue, video_path: str | Path, config: EpisodeConfig,
                  frame_timeline) -> Episode:
    """The turn timeline and targets of one dialogue. `frame_timeline(duration_s,
    seconds_per_frame, max_frames)` is `curation.video.frames.frame_timeline` (passed in so the
    timeline has one implementation)."""
    frame_times = list(frame_timeline(dialogue.duration_s, config.seconds_per_frame, config.frame_cap))
    groups = split_turns(frame_times, config.frames_per_turn)
    turn_times = [g[-1] for g in groups]
    questions: list[list[str]] = [[] for _ in groups]
    dropped_q: list[str] = []
    asked_turn: dict[str, int] = {}
    for user_turn in sorted(dialogue.user_turns, key=lambda u: u.time_s):
        i = first_turn_at_or_after(turn_times, user_turn.time_s)
        if i is None:
            dropped_q.append(user_turn.question_id)
            continue
        questions[i].append(user_turn.text)
        asked_turn[user_turn.question_id] = i
    refs = sorted((r for r in dialogue.references if r.question_id in asked_turn),
                  key=lambda r: (r.reply_span[0], not r.immediate, r.reply_span[1]))
    placed, counts = place_answers(refs, turn_times, asked_turn, config.answer_position)
    replies: list[list[str]] = [[] for _ in groups]
    answered: list[list[str]] = [[] for _ in groups]
    for p in placed:
        replies[p.turn].append(p.ref.answer)
        answered[p.turn].append(p.ref.question_id)
    turns = tuple(
        Turn(index=i, time_s=turn_times[i], frame_times_s=groups[i], questions=tuple(questions[i]),
             reply=" ".join(replies[i]) if replies[i] else NO_REPLY, question_ids=tuple(answered[i]))
        for i in range(len(groups))
    )
    return Episode(dialogue_id=dialogue.dialogue_id, video_id=dialogue.video_id,
                   video_path=str(video_path), turns=turns, dropped_questions=tuple(dropped_q),
                   dropped_answers=len(dialogue.references) - len(placed) - counts.superseded,
                   merged_answers=counts.merged, late_answers=counts.late, moved_answers=counts.moved,
                   superseded_answers=counts.superseded)


def add_timed_texts(episode: Episode, texts: list[tuple[float, str]]) -> Episode:
    """The episode with each (time_s, text) (TV subtitles) placed like a question: as text after
    the frames of the first turn at or after its time, after the questions already there."""
    turn_times = [t.time_s for t in episode.turns]
    extra: list[list[str]] = [[] for _ in episode.turns]
    dropped = 0
    for time_s, text in sorted(texts, key=lambda x: x[0]):
        i = first_turn_at_or_after(turn_times, time_s)
        if i is None:
            dropped += 1
        else:
            extra[i].append(text)
    turns = tuple(replace(t, questions=t.questions + tuple(extra[t.index])) for t in episode.turns)
    return replace(episode, turns=turns, dropped_texts=episode.dropped_texts + dropped)


def decode_episode_frames(episode: Episode, max_pixels: int,
                          decode_frames) -> list[np.ndarray] | Skip:
    """All frames of the episode, in turn order, or a Skip when the video cannot be decoded.
    `decode_frames(path, times_s, max_pixels)` is `curation.video.frames.decode_frames`."""
    times = episode.frame_times_s
    if not Path(episode.video_path).is_file():
        return Skip(STAGE, "video_missing", f"{episode.video_path} does not exist")
    try:
        frames = decode_frames(episode.video_path, times, max_pixels)
    except Exception as error:  # any decoder failure on an untrusted file is a counted skip
        return Skip(STAGE, "video_undecodable", f"{episode.video_path}: {type(error).__name__}: {error}")
    if isinstance(frames, Skip):
        return frames
    if len(frames) != len(times):
        return Skip(STAGE, "frames_missing",
                    f"{episode.video_path}: decoded {len(frames)} of {len(times)} frames")
    return list(frames)
