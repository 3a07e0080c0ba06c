"""The shapes an LLM must return, exported as JSON Schema for structured generation.

The LLM cites segment ids; code in `curation.text.dialogues` turns citations into reply windows, so a
window is grounded in real segments by construction and the LLM never writes a timestamp.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Bounded so guided decoding must close the list: SmolLM2-135M, unbounded, counted on through
# made-up ids ("-s00010", "-s00011", ...) until max_tokens (issue 21). A window spans its cited
# segments, so an answer needs a few; the replay answers cite at most 2. A per-id `pattern` was
# tried too: unbounded, the model looped inside one id; bounded (`{0,143}`), vLLM 0.32's xgrammar
# failed the request. An enum of the video's own ids (a schema per request) is the next step.
MAX_CITED_SEGMENTS = 8


class CitedAnswer(_Out):
    segment_ids: list[str] = Field(min_length=1, max_length=MAX_CITED_SEGMENTS,
                                   description="ids of the segments that show it")
    answer: str = Field(min_length=1)


class SingleQuestionOutput(_Out):
    """single_question: asked at t = 0; its answer unfolds as the cited segments arrive."""

    question: str = Field(min_length=1)
    answers: list[CitedAnswer] = Field(min_length=1)


class AskedQuestion(_Out):
    question: str = Field(min_length=1)
    asked_at_segment: str = Field(description="id of the segment at whose start it is asked")
    immediate_reply: str | None = Field(
        None, description="what earlier segments already showed; null when the question opens the video"
    )
    answers: list[CitedAnswer] = Field(min_length=1)


class MultiQuestionOutput(_Out):
    """multi_question: two to four questions asked during playback."""

    questions: list[AskedQuestion] = Field(min_length=1)


class SceneCaption(_Out):
    caption: str = Field(min_length=1)


class JudgeScore(_Out):
    score: int = Field(ge=1, le=5)


LLM_OUTPUTS: dict[str, type[BaseModel]] = {
    "single_question": SingleQuestionOutput,
    "multi_question": MultiQuestionOutput,
    "scene_caption": SceneCaption,
    "judge_score": JudgeScore,
}


def json_schema(name: str) -> dict[str, Any]:
    """JSON Schema for `response_format={"type": "json_schema", ...}` of an OpenAI-compatible server."""
    return LLM_OUTPUTS[name].model_json_schema()
