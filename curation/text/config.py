"""Dialogue-writing settings (counts, windows, thresholds, prompt versions). Their own module so the
writer and the validator both read them without importing each other."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class QualityConfig(BaseModel):
    """Thresholds of the quality gate (`curation.text.dialogue_quality`), run after validation."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_grounding: float = Field(0.2, ge=0, le=1, description="share of an answer's content words in its cited "
                                                              "segments (and at least one)")
    misattribution_margin: int = Field(2, ge=1, description="words more in another segment than in the cited ones")
    max_restatement: float = Field(0.75, gt=0, le=1, description="share of an answer's words in its question")
    max_answer_similarity: float = Field(0.7, gt=0, le=1, description="difflib ratio or content-word Jaccard")


class DialogueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_dialogues: int = Field(2, ge=1)  # FACTS.md: two to four question sets per video, by length
    max_dialogues: int = Field(4, ge=1)  # FACTS.md: two to four question sets per video, by length
    seconds_per_dialogue: float = Field(120.0, gt=0, description="one more dialogue per this much video")
    single_question_share: float = Field(0.5, ge=0, le=1)  # FACTS.md: released files mix them half and half
    min_questions: int = Field(2, ge=1)  # issue 4: multi_question asks two to four questions
    max_questions: int = Field(4, ge=1)  # issue 4: multi_question asks two to four questions
    min_answers: int = Field(1, ge=1, description="answers per question (immediate reply not counted)")
    max_answers: int = Field(12, ge=1, description="answers per question (immediate reply not counted)")
    immediate_window_s: float = Field(1.0, gt=0, description="ProactiveVideoQA: reply span = related + 1 s")
    near_duplicate_threshold: float = Field(0.9, gt=0, le=1, description="word-sequence similarity (difflib)")
    restatement_threshold: float = Field(0.8, gt=0, le=1, description="share of answer words in the question")
    repair: bool = True
    # "full": the model cites segment ids (the published shape); "compact": one reply per segment in
    # order (`NO REPLY` allowed), ids filled in by code and, for multi_question, code picks where
    # each question is asked: fewer tokens for small models, the same records.
    output_shape: Literal["full", "compact"] = "full"
    # Bounds on what goes into a request (a video of 200,000 segments in 10 s is an input error,
    # not a request to send): over one, the video's dialogues are a reasoned skip.
    max_segments_per_video: int = Field(2000, ge=1)
    max_segments_per_s: float = Field(4.0, gt=0, description="segments per second of video")
    # Small on purpose: an answer is one or two short sentences (the sample's longest is ~110
    # characters), and a model looping inside a string in a non-Latin script spends over a token
    # per character, so the bounds must leave the whole reply inside max_tokens.
    max_question_chars: int = Field(200, ge=20, le=1000, description="maxLength in the request's schema, "
                                                                      "enforced at parse")
    max_answer_chars: int = Field(300, ge=20, le=2000, description="maxLength in the request's schema, "
                                                                   "enforced at parse")
    max_cited_segments: int = Field(4, ge=1, le=8, description="segment ids one answer may cite (a window "
                                                               "spans adjacent segments)")
    quality: QualityConfig = QualityConfig()
    temperature: float | None = None  # None: the LLM config's
    max_tokens: int | None = None  # None: the LLM config's
    single_question_prompt: int | None = Field(None, description="prompt file version; None = newest")
    multi_question_prompt: int | None = None
    repair_prompt: int | None = None
