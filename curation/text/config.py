"""Dialogue-writing settings (counts, windows, thresholds, prompt versions). Their own module so the
writer and the validator both read them without importing each other."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
    temperature: float | None = None  # None: the LLM config's
    max_tokens: int | None = None  # None: the LLM config's
    single_question_prompt: int | None = Field(None, description="prompt file version; None = newest")
    multi_question_prompt: int | None = None
    repair_prompt: int | None = None
