"""The corpus records: the one contract between the curation pipeline and the trainer.

Every record validates on construction. Field rules live on the fields; cross-field rules
(spans inside the video, windows after their question, ...) live in `invariant_problems`, which
reports every broken rule as (field, message) so `parse_record` can name them all at once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = "1.1"
NO_REPLY = "NO REPLY"

MAX_ID_CHARS = 160
# Room a video id leaves for the ids derived from it: `-s000123` (segments), `-d12-q12` (questions).
DERIVED_ID_RESERVE = 16
MAX_VIDEO_ID_CHARS = MAX_ID_CHARS - DERIVED_ID_RESERVE
_SAFE_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID_CHARS - 1}}}$")


def check_safe_id(value: str) -> str:
    # Ids become file and folder names; anything that could climb out of the output dir is refused.
    if not _SAFE_ID.match(value) or ".." in value:
        raise ValueError(
            f"unsafe id {value!r}: use letters, digits, '.', '_' or '-' (no path separators, "
            "no '..', at most 160 characters, starting with a letter or digit)"
        )
    return value


def check_video_id(value: str) -> str:
    """A safe id short enough that every id derived from it (segments, dialogues, questions) is one too."""
    check_safe_id(value)
    if len(value) > MAX_VIDEO_ID_CHARS:
        raise ValueError(f"video id of {len(value)} characters: at most {MAX_VIDEO_ID_CHARS}, so the ids "
                         f"derived from it stay within {MAX_ID_CHARS}")
    return value


def printable(text: str, limit: int, keep: str = "") -> str:
    """`text` made safe to store and show: lone surrogates and control characters (but those in
    `keep`) escaped, cut to `limit` characters. For quarantine rows, whose ids and details may come
    from hostile input."""
    if len(text) <= limit and all(c.isprintable() or c in keep for c in text):
        return text
    out = "".join(c if c.isprintable() or c in keep else ascii(c)[1:-1] for c in text[: limit + 1])
    return out if len(out) <= limit else out[: max(0, limit - 1)] + "\u2026"


SafeId = Annotated[str, AfterValidator(check_safe_id)]
VideoId = Annotated[str, AfterValidator(check_video_id)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(lambda s: _non_blank(s))]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is blank")
    return text


class Record(BaseModel):
    """Base of every corpus record: strict field set, invariants checked after construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: ClassVar[str]
    id_field: ClassVar[str]

    def record_id(self) -> str:
        return str(getattr(self, self.id_field))

    def invariant_problems(self) -> list[tuple[str, str]]:
        return []

    @model_validator(mode="after")
    def _check_invariants(self) -> Record:
        problems = self.invariant_problems()
        if problems:
            text = "; ".join(f"{field}: {msg}" for field, msg in problems)
            raise PydanticCustomError("invariant", "{text}", {"text": text, "problems": problems})
        return self


def _span_problems(field: str, start_s: float, end_s: float, duration_s: float | None):
    if not start_s < end_s:
        yield field, f"start {start_s:g} s is not before end {end_s:g} s"
    if duration_s is not None and end_s > duration_s + 1e-6:
        yield field, f"ends at {end_s:g} s, after the video's end ({duration_s:g} s)"


class Video(Record):
    table: ClassVar[str] = "videos"
    id_field: ClassVar[str] = "video_id"

    video_id: VideoId
    source: str = Field(min_length=1, description="source family, e.g. web, ego, sample")
    uri: str = Field(min_length=1, description="where the video was acquired from")
    path: str | None = Field(None, description="local copy, relative to the corpus root")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(gt=0)
    duration_s: float = Field(gt=0.0, allow_inf_nan=False)
    fps: float = Field(gt=0.0, allow_inf_nan=False)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    codec: str = Field(min_length=1)
    has_audio: bool
    licence: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class Segment(Record):
    """A timestamped piece of text about a video: an ASR sentence, a narration or a caption."""

    table: ClassVar[str] = "segments"
    id_field: ClassVar[str] = "segment_id"

    segment_id: SafeId
    video_id: VideoId
    start_s: Seconds
    end_s: Seconds
    text: NonEmptyText
    origin: Literal["asr", "narration", "caption"]
    scene_id: int | None = Field(None, ge=0)

    def invariant_problems(self) -> list[tuple[str, str]]:
        return list(_span_problems("end_s", self.start_s, self.end_s, None))


class Scene(Record):
    table: ClassVar[str] = "scenes"
    id_field: ClassVar[str] = "scene_key"

    video_id: VideoId
    scene_id: int = Field(ge=0)
    start_s: Seconds
    end_s: Seconds
    detector: str = Field(min_length=1, description="e.g. adaptive, content, split-long")
    score: float | None = Field(None, description="detector score at the cut that opens it")

    @property
    def scene_key(self) -> str:
        return f"{self.video_id}#{self.scene_id}"

    def invariant_problems(self) -> list[tuple[str, str]]:
        return list(_span_problems("end_s", self.start_s, self.end_s, None))


class UserTurn(BaseModel):
    """A question asked by the user at `time_s` (frames are not stored: the trainer samples them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question_id: SafeId
    time_s: Seconds
    text: NonEmptyText


class ReferenceAnswer(BaseModel):
    """One timestamped reference reply: the published `{question, content, reply_timespan}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question_id: SafeId
    question: NonEmptyText
    answer: NonEmptyText
    reply_span: tuple[Seconds, Seconds]
    evidence: list[str] = Field(default_factory=list, description="segment ids it rests on")
    # True for the reply given as soon as a mid-video question arrives, summarising earlier segments.
    immediate: bool = False


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    generator: str = Field(min_length=1, description="code that wrote it, e.g. curation.text.dialogues")
    model: str = Field(min_length=1)
    prompt_version: str = Field(min_length=1)
    parameters: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class DialogueQuality(BaseModel):
    """The quality gate's figures for one dialogue (`curation.text.dialogue_quality`): the least
    grounded answer's share of content words found in its cited segments, the largest similarity
    between two answers, the largest share of an answer's words that are its question's, the largest
    share of repeated word 3-grams in one text; `gate` names the rules' version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    grounding: float = Field(ge=0.0, le=1.0)
    max_answer_similarity: float = Field(ge=0.0, le=1.0)
    max_restatement: float = Field(ge=0.0, le=1.0)
    repetition: float = Field(ge=0.0, le=1.0)
    gate: str = Field(min_length=1)


class Dialogue(Record):
    table: ClassVar[str] = "dialogues"
    id_field: ClassVar[str] = "dialogue_id"

    dialogue_id: SafeId
    video_id: VideoId
    kind: Literal["single_question", "multi_question"]
    duration_s: float = Field(gt=0.0, allow_inf_nan=False, description="the video's duration")
    user_turns: list[UserTurn] = Field(min_length=1)
    references: list[ReferenceAnswer] = Field(min_length=1)
    provenance: Provenance
    quality: DialogueQuality | None = Field(None, description="quality gate figures; None when the gate was off")

    def invariant_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        asked: dict[str, UserTurn] = {}
        for i, turn in enumerate(self.user_turns):
            if turn.question_id in asked:
                problems.append((f"user_turns.{i}.question_id", f"duplicate id {turn.question_id!r}"))
            asked[turn.question_id] = turn
            if turn.time_s > self.duration_s:
                problems.append(
                    (f"user_turns.{i}.time_s", f"asked at {turn.time_s:g} s, after the video's end ({self.duration_s:g} s)")
                )
        if self.kind == "single_question" and len(self.user_turns) != 1:
            problems.append(("user_turns", f"single_question has {len(self.user_turns)} questions"))
        answered: set[str] = set()
        for i, ref in enumerate(self.references):
            field = f"references.{i}.reply_span"
            start_s, end_s = ref.reply_span
            problems.extend(_span_problems(field, start_s, end_s, self.duration_s))
            turn = asked.get(ref.question_id)
            if turn is None:
                problems.append((f"references.{i}.question_id", f"unknown question {ref.question_id!r}"))
                continue
            answered.add(ref.question_id)
            if start_s < turn.time_s - 1e-6:
                problems.append(
                    (field, f"window starts at {start_s:g} s, before its question is asked ({turn.time_s:g} s)")
                )
            if ref.question != turn.text:
                problems.append((f"references.{i}.question", "differs from the question's user turn"))
        for i, turn in enumerate(self.user_turns):
            if turn.question_id not in answered:
                problems.append((f"user_turns.{i}", f"question {turn.question_id!r} has no reference answer"))
        return problems


QUARANTINE_ID_CHARS = 240
QUARANTINE_DETAIL_CHARS = 4000


class Quarantine(Record):
    """One skipped or failed item, with the stage and a stable, countable reason."""

    table: ClassVar[str] = "quarantine"
    id_field: ClassVar[str] = "item_id"

    item_id: str = Field(min_length=1, description="video id or dialogue id (may be unsafe: it is why)")
    video_id: str
    stage: str = Field(min_length=1)
    reason: str = Field(pattern=r"^[a-z0-9_]+$", description="stable code, e.g. too_short")
    detail: str = ""
    kind: Literal["skip", "error"] = "skip"  # a crash is counted apart from a skip
    raw_replies: str | None = Field(None, description="the LLM's raw replies to the failed request(s), a "
                                                      "JSON file relative to the corpus root")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("item_id", "video_id", "stage", "detail", mode="before")
    @classmethod
    def _storable(cls, value: Any, info) -> Any:
        # The id and detail of a quarantined item often come from the input that was refused (an id
        # with a lone surrogate, a control character): escaped here, so a quarantine row can always
        # be written, and bounded, so a megabyte-long id does not become a megabyte-long row.
        if not isinstance(value, str):
            return value
        if info.field_name == "detail":
            return printable(value, QUARANTINE_DETAIL_CHARS, keep="\n\t")
        return printable(value, QUARANTINE_ID_CHARS)


TABLES: dict[str, type[Record]] = {
    cls.table: cls for cls in (Video, Segment, Scene, Dialogue, Quarantine)
}


def id_of(data: Any, cls: type[Record]) -> str:
    if isinstance(data, dict):
        value = data.get(cls.id_field)
        if value is None and cls is Scene:
            return f"{data.get('video_id')}#{data.get('scene_id')}"
        return str(value) if value is not None else "<no id>"
    return "<not an object>"
