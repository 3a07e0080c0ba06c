"""The MMDuet2 release's training formats, both directions: one converter per format.

- ms-swift SFT JSONL (one dialogue a line): `{"messages": [system, user "<image><image>text",
  assistant "NO REPLY" | reply, ...], "images": [{"path": ...}, ...], "metadata": {...}}`;
  `sft_record` writes one line from an episode, `read_swift_sft` reads a file back into episodes.
- verl RL parquet (one RL prompt a row) and its `...-user_turns.json` side file: `verl_row` writes
  one row (and its side-file entry) from an RL stretch, `read_verl_rl` reads both back.
Shapes: `shared/spec/FORMATS.md`. Frames are pre-extracted JPEG folders
(`training.data.frame_folders`), one per clip, `<video_id>-<start>s_<end>s/000001.jpg`, ...

Readers return `ReleasedEpisode`s: an `Episode` (turn times, frame times, text, targets) with the
frame files it streams, so SFT and GRPO train on released data exactly as on our corpus (same
chat template, same streaming loop). What the formats do not carry, and the rule used instead:
- frame times: `<start>` of the clip folder plus (frame number - 1) x the frame interval (from
  the metadata, else `<N>_sec_per_frame` in the file name, else the reader's default); a turn's
  time is its last frame's time (our episodes' rule). RL rows use `model_pred_timestamps` as the
  turn times when it has one entry per side-file turn (our export writes exactly that).
- the side file is indexed by the user-turn number counted from the prompt's first user turn.
- the system prompt in a released record is read but the trainer keeps its configured one.
A record these readers cannot use (no frames, a `videos` item instead of frames, unpaired
placeholders, a zero-length reference window) is a counted `Skip`, never a crash.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.skips import Skip
from schemas import NO_REPLY, Dialogue, ReferenceAnswer
from training.data.chat_template import questions_text
from training.data.episodes import Episode, Turn
from training.data.frame_folders import resolve_frame
from training.data.outside_ids import safe_id_for

STAGE = "mmduet2_import"
IMAGE = "<image>"
_CLIP = re.compile(r"^(?P<video>.+)-(?P<start>[0-9.]+)s_(?P<end>[0-9.]+)s$")
_SPF = re.compile(r"(?<![0-9.])([0-9]+(?:\.[0-9]+)?)_sec_per_frame")


@dataclass(frozen=True)
class ReleasedEpisode:
    """An episode read from a released file, with the frame files it streams (turn order).
    RL rows add: the leading turns fed with their reference replies, the references the reward
    scores, and the replies already in the prompt."""

    episode: Episode
    frame_paths: tuple[Path, ...]
    outside_id: str = ""
    context_turns: int = 0
    references: tuple[ReferenceAnswer, ...] = ()
    prev_replies: tuple[str, ...] = ()


@dataclass
class ImportCounts:
    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def add_skip(self, skip: Skip) -> None:
        self.skipped[skip.reason] = self.skipped.get(skip.reason, 0) + 1


def seconds_per_frame_of(path: Path, default: float) -> float:
    match = _SPF.search(path.name)
    return float(match.group(1)) if match else default


def frame_time(image: str, seconds_per_frame: float) -> float | None:
    """`.../<video_id>-<start>s_<end>s/000007.jpg` -> start + 6 x spf; None when the path does not
    follow the release's layout."""
    parts = Path(image).parts
    match = _CLIP.match(parts[-2]) if len(parts) >= 2 else None
    stem = Path(image).stem
    if match is None or not stem.isdigit() or int(stem) < 1:
        return None
    return round(float(match.group("start")) + (int(stem) - 1) * seconds_per_frame, 3)


def clip_video_id(image: str) -> str:
    parts = Path(image).parts
    match = _CLIP.match(parts[-2]) if len(parts) >= 2 else None
    return match.group("video") if match else ""


# ---------------------------------------------------------------- writing

def user_content(n_images: int, text: str) -> str:
    return IMAGE * n_images + text


def sft_record(episode: Episode, frame_paths: Sequence[str], system_prompt: str,
               metadata: dict[str, Any]) -> dict[str, Any]:
    """One ms-swift SFT line: every user turn (its frames' placeholders, then its text) followed by
    its target (`NO REPLY` or the reply)."""
    if len(frame_paths) != len(episode.frame_times_s):
        raise ValueError(f"{episode.dialogue_id}: {len(frame_paths)} frame files for "
                         f"{len(episode.frame_times_s)} frames")
    messages = [{"role": "system", "content": system_prompt}]
    for turn in episode.turns:
        messages.append({"role": "user", "content": user_content(len(turn.frame_times_s),
                                                                 questions_text(turn.questions))})
        messages.append({"role": "assistant", "content": turn.reply})
    return {"messages": messages, "images": [{"path": p} for p in frame_paths], "metadata": metadata}


@dataclass(frozen=True)
class RLStretch:
    """One RL prompt: the rollout covers the turns whose time lies in [start_s, end_s]; the turns in
    [start_s - context_s, start_s) enter the prompt with their reference replies as context."""

    dialogue: Dialogue
    start_s: float
    end_s: float
    context_s: float = 0.0


def stretch_question_id(stretch: RLStretch) -> str:
    """The row's key: the dialogue id and the stretch, so stretches of one dialogue never collide."""
    return f"{stretch.dialogue.dialogue_id}-{stretch.start_s:g}s_{stretch.end_s:g}s"


def stretch_turns(episode: Episode, stretch: RLStretch) -> tuple[list[Turn], list[Turn]]:
    """(context turns, rollout turns) of the episode for this stretch."""
    eps = 1e-6
    context = [t for t in episode.turns if stretch.start_s - stretch.context_s - eps <= t.time_s < stretch.start_s - eps]
    rollout = [t for t in episode.turns if stretch.start_s - eps <= t.time_s <= stretch.end_s + eps]
    return context, rollout


def verl_row(stretch: RLStretch, episode: Episode, frame_path_of: dict[float, str], system_prompt: str,
             index: int, data_source: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | Skip:
    """One verl RL row and its side-file entry (every turn of the prompt and the rollout, each as
    Qwen content items). `frame_path_of` maps a frame time to its file."""
    context, rollout = stretch_turns(episode, stretch)
    if not rollout:
        return Skip("mmduet2_export", "empty_stretch", f"{stretch_question_id(stretch)}: no turn in the stretch")
    qid = stretch_question_id(stretch)
    prompt: list[dict[str, str]] = [{"role": "system", "content": system_prompt}]
    images: list[dict[str, str]] = []
    for turn in [*context, rollout[0]]:
        prompt.append({"role": "user", "content": user_content(len(turn.frame_times_s), questions_text(turn.questions))})
        images += [{"type": "image", "image": frame_path_of[t]} for t in turn.frame_times_s]
        if turn is not rollout[0]:
            prompt.append({"role": "assistant", "content": turn.reply})
    side = []
    for turn in [*context, *rollout]:
        content = [{"type": "image", "image": frame_path_of[t]} for t in turn.frame_times_s]
        if turn.questions:
            content.append({"type": "text", "text": questions_text(turn.questions)})
        side.append({"content": content})
    # Windows that closed before the rollout starts were shown as context, not generated: not scored.
    first_s = rollout[0].time_s
    answers = [{"question": r.question, "content": r.answer, "reply_timespan": list(r.reply_span)}
               for r in stretch.dialogue.references
               if r.reply_span[1] >= first_s and r.reply_span[0] <= stretch.end_s]
    row = {
        "data_source": data_source,
        "prompt": prompt,
        "images": images,
        "reward_model": {"ground_truth": {
            "question_id": qid, "answer": answers,
            "model_pred_timestamps": [t.time_s for t in [*context, *rollout]],
            "prev_assistant_replies": [t.reply for t in context if not t.is_silent],
        }},
        "extra_info": {"index": index,
                       "tools_kwargs": {"online_video_provider": {"execute_kwargs": {"question_id": qid}}}},
    }
    return row, side


# ---------------------------------------------------------------- reading

def _episode_from_turns(outside_id: str, turns: list[tuple[list[str], str, str]], frames_root: Path,
                        seconds_per_frame: float, turn_times_s: list[float] | None
                        ) -> tuple[Episode, tuple[Path, ...]] | Skip:
    """An episode from (frame paths, text, target) per turn."""
    all_images = [p for images, _, _ in turns for p in images]
    if not all_images:
        return Skip(STAGE, "no_frames", f"{outside_id}: no frame")
    built, paths = [], []
    for i, (images, text, target) in enumerate(turns):
        times = [frame_time(p, seconds_per_frame) for p in images]
        if any(t is None for t in times):
            return Skip(STAGE, "frame_path_layout", f"{outside_id}: {images} not <clip>-<s>s_<e>s/NNNNNN.jpg")
        if turn_times_s is not None:
            time_s = turn_times_s[i]
        elif times:
            time_s = times[-1]
        else:  # a text-only turn shares the time of the frames before it
            time_s = built[-1].time_s if built else 0.0
        built.append(Turn(index=i, time_s=float(time_s), frame_times_s=tuple(times),  # type: ignore[arg-type]
                          questions=(text,) if text else (), reply=target))
        paths += [resolve_frame(frames_root, p) for p in images]
    video_id = safe_id_for(clip_video_id(all_images[0]) or outside_id)
    episode = Episode(dialogue_id=safe_id_for(outside_id), video_id=video_id, video_path="", turns=tuple(built))
    return episode, tuple(paths)


def _split_placeholders(content: str, n_left: int) -> tuple[int, str] | None:
    n = 0
    while content.startswith(IMAGE, n * len(IMAGE)):
        n += 1
    text = content[n * len(IMAGE):]
    if IMAGE in text or n > n_left:
        return None  # placeholders after text, or more than images: not this format
    return n, text


def parse_sft_line(row: dict[str, Any], number: int, frames_root: Path, seconds_per_frame: float
                   ) -> ReleasedEpisode | Skip:
    metadata = row.get("metadata") or {}
    outside_id = str(metadata.get("question_id") or f"line-{number}")
    if "videos" in row and not row.get("images"):
        return Skip(STAGE, "video_items_unsupported", f"{outside_id}: `videos` items, not frame files")
    images = [i["path"] if isinstance(i, dict) else str(i) for i in row.get("images") or []]
    spf = float(metadata.get("seconds_per_frame") or seconds_per_frame)
    turns: list[tuple[list[str], str, str]] = []
    at = 0
    messages = [m for m in row["messages"] if m.get("role") != "system"]
    for k, message in enumerate(messages):
        if message.get("role") != "user":
            continue
        split = _split_placeholders(str(message["content"]), len(images) - at)
        if split is None:
            return Skip(STAGE, "placeholder_layout", f"{outside_id}: user turn {k}: placeholders not before the text")
        n, text = split
        answer = messages[k + 1] if k + 1 < len(messages) and messages[k + 1].get("role") == "assistant" else None
        if answer is None:
            return Skip(STAGE, "unanswered_turn", f"{outside_id}: user turn {k} has no assistant turn after it")
        turns.append((images[at:at + n], text, str(answer["content"]).strip() or NO_REPLY))
        at += n
    if at != len(images):
        return Skip(STAGE, "placeholder_count", f"{outside_id}: {at} placeholders for {len(images)} images")
    got = _episode_from_turns(outside_id, turns, frames_root, spf, None)
    if isinstance(got, Skip):
        return got
    return ReleasedEpisode(got[0], got[1], outside_id)


def read_swift_sft(path: Path, frames_root: Path | None = None, seconds_per_frame: float = 2.0
                   ) -> tuple[list[ReleasedEpisode], ImportCounts]:
    """Episodes of a released SFT JSONL; frame paths relative to `frames_root` (default: its folder)."""
    root = frames_root or path.parent
    spf = seconds_per_frame_of(path, seconds_per_frame)
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
    return parse_each(lines, lambda line, n: parse_sft_line(json.loads(line), n, root, spf), "malformed_line", "line")


def parse_each(numbered, parse, reason: str, what: str) -> tuple[list[ReleasedEpisode], ImportCounts]:
    """`parse(item, number)` of every (number, item); a malformed one is a counted skip, never a crash."""
    counts, out = ImportCounts(), []
    for number, item in numbered:
        try:
            got = parse(item, number)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            got = Skip(STAGE, reason, f"{what} {number}: {type(error).__name__}: {error}")
        if isinstance(got, Skip):
            counts.add_skip(got)
        else:
            out.append(got)
            counts.read += 1
    return out, counts


def user_turns_path(parquet: Path) -> Path:
    """The side file of a released RL parquet: `<name>-user_turns.json` beside `<name>-{train,val}.parquet`,
    else the only `*user_turns.json` in its folder."""
    stem = re.sub(r"-(train|val|validation|test)$", "", parquet.stem)
    named = parquet.with_name(f"{stem}-user_turns.json")
    if named.is_file():
        return named
    found = sorted(parquet.parent.glob("*user_turns.json"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(f"{parquet}: no {named.name} beside it (pass the side file explicitly)")


def parse_verl_row(row: dict[str, Any], side: dict[str, list], frames_root: Path, seconds_per_frame: float
                   ) -> ReleasedEpisode | Skip:
    truth = row["reward_model"]["ground_truth"]
    outside_id = str(truth["question_id"])
    if outside_id not in side:
        return Skip(STAGE, "no_user_turns", f"{outside_id}: not in the user-turn side file")
    prompt = [m for m in row["prompt"] if m.get("role") != "system"]
    users = [m for m in prompt if m.get("role") == "user"]
    replies = [str(m["content"]) for m in prompt if m.get("role") == "assistant"]
    context_turns = len(users) - 1
    if context_turns < 0 or len(replies) != context_turns or (prompt and prompt[-1].get("role") != "user"):
        return Skip(STAGE, "prompt_layout", f"{outside_id}: the prompt must alternate and end with a user turn")
    turns: list[tuple[list[str], str, str]] = []
    for i, entry in enumerate(side[outside_id]):
        images = [str(c["image"]) for c in entry["content"] if c.get("type") == "image"]
        text = "\n".join(str(c["text"]) for c in entry["content"] if c.get("type") == "text")
        turns.append((images, text, replies[i].strip() if i < context_turns else NO_REPLY))
    if len(turns) <= context_turns:
        return Skip(STAGE, "no_user_turns", f"{outside_id}: the side file ends inside the prompt")
    stamps = [float(t) for t in truth.get("model_pred_timestamps") or []]
    got = _episode_from_turns(outside_id, turns, frames_root, seconds_per_frame,
                              stamps if len(stamps) == len(turns) else None)
    if isinstance(got, Skip):
        return got
    qid = safe_id_for(outside_id)
    refs = []
    for a in truth["answer"]:
        start_s, end_s = (float(x) for x in a["reply_timespan"])
        if not (math.isfinite(start_s) and math.isfinite(end_s) and 0 <= start_s < end_s):
            return Skip(STAGE, "bad_reference", f"{outside_id}: reply_timespan {[start_s, end_s]}")
        refs.append(ReferenceAnswer(question_id=qid, question=str(a["question"]), answer=str(a["content"]),
                                    reply_span=(start_s, end_s)))
    return ReleasedEpisode(got[0], got[1], outside_id, context_turns, tuple(refs),
                           tuple(str(r) for r in truth.get("prev_assistant_replies") or []))


def read_verl_rl(parquet: Path, side_file: Path | None = None, frames_root: Path | None = None,
                 seconds_per_frame: float = 2.0) -> tuple[list[ReleasedEpisode], ImportCounts]:
    """RL episodes of a released verl parquet and its user-turn side file."""
    import pyarrow.parquet as pq

    root = frames_root or parquet.parent
    side = json.loads((side_file or user_turns_path(parquet)).read_text(encoding="utf-8"))
    spf = seconds_per_frame_of(parquet, seconds_per_frame)
    return parse_each(enumerate(pq.read_table(parquet).to_pylist()),
                      lambda row, _: parse_verl_row(row, side, root, spf), "malformed_row", "row")
