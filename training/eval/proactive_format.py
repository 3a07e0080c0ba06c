"""The ProactiveVideoQA file formats: gold records, per-turn frame input, prediction lines, and
converters from our Dialogues (shapes: `shared/spec/FORMATS.md`).

Gold record (one per question): `video`, `question_id`, `duration`, `conversation` (user turns
`{role, content, time}`, the question first; TV adds `Subtitle: ...` turns at their times),
`answer` (`{role, content, related_timespan, reply_timespan}`), with reply_timespan =
[related start, min(related end + 1, duration)]. The benchmark ships one file per task,
`<TASK>/anno.json`: the category is the folder for such a file, else the file name's first word,
unless a record names it or the caller overrides it.
Frame input (`<subset>-frame_input_format.json`): per question, the user turns as Qwen content
lists (image items, then an optional text item), flagged `skip_inference` (feed, do not generate)
or `must_reply` (generate after the forced prefix `I must reply.`).
Prediction line: `{question_id, model_response_list: [{role, content, time}]}` with `NO REPLY`
turns removed. All of them come from outside, so readers validate and report what they refuse.

Question ids are keys kept verbatim (`show_frames=show_s05e24_seg02_clip_25.mp4%Q1` is a real
one); only the Dialogue built for streaming gets safe internal names (training.data.outside_ids).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import NO_REPLY, Dialogue, Provenance, ReferenceAnswer, UserTurn
from training.data.outside_ids import safe_id_for

# ProactiveVideoQA: a reply may come up to 1 s after the related span ends (capped at the video's end).
REPLY_GRACE_S = 1.0


@dataclass(frozen=True)
class GoldAnswer:
    content: str
    related_span_s: tuple[float, float]
    reply_span_s: tuple[float, float]


@dataclass(frozen=True)
class GoldRecord:
    question_id: str
    video: str
    duration_s: float
    question: str
    answers: tuple[GoldAnswer, ...]
    category: str = ""
    question_time_s: float = 0.0  # the benchmark asks at 0; our exported multi-question records later
    # Later user turns (TV's `Subtitle: (Speaker:)text`), fed as text after that turn's frames.
    timed_texts: tuple[tuple[float, str], ...] = ()


@dataclass
class Predictions:
    replies: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    bad_lines: list[str] = field(default_factory=list)  # "line N: why"
    duplicate_ids: list[str] = field(default_factory=list)


def _span(value: Any, what: str) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ValueError(f"{what} must be [start, end], got {value!r}")
    start, end = float(value[0]), float(value[1])
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"{what} is not finite: {value!r}")
    return start, end


def parse_gold_record(row: dict[str, Any], category: str = "") -> GoldRecord:
    """One gold record; raises ValueError naming the question id and the problem."""
    qid = str(row.get("question_id", "<no question_id>"))
    try:
        user_turns = [t for t in row["conversation"] if t.get("role", "user") == "user"]
        if not user_turns:
            raise ValueError("conversation has no user turn")
        answers = []
        for i, ans in enumerate(row["answer"]):
            related = _span(ans.get("related_timespan", ans["reply_timespan"]), f"answer {i} related_timespan")
            reply = _span(ans["reply_timespan"], f"answer {i} reply_timespan")
            if not reply[1] > reply[0]:
                raise ValueError(f"answer {i} has a zero-length reply_timespan {list(reply)}")
            answers.append(GoldAnswer(str(ans["content"]), related, reply))
        if not answers:
            raise ValueError("no answers")
        timed = tuple(sorted((float(t.get("time", 0.0)), str(t["content"])) for t in user_turns[1:]
                             if str(t.get("content", "")).strip()))
        if any(not math.isfinite(t) for t, _ in timed):
            raise ValueError("a user turn's time is not finite")
        return GoldRecord(qid, str(row.get("video", "")), float(row.get("duration", 0.0)),
                          str(user_turns[0]["content"]), tuple(answers),
                          str(row.get("category") or row.get("dataset_name") or category),
                          float(user_turns[0].get("time", 0.0)), timed)
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"gold record {qid}: malformed ({type(error).__name__}: {error})") from None
    except ValueError as error:
        raise ValueError(f"gold record {qid}: {error}") from None


# File stems that name no task: the task is the folder (`WEB/anno.json`).
GENERIC_STEMS = frozenset({"anno", "annotation", "annotations", "gold", "test", "data"})


def category_of_path(path: Path) -> str:
    """`WEB/anno.json` -> WEB; `web-proactivevideoqa_format.json` -> web; `ego.jsonl` -> ego."""
    word = path.stem.split("-")[0].split(".")[0]
    if word.lower() in GENERIC_STEMS and path.parent.name:
        return path.parent.name
    return word


def gold_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a folder stands for every `anno.json` below it (the benchmark's layout)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(path.rglob("anno.json"))
            if not inside:
                raise ValueError(f"{path}: a folder with no <TASK>/anno.json below it")
            found += inside
        else:
            found.append(path)
    return found


def read_json_rows(path: Path) -> list[Any]:
    """A JSON list, or JSONL (one record a line)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def read_gold(path: Path, category: str | None = None) -> list[GoldRecord]:
    """A JSON list or JSONL of gold records. Category: `category` when given, else the record's
    own field, else the folder (`WEB/anno.json`) or the file name (`category_of_path`)."""
    records = [parse_gold_record(row, category_of_path(path)) for row in read_json_rows(path)]
    if category:
        records = [GoldRecord(**{**vars(r), "category": category}) for r in records]
    return records


def read_predictions(path: Path) -> Predictions:
    """Prediction JSONL; malformed lines are reported in `bad_lines`, never silently skipped."""
    found = Predictions()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            qid = str(row["question_id"])
            replies = []
            for turn in row["model_response_list"]:
                if turn.get("role", "assistant") != "assistant":
                    continue
                text = str(turn["content"]).strip()
                time_s = float(turn["time"])
                if not math.isfinite(time_s):
                    raise ValueError(f"time {turn['time']!r} is not finite")
                if text and text != NO_REPLY:
                    replies.append((time_s, text))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            found.bad_lines.append(f"line {number}: {type(error).__name__}: {error}")
            continue
        if qid in found.replies:
            found.duplicate_ids.append(qid)  # the first line for an id wins, as in the public eval
            continue
        found.replies[qid] = sorted(replies, key=lambda r: r[0])
    return found


def prediction_line(question_id: str, replies: Iterable[tuple[float, str]]) -> dict[str, Any]:
    """One prediction line from (turn time, text) pairs; `NO REPLY` turns are left out."""
    kept = [{"role": "assistant", "content": text, "time": float(t)}
            for t, text in replies if text.strip() != NO_REPLY]
    return {"question_id": question_id, "model_response_list": kept}


# ---------------------------------------------------------------- our Dialogue <-> gold

def reply_span_of(related_s: tuple[float, float], duration_s: float) -> tuple[float, float]:
    return related_s[0], min(related_s[1] + REPLY_GRACE_S, duration_s)


def dialogue_to_gold(dialogue: Dialogue, category: str = "") -> list[dict[str, Any]]:
    """One gold record per question of a Dialogue (the benchmark asks one question per record)."""
    records = []
    for turn in dialogue.user_turns:
        answers = [
            {"role": "assistant", "content": ref.answer, "related_timespan": list(ref.reply_span),
             "reply_timespan": list(reply_span_of(ref.reply_span, dialogue.duration_s))}
            for ref in dialogue.references if ref.question_id == turn.question_id
        ]
        records.append({
            "video": dialogue.video_id, "question_id": turn.question_id, "duration": dialogue.duration_s,
            "conversation": [{"role": "user", "content": turn.text, "time": turn.time_s}],
            "answer": answers, **({"category": category} if category else {}),
        })
    return records


def gold_to_dialogue(record: GoldRecord, model: str = "ProactiveVideoQA") -> Dialogue:
    """A single-question Dialogue whose reference windows are the gold related spans. Its ids are
    safe internal names of the outside ones (`safe_id_for`); the outside id stays on the record."""
    asked_s = record.question_time_s
    qid = safe_id_for(record.question_id)
    video_id = safe_id_for(Path(record.video).stem or record.question_id)
    refs = [ReferenceAnswer(question_id=qid, question=record.question, answer=a.content,
                            reply_span=a.related_span_s) for a in record.answers]
    return Dialogue(
        dialogue_id=qid, video_id=video_id, kind="single_question",
        duration_s=record.duration_s,
        user_turns=[UserTurn(question_id=qid, time_s=asked_s, text=record.question)],
        references=refs,
        provenance=Provenance(generator="training.eval.proactive_format", model=model, prompt_version="gold"),
    )


def write_gold(path: Path, dialogues: Sequence[Dialogue], category: str = "") -> int:
    records = [r for d in dialogues for r in dialogue_to_gold(d, category)]
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(records)


# ---------------------------------------------------------------- per-turn frame input

@dataclass(frozen=True)
class FrameInputTurn:
    """One user turn of the frame-input format: its frame files, then optional text."""

    images: tuple[str, ...]
    text: str = ""
    skip_inference: bool = False  # fed, no generation after it
    must_reply: bool = False  # generation forced to start with `I must reply.`


@dataclass(frozen=True)
class FrameInputRecord:
    question_id: str
    turns: tuple[FrameInputTurn, ...]
    system: str | None = None


def _content_items(content: Any) -> tuple[tuple[str, ...], str]:
    """Image paths and the joined text of a Qwen content list (or a bare string)."""
    if isinstance(content, str):
        return (), content
    images, texts = [], []
    for item in content:
        kind = item.get("type")
        if kind == "image":
            images.append(str(item["image"]))
        elif kind == "text":
            texts.append(str(item["text"]))
        else:
            raise ValueError(f"unknown content item type {kind!r}")
    return tuple(images), "\n".join(t for t in texts if t)


def parse_frame_input_record(row: dict[str, Any]) -> FrameInputRecord:
    """One frame-input record; raises ValueError naming the question id and the problem."""
    qid = str(row.get("question_id", "<no question_id>"))
    try:
        system, turns = None, []
        for message in row["conversation"]:
            role = message.get("role", "user")
            if role == "system":
                system = _content_items(message["content"])[1]
            elif role == "user":
                images, text = _content_items(message["content"])
                turns.append(FrameInputTurn(images, text, bool(message.get("skip_inference", False)),
                                            bool(message.get("must_reply", False))))
            else:
                raise ValueError(f"unexpected role {role!r} in a frame-input conversation")
        if not turns:
            raise ValueError("conversation has no user turn")
        return FrameInputRecord(qid, tuple(turns), system)
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"frame-input record {qid}: malformed ({type(error).__name__}: {error})") from None
    except ValueError as error:
        raise ValueError(f"frame-input record {qid}: {error}") from None


def read_frame_input(path: Path) -> list[FrameInputRecord]:
    return [parse_frame_input_record(row) for row in read_json_rows(path)]


def frame_input_row(record: FrameInputRecord) -> dict[str, Any]:
    conversation: list[dict[str, Any]] = []
    if record.system is not None:
        conversation.append({"role": "system", "content": [{"type": "text", "text": record.system}]})
    for turn in record.turns:
        content: list[dict[str, str]] = [{"type": "image", "image": p} for p in turn.images]
        if turn.text:
            content.append({"type": "text", "text": turn.text})
        message: dict[str, Any] = {"role": "user", "content": content}
        if turn.skip_inference:
            message["skip_inference"] = True
        if turn.must_reply:
            message["must_reply"] = True
        conversation.append(message)
    return {"question_id": record.question_id, "conversation": conversation}


def write_frame_input(path: Path, records: Sequence[FrameInputRecord]) -> int:
    rows = [frame_input_row(r) for r in records]
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(rows)


def frame_input_times(record: FrameInputRecord, seconds_per_frame: float) -> list[float]:
    """Video time of each turn, which the format does not carry: the time of the turn's last frame
    when frames are sampled every `seconds_per_frame` from 0 (our episodes' rule); a turn without
    frames shares the time of the frames before it."""
    times, seen = [], 0
    for turn in record.turns:
        seen += len(turn.images)
        times.append(round(max(seen - 1, 0) * seconds_per_frame, 3))
    return times
