"""Judges for the reward and the scorer: an LLM over an OpenAI-compatible endpoint, and an offline one.

A judge answers two kinds of question in batches:
- `score_replies`: how well does a reply cover a reference answer, on 1..scale (scale 5 for the
  RL reward, 3 for the ProactiveVideoQA rubric);
- `is_repetition`: is all the information of a reply already in the earlier replies?
A failed call (HTTP error, unparseable answer) is `None`: callers drop it, never score it 0.

A score reply is text; how a number is read from it is a choice (`SCORE_PARSERS`), and published
scorers differ: ProactiveVideoQA's scorer reads the first character (`first-char`, the default
for `score`), a third-party port the last 1-3 digit number (`last-number`); `lenient` is this
project's reading (a leading digit after quotes, markdown or `Score:`, else the one lone digit),
which the RL reward's judge keeps. `Judge.judge_texts` returns the replies unparsed, so one round of
judge calls can be read under every parser (`score --compare-parsers`).

`judge_batch` asks both kinds at once so the LLM judge sends them in one `complete_many` and the
endpoint stays saturated.

The offline judge is an approximation for tests and machines without an endpoint, not a
substitute for an LLM: it maps token-overlap F1 onto 1..scale and calls a reply repetitive when
every content token of it already occurs in the earlier replies.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from curation.llm.client import LLMClient


@dataclass(frozen=True)
class ScoreItem:
    question: str
    reference: str
    reply: str
    scale: int = 5


@dataclass(frozen=True)
class RepetitionItem:
    earlier: tuple[str, ...]
    reply: str


class Judge(ABC):
    @abstractmethod
    def score_replies(self, items: Sequence[ScoreItem]) -> list[int | None]:
        """Raw scores in 1..item.scale, or None for a failed call."""

    @abstractmethod
    def is_repetition(self, items: Sequence[RepetitionItem]) -> list[bool | None]:
        """True when all of the reply's information is in the earlier replies; None when failed."""

    def judge_batch(
        self, score_items: Sequence[ScoreItem], repetition_items: Sequence[RepetitionItem]
    ) -> tuple[list[int | None], list[bool | None]]:
        return self.score_replies(score_items), self.is_repetition(repetition_items)

    def judge_texts(
        self, score_items: Sequence[ScoreItem], repetition_items: Sequence[RepetitionItem]
    ) -> tuple[list[str | None], list[bool | None]]:
        """The score replies as text, unparsed (None: a failed call), and the repetition verdicts. A
        judge that scores without text (offline, scripted) answers with the bare digit, which every
        parser reads alike."""
        scores, verdicts = self.judge_batch(score_items, repetition_items)
        return [None if s is None else str(s) for s in scores], verdicts


# ---------------------------------------------------------------- offline (approximation)

_STOPWORDS = frozenset(
    "a an the and or but of to in on at by for with from as is are was were be been being it its "
    "this that these those there here he she they them his her their we you i me my our your "
    "do does did has have had not no so then than too very can will just into over up down out "
    "about what which who whom when where why how all any some more most other such only own same".split()
)


def content_tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in _STOPWORDS]


def overlap_f1(reply: str, reference: str) -> float:
    got, want = content_tokens(reply), content_tokens(reference)
    if not got or not want:
        return 0.0
    common = sum(min(got.count(t), want.count(t)) for t in set(got))
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


class OfflineJudge(Judge):
    """Deterministic stand-in for the LLM judge (documented approximation, see module doc)."""

    def score_replies(self, items: Sequence[ScoreItem]) -> list[int | None]:
        return [1 + round(overlap_f1(i.reply, i.reference) * (i.scale - 1)) for i in items]

    def is_repetition(self, items: Sequence[RepetitionItem]) -> list[bool | None]:
        verdicts: list[bool | None] = []
        for item in items:
            seen = {t for text in item.earlier for t in content_tokens(text)}
            verdicts.append(bool(seen) and set(content_tokens(item.reply)) <= seen)
        return verdicts


# ---------------------------------------------------------------- LLM judge

SCORE_INSTRUCTIONS = {
    5: (
        "You evaluate a video question answering system. Rate how well the predicted answer covers "
        "the key points of the ground-truth answer on this scale:\n"
        "5: fully covered, no significant inaccuracy;\n"
        "4: mostly covered, all key information with minor inaccuracies or rephrasing;\n"
        "3: partially covered, some correct information but key points missing or significant errors;\n"
        "2: largely incorrect, some relevant information but mostly inaccurate or irrelevant;\n"
        "1: incorrect, not relevant to the question or very poor.\n"
        "Output the score digit only."
    ),
    3: (
        "You evaluate a video question answering system. Rate how well the predicted answer covers "
        "the key points of the ground-truth answer on this scale:\n"
        "3: mostly covered, all key information though with minor inaccuracies or rephrasing;\n"
        "2: partially covered, some correct information but significant errors or missing key points;\n"
        "1: incorrect, most information missing, irrelevant to the question or very poor.\n"
        "Output the score digit only."
    ),
}

REPETITION_INSTRUCTION = (
    "You evaluate a multi-turn video question answering system. Decide whether a new reply is "
    "repetitive, that is, whether all of its information is already covered by the previous turns.\n"
    'Answer "yes" if all of it is already covered, "no" if the new reply adds information. '
    'Answer only "yes" or "no".'
)


JudgeParse = Literal["first-char", "last-number", "lenient"]
BENCHMARK_PARSE: JudgeParse = "first-char"  # FORMATS.md: the official judge reads its reply's first character


class JudgeConfig(BaseModel):
    # FACTS.md: the published reward's judge is Qwen3-32B behind an OpenAI-compatible endpoint.
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen3-32B"
    api_key: str | None = Field(None, description="sent as a bearer token; None for a local server")
    # Qwen3 thinks by default; the published reward switches it off per request.
    no_think: bool = True
    max_tokens: int = Field(16, gt=0)
    temperature: float = 0.0
    # How the RL reward reads a score reply (SCORE_PARSERS); `score` has its own `--judge-parse`,
    # the benchmark's by default. `lenient` is the reward's reading since it was written.
    parse: JudgeParse = "lenient"


def _messages(system: str, user: str, cfg: JudgeConfig) -> list[dict[str, str]]:
    if cfg.no_think and "qwen3" in cfg.model.lower():
        user += "/no_think"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def score_messages(item: ScoreItem, cfg: JudgeConfig) -> list[dict[str, str]]:
    if item.scale not in SCORE_INSTRUCTIONS:
        raise ValueError(f"no judge rubric for scale {item.scale} (have {sorted(SCORE_INSTRUCTIONS)})")
    user = (f"Question: {item.question}\nGround Truth Answer: {item.reference}\n"
            f"Predicted Answer: {item.reply}\n")
    return _messages(SCORE_INSTRUCTIONS[item.scale], user, cfg)


def repetition_messages(item: RepetitionItem, cfg: JudgeConfig) -> list[dict[str, str]]:
    user = f"Previous Turns: {' '.join(item.earlier)}\nNew Turn: {item.reply}\n"
    return _messages(REPETITION_INSTRUCTION, user, cfg)


def _strip_thinking(text: str) -> str:
    return re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL).replace("<think>", "").strip()


_LEADING_DIGIT = re.compile(r"""[\s"'*`(\[]*(?:score\s*[:=]?\s*)?([0-9])(?![0-9.]*[0-9])""", re.IGNORECASE)
_OUT_OF = re.compile(r"(?:/|\bout\s+of\b)\s*[0-9]+", re.IGNORECASE)
_LONE_DIGIT = re.compile(r"(?<![0-9.])([0-9])(?![0-9]|\.[0-9])")
_NUMBER_1_TO_3_DIGITS = re.compile(r"(?<![0-9])[0-9]{1,3}(?![0-9])")


def first_char_score(answer: str) -> int | None:
    """ProactiveVideoQA's scorer: the reply's first character is the score digit ("10" reads 1,
    "Score: 2" reads nothing)."""
    return int(answer[0]) if answer[:1].isdigit() and answer[0].isascii() else None


def last_number_score(answer: str) -> int | None:
    """The third-party port: the last number of one to three digits in the reply ("2 (out of 3)"
    reads 3; a longer run of digits is no such number)."""
    found = _NUMBER_1_TO_3_DIGITS.findall(answer)
    return int(found[-1]) if found else None


def lenient_score(answer: str) -> int | None:
    """This project's reading: a reply opening with a digit scores it ("2 (partially covered)"),
    also after quotes, markdown or `Score:`, a number of two or more digits being no digit; else
    the one distinct lone digit left after dropping "out of N" and "/N" ("The score is 2.");
    two different ones are ambiguous."""
    match = _LEADING_DIGIT.match(answer)
    if match is not None:
        return int(match.group(1))
    digits = {int(d) for d in _LONE_DIGIT.findall(_OUT_OF.sub(" ", answer))}
    return digits.pop() if len(digits) == 1 else None


SCORE_PARSERS: dict[str, Callable[[str], int | None]] = {
    "first-char": first_char_score, "last-number": last_number_score, "lenient": lenient_score}


def parse_score(text: str, scale: int, parse: str = BENCHMARK_PARSE) -> int | None:
    """The score of a judge reply under the parser named `parse`, read after the thinking block and
    surrounding whitespace are removed (a transport matter: the benchmark's judge, gpt-4.1, sends
    neither). A number outside 1..scale, no number or an ambiguous reply is a failed judgement
    (None) under every parser."""
    score = SCORE_PARSERS[parse](_strip_thinking(text))
    return score if score is not None and 1 <= score <= scale else None


def parse_yes_no(text: str) -> bool | None:
    answer = _strip_thinking(text).lower().lstrip("\"'* ")
    if answer.startswith("yes"):
        return True
    if answer.startswith("no"):
        return False
    return None


class LLMJudge(Judge):
    """The judge as an OpenAI-compatible chat endpoint behind the project's LLM client."""

    def __init__(self, client: LLMClient, cfg: JudgeConfig | None = None):
        self.client = client
        self.cfg = cfg or JudgeConfig()

    @classmethod
    def from_config(cls, cfg: JudgeConfig, **client_options) -> LLMJudge:
        from curation.llm.client import LLMClient, LLMConfig

        llm = LLMConfig(base_url=cfg.base_url, model=cfg.model, api_key=cfg.api_key, **client_options)
        return cls(LLMClient(llm), cfg)

    def _complete(self, conversations: list[list[dict[str, str]]]) -> list[str | None]:
        if not conversations:
            return []
        from curation.llm.client import LLMFailure, LLMRequest

        requests = [LLMRequest(messages=m, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature)
                    for m in conversations]
        answers = self.client.complete_many(requests)
        return [None if isinstance(a, LLMFailure) else a.text for a in answers]

    def score_replies(self, items: Sequence[ScoreItem]) -> list[int | None]:
        return self.judge_batch(items, [])[0]

    def is_repetition(self, items: Sequence[RepetitionItem]) -> list[bool | None]:
        return self.judge_batch([], items)[1]

    def judge_batch(
        self, score_items: Sequence[ScoreItem], repetition_items: Sequence[RepetitionItem]
    ) -> tuple[list[int | None], list[bool | None]]:
        texts, verdicts = self.judge_texts(score_items, repetition_items)
        scores = [None if t is None else parse_score(t, i.scale, self.cfg.parse)
                  for t, i in zip(texts, score_items, strict=True)]
        return scores, verdicts

    def judge_texts(
        self, score_items: Sequence[ScoreItem], repetition_items: Sequence[RepetitionItem]
    ) -> tuple[list[str | None], list[bool | None]]:
        conversations = [score_messages(i, self.cfg) for i in score_items]
        conversations += [repetition_messages(i, self.cfg) for i in repetition_items]
        texts = self._complete(conversations)
        verdicts = [None if t is None else parse_yes_no(t) for t in texts[len(score_items):]]
        return texts[:len(score_items)], verdicts


def make_judge(kind: str, cfg: JudgeConfig | None = None) -> Judge:
    if kind == "offline":
        return OfflineJudge()
    if kind in ("openai", "llm"):
        return LLMJudge.from_config(cfg or JudgeConfig())
    raise ValueError(f"unknown judge {kind!r}: use 'offline' or 'openai'")
