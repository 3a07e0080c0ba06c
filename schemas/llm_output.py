"""The shapes an LLM must return, exported as JSON Schema for structured generation.

The LLM cites segment ids; code in `curation.text.dialogues` turns citations into reply windows, so a
window is grounded in real segments by construction and the LLM never writes a timestamp.

`request_schema` narrows a shape to one request: segment ids become an `enum` of that video's own
ids, lists get `maxItems` from its segment count and the configured bounds, and every text field a
`maxLength`. With a server started with xgrammar and `disable_any_whitespace`, SmolLM2-135M then
cited 0 invented ids in 36 dialogues and was cut at max_tokens 0 times in 21 calls (it invented ids
and looped inside strings without). The client checks every reply against the same schema, so a
server without structured outputs meets the same rules.

The compact shapes (`*_compact`) are for small models: one reply per segment, in order, `NO REPLY`
for a segment that says nothing about the question; code fills in the ids (and, for
multi_question, decides where each question is asked), giving the same records.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Bounded so guided decoding must close the list: SmolLM2-135M, unbounded, counted on through
# made-up ids ("-s00010", "-s00011", ...) until max_tokens. A window spans its cited segments, so an
# answer needs a few; the replay answers cite at most 2.
MAX_CITED_SEGMENTS = 8
# Hard caps of every text field (a 2.4-million-character answer was once published); a request's
# own schema takes the configured, tighter ones (`DialogueConfig.max_question_chars` /
# `max_answer_chars`, 200 and 300 by default).
MAX_QUESTION_CHARS = 1000
MAX_ANSWER_CHARS = 2000
MAX_CAPTION_CHARS = 2000


class CitedAnswer(_Out):
    segment_ids: list[str] = Field(min_length=1, max_length=MAX_CITED_SEGMENTS,
                                   description="ids of the segments that show it")
    answer: str = Field(min_length=1, max_length=MAX_ANSWER_CHARS)


class SingleQuestionOutput(_Out):
    """single_question: asked at t = 0; its answer unfolds as the cited segments arrive."""

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    answers: list[CitedAnswer] = Field(min_length=1)


class AskedQuestion(_Out):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    asked_at_segment: str = Field(description="id of the segment at whose start it is asked")
    immediate_reply: str | None = Field(
        None, max_length=MAX_ANSWER_CHARS,
        description="what earlier segments already showed; null when the question opens the video")
    answers: list[CitedAnswer] = Field(min_length=1)


class MultiQuestionOutput(_Out):
    """multi_question: two to four questions asked during playback."""

    questions: list[AskedQuestion] = Field(min_length=1)


class CompactSingleOutput(_Out):
    """single_question, compact: one reply per listed segment, in order ("NO REPLY" for silence)."""

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    replies: list[str] = Field(min_length=1, description="one per segment, in order; NO REPLY when it shows nothing")


class CompactQuestion(_Out):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    immediate_reply: str | None = Field(None, max_length=MAX_ANSWER_CHARS,
                                        description="what earlier segments showed; null for the first question")
    replies: list[str] = Field(min_length=1, description="one per segment of its part, in order")


class CompactMultiOutput(_Out):
    """multi_question, compact: one entry per question in the order given; code chose where each is asked."""

    questions: list[CompactQuestion] = Field(min_length=1)


class SceneCaption(_Out):
    caption: str = Field(min_length=1, max_length=MAX_CAPTION_CHARS)


class JudgeScore(_Out):
    score: int = Field(ge=1, le=5)


LLM_OUTPUTS: dict[str, type[BaseModel]] = {
    "single_question": SingleQuestionOutput,
    "multi_question": MultiQuestionOutput,
    "single_question_compact": CompactSingleOutput,
    "multi_question_compact": CompactMultiOutput,
    "scene_caption": SceneCaption,
    "judge_score": JudgeScore,
}


@cache
def _json_schema(name: str) -> dict[str, Any]:
    return LLM_OUTPUTS[name].model_json_schema()


def json_schema(name: str) -> dict[str, Any]:
    """JSON Schema for `response_format={"type": "json_schema", ...}` of an OpenAI-compatible server."""
    return copy.deepcopy(_json_schema(name))


def instruction_texts() -> Iterator[str]:
    """Every description in the output schemas (text a model may copy instead of answering)."""
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "description" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
    for name in LLM_OUTPUTS:
        yield from walk(_json_schema(name))


@dataclass(frozen=True)
class RequestBounds:
    """What one dialogue request allows: the video's own segment ids (in time order), answers per
    question, questions per dialogue, characters per text; for a compact multi_question request
    the segments of each question's part."""

    segment_ids: tuple[str, ...]
    # No defaults: the published counts are `DialogueConfig`'s, the one place that holds them.
    min_answers: int
    max_answers: int
    min_questions: int
    max_questions: int
    max_question_chars: int = MAX_QUESTION_CHARS
    max_answer_chars: int = MAX_ANSWER_CHARS
    parts: tuple[int, ...] = ()  # compact multi_question: segments per question, in order
    max_cited: int = MAX_CITED_SEGMENTS


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limit}


def _array(items: dict[str, Any], low: int, high: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": low, "maxItems": max(low, high)}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def request_schema(name: str, bounds: RequestBounds) -> dict[str, Any]:
    """The JSON Schema of `name` narrowed to one request (see the module docstring). Every list is
    bounded and every string has a `maxLength`, so guided decoding has to close them."""
    n = len(bounds.segment_ids)
    ids = {"type": "string", "enum": list(bounds.segment_ids)}
    question = _text(bounds.max_question_chars)
    answer = _text(bounds.max_answer_chars)
    immediate = {"anyOf": [answer, {"type": "null"}]}
    low_answers = min(bounds.min_answers, n)
    cited = _object({"segment_ids": _array(ids, 1, min(bounds.max_cited, MAX_CITED_SEGMENTS, n)), "answer": answer})
    answers = _array(cited, low_answers, min(bounds.max_answers, n))
    low_q, high_q = min(bounds.min_questions, n), min(bounds.max_questions, n)
    if name == "single_question":
        return _object({"question": question, "answers": answers})
    if name == "multi_question":
        asked = _object({"question": question, "asked_at_segment": ids, "immediate_reply": immediate,
                         "answers": answers})
        return _object({"questions": _array(asked, low_q, high_q)})
    if name == "single_question_compact":
        return _object({"question": question, "replies": _array(answer, n, n)})
    if name == "multi_question_compact":
        parts = bounds.parts or (n,)
        entry = _object({"question": question, "immediate_reply": immediate,
                         "replies": _array(answer, min(parts), max(parts))})
        return _object({"questions": _array(entry, len(parts), len(parts))})
    raise KeyError(f"no per-request schema for {name!r}")
