"""From a parsed LLM reply to a `Dialogue`: citations become reply windows, so every window is
grounded in real segments by construction. A compact reply (one reply per segment, no ids) is
first turned into the full shape (`expand_compact`), so both shapes give the same records."""

from __future__ import annotations

from typing import Any

from curation.text.config import DialogueConfig
from curation.text.dialogue_requests import question_parts
from schemas.records import (
    NO_REPLY,
    Dialogue,
    Provenance,
    ReferenceAnswer,
    Segment,
    UserTurn,
    Video,
)


def _is_silent(reply: object) -> bool:
    return isinstance(reply, str) and " ".join(reply.upper().replace(".", " ").split()) == NO_REPLY


def expand_compact(kind: str, data: dict[str, Any], segments: list[Segment], cfg: DialogueConfig) -> tuple[dict[str, Any], list[str]]:
    """A compact reply in the full shape: reply i of a question cites segment i of its run; `NO
    REPLY`s cite nothing; question k is asked at the first segment of run k (`question_parts`).
    Returns the full-shape data and the problems met (a wrong number of replies)."""
    problems: list[str] = []
    ids = [s.segment_id for s in segments]
    if kind == "single_question":
        runs = [(0, len(ids))]
        asked = [{"question": data.get("question"), "replies": data.get("replies") or []}]
    else:
        sizes = question_parts(len(ids), cfg)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        runs = list(zip(starts, sizes, strict=True))
        asked = list(data.get("questions") or [])
        if len(asked) != len(runs):
            problems.append(f"{len(asked)} questions; write exactly {len(runs)}, one per run of segments")
    full = []
    for qi, (q, (start, size)) in enumerate(zip(asked, runs, strict=False)):
        replies = list(q.get("replies") or [])
        if len(replies) != size:
            problems.append(f"question {qi + 1}: {len(replies)} replies; write exactly {size}, one per segment")
        answers = [{"segment_ids": [ids[start + i]], "answer": r}
                   for i, r in enumerate(replies[:size]) if not _is_silent(r)]
        full.append({"question": q.get("question"), "asked_at_segment": ids[start],
                     "immediate_reply": q.get("immediate_reply") if start > 0 else None, "answers": answers})
    if kind == "single_question":
        return {"question": full[0]["question"], "answers": full[0]["answers"]}, problems
    return {"questions": full}, problems


def _window(ids: list[str], by_id: dict[str, Segment], label: str, problems: list[str]) -> tuple[list[str], tuple[float, float]] | None:
    known = []
    for segment_id in ids:
        if segment_id in by_id:
            if segment_id not in known:
                known.append(segment_id)
        else:
            problems.append(f"{label}: cites {segment_id!r}, which is not one of the listed segment ids")
    if not known:
        return None
    known.sort(key=lambda i: (by_id[i].start_s, by_id[i].end_s))
    return known, (min(by_id[i].start_s for i in known), max(by_id[i].end_s for i in known))


def _text(value: object, label: str, problems: list[str]) -> str | None:
    if isinstance(value, str) and value.strip():
        return " ".join(value.split())
    problems.append(f"{label}: is blank")
    return None


def dialogue_from_output(kind: str, data: dict, dialogue_id: str, video: Video, segments: list[Segment],
                         provenance: Provenance, cfg: DialogueConfig) -> tuple[Dialogue | None, list[str]]:
    """The dialogue the LLM's parsed output describes (built without validation: the caller runs
    `dialogue_problems`), and the problems met while reading citations."""
    by_id = {s.segment_id: s for s in segments}
    problems: list[str] = []
    if kind == "single_question":
        asked = [{"question": data.get("question"), "asked_at_segment": None, "immediate_reply": None,
                  "answers": data.get("answers") or []}]
    else:
        asked = list(data.get("questions") or [])
    turns: list[UserTurn] = []
    refs: list[ReferenceAnswer] = []
    for qi, q in enumerate(asked):
        label = f"question {qi + 1}"
        text = _text(q.get("question"), label, problems)
        time_s = 0.0
        if kind == "multi_question":
            at = by_id.get(q.get("asked_at_segment") or "")
            if at is None:
                problems.append(f"{label}: asked_at_segment {q.get('asked_at_segment')!r} is not one of the "
                                "listed segment ids")
                continue
            time_s = at.start_s
        if text is None:
            continue
        qid = f"{dialogue_id}-q{qi}"
        turns.append(UserTurn.model_construct(question_id=qid, time_s=time_s, text=text))
        immediate = q.get("immediate_reply")
        if isinstance(immediate, str) and immediate.strip():
            refs.append(ReferenceAnswer.model_construct(
                question_id=qid, question=text, answer=" ".join(immediate.split()), evidence=[], immediate=True,
                reply_span=(time_s, min(time_s + cfg.immediate_window_s, video.duration_s))))
        for ai, answer in enumerate(q.get("answers") or []):
            alabel = f"{label}, answer {ai + 1}"
            body = _text(answer.get("answer"), alabel, problems)
            window = _window(list(answer.get("segment_ids") or []), by_id, alabel, problems)
            if body is None or window is None:
                if window is None and answer.get("segment_ids"):
                    problems.append(f"{alabel}: cites no listed segment, so it has no reply window")
                continue
            refs.append(ReferenceAnswer.model_construct(question_id=qid, question=text, answer=body,
                                                        reply_span=window[1], evidence=window[0], immediate=False))
    if not turns or not refs:
        problems.append("no question with a grounded answer")
        return None, problems
    turns.sort(key=lambda t: t.time_s)
    order = {t.question_id: i for i, t in enumerate(turns)}
    refs.sort(key=lambda r: (order.get(r.question_id, 0), not r.immediate, r.reply_span))
    dialogue = Dialogue.model_construct(dialogue_id=dialogue_id, video_id=video.video_id, kind=kind,
                                        duration_s=video.duration_s, user_turns=turns, references=refs,
                                        provenance=provenance)
    return dialogue, problems
