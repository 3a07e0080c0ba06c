"""The ProactiveVideoQA file formats: gold records, prediction lines, and converters from our Dialogues.

Gold record (one per question): `video`, `question_id`, `duration`, `conversation` (user turns
`{role, content, time}`, the question first), `answer` (`{role, content, related_timespan,
reply_timespan}`), with reply_timespan = [related start, min(related end + 1, duration)].
Prediction line: `{question_id, model_response_list: [{role, content, time}]}` with `NO REPLY`
turns removed. Both come from outside, so readers validate and report what they refuse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import NO_REPLY, Dialogue, Provenance, ReferenceAnswer, UserTurn

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
        return GoldRecord(qid, str(row.get("video", "")), float(row.get("duration", 0.0)),
                          str(user_turns[0]["content"]), tuple(answers),
                          str(row.get("category") or row.get("dataset_name") or category))
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"gold record {qid}: malformed ({type(error).__name__}: {error})") from None
    except ValueError as error:
        raise ValueError(f"gold record {qid}: {error}") from None


def read_gold(path: Path) -> list[GoldRecord]:
    """A JSON list or JSONL of gold records; records without a category take the file's stem."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    rows = json.loads(text) if stripped.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    category = path.stem.split("-")[0].split(".")[0]
    return [parse_gold_record(row, category) for row in rows]


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
    """A single-question Dialogue whose reference windows are the gold related spans."""
    asked_s = 0.0
    video_id = Path(record.video).stem or record.question_id
    refs = [ReferenceAnswer(question_id=record.question_id, question=record.question, answer=a.content,
                            reply_span=a.related_span_s) for a in record.answers]
    return Dialogue(
        dialogue_id=record.question_id, video_id=video_id, kind="single_question",
        duration_s=record.duration_s,
        user_turns=[UserTurn(question_id=record.question_id, time_s=asked_s, text=record.question)],
        references=refs,
        provenance=Provenance(generator="training.eval.proactive_format", model=model, prompt_version="gold"),
    )


def write_gold(path: Path, dialogues: Sequence[Dialogue], category: str = "") -> int:
    records = [r for d in dialogues for r in dialogue_to_gold(d, category)]
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(records)
