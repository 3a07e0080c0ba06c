"""The quality gate: rules a dialogue must pass after it validates, because validity is not quality.

A small model behind a JSON grammar writes structurally valid nonsense: questions "5.1" and
"bikes", answers "0.1", "text", "]}{", "question1", an answer about the man in a suit citing the
segment about a bollard, answers restating their question, near-duplicate answers (FACTS.md
"Dialogue quality"). Each rule here names one such failure; `assess_dialogue` returns the
dialogue's quality figures (stored on its row) and every rule it breaks, as sentences naming the
question and answer, which go back to the model in the one repair request; still broken after it,
the dialogue is quarantined as `low_quality` with the rules' names.

Deterministic and cheap (no model, no second LLM; `bench/quality_gate.py` times it): words are
lower-cased, stop words dropped and crudely stemmed (`dialogue_validation.content_words`).
- grounded: an answer shares at least one content word with the segments it cites and at least
  `min_grounding` of its content words, and one with each of them when it cites several (SmolLM2
  cited every segment of a video for one answer); an immediate reply shares one with the segments before
  its question, or says nothing was shown yet. An answer whose words belong to another segment
  (`misattribution_margin` more words there than in its own) cites the wrong one.
- a question reads as a question (a question mark, or an interrogative or request word first)
  and asks about something; an answer that is mostly the question's words either restates the
  question or shows that the question gives its answer away (`max_restatement`).
- no placeholder ("text", "answer 1", "<answer>", "..."), no text without words ("5.1",
  "2.5561337890018806"), no JSON debris (brackets, `"key":`, schema field names, snake_case
  tokens), no copied text (the video id, prompt instructions, talk of "segments").
- no loops: a word 3-gram three times, a text of few distinct words, a run of one character or
  syllable (`repetition` is the largest share of repeated 3-grams in any text).
- answers distinct: word-sequence similarity (difflib) or content-word overlap at or over
  `max_answer_similarity` between two answers is a near-duplicate.
Paraphrases that share no word with their segment fail the grounding rule; the labelled set in
tests/test_quality_gate.py measures how often (the design trades those for garbage that cites
the wrong segment, which a wrong row is worse than a missing one).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from curation.text.config import QualityConfig
from curation.text.dialogue_validation import content_words, labels_of, similarity, tokens
from schemas.records import Dialogue, DialogueQuality, Segment

GATE_VERSION = "v1"
RULES = ("placeholder", "no_words", "json_debris", "copied_text", "not_a_question", "restates_question",
         "ungrounded", "misattributed", "repetition", "near_duplicate")

# Words that say where or how something is seen rather than what: they neither ground an answer
# nor count against it.
GENERIC = frozenset(content_words("""video show shows shown showing appear appears appeared seen see sees
    visible view frame far yet only even really something someone thing things now okay ok well kind
    look looks like across along around toward towards near beside behind inside outside within without
    against among beneath beyond via upon""")) | frozenset("""far yet only even really""".split())
# First words of a question, or of a request that works as one ("Tell me when...", "Keep an eye on...").
INTERROGATIVE = frozenset("""what which who whom whose when where why how is are was were do does did can
    could will would should shall may might has have had am any tell describe explain name list say
    identify count show point give watch let keep please notice spot find alert notify help guess follow
    track i""".split())
NEGATIVE = frozenset("nothing not no none yet never nobody".split())
PLACEHOLDERS = frozenset({
    "text", "answer", "question", "string", "reply", "response", "description", "caption", "example", "sample",
    "placeholder", "todo", "tbd", "tba", "n/a", "na", "none", "null", "nil", "undefined", "nan", "empty", "blank",
    "foo", "bar", "baz", "xxx", "test", "same", "unknown", "etc", "answer here", "question here", "your answer",
    "your question", "insert answer here", "the answer", "the question", "answer text", "question text",
    "no answer", "no question", "n a"})
_NUMBERED_LABEL = re.compile(r"^(?:question|answer|reply|response|text|string|segment|caption|example|sample|"
                             r"item|value|q|a)[\s_#.-]*\d+$")
_TEMPLATE = re.compile(r"<[^<>]{1,40}>|\{\{?\s*\w+\s*\}?\}|\$\w+|lorem ipsum|^[.\u2026_\s-]+$", re.I)
_LABEL_PREFIX = re.compile(r"^\s*(?:question|answer|reply|response|q|a)\s*\d*\s*:", re.I)
_DEBRIS = re.compile(r"[{}\[\]]|\"\s*[:,]|\\[nt\"]|\b(?:segment_ids?|asked_at_segment|immediate_reply|"
                     r"question_id|null|true|false)\b|\b\w+_\w+\b")
_META = re.compile(r"\bsegments?\b|\bjson\b|\bsegment ids?\b", re.I)
_CHAR_RUN = re.compile(r"([^\d\s])\1{5,}")
_SYLLABLE_RUN = re.compile(r"([^\d\s]{2,8}?)\1{4,}")


@dataclass
class QualityVerdict:
    figures: DialogueQuality
    broken: list[tuple[str, str]] = field(default_factory=list)  # (rule, sentence)

    @property
    def rules(self) -> list[str]:
        return sorted({rule for rule, _ in self.broken}, key=RULES.index)

    def problems(self) -> list[str]:
        return [f"[{rule}] {sentence}" for rule, sentence in self.broken]


def is_quality_problem(problem: str) -> bool:
    """Whether a problem sentence came from the gate (for the quarantine reason)."""
    return problem.startswith("[") and problem[1:].split("]", 1)[0] in RULES


# --- text rules ---------------------------------------------------------------------------------
@cache
def _prompt_ngrams(n: int = 5) -> frozenset[tuple[str, ...]]:
    """Word n-grams of every dialogue prompt's fixed text and the output schemas' descriptions:
    a generated text that contains one copied the instructions."""
    from curation.text.prompts import PROMPTS_DIR, load_prompt, prompt_versions
    from schemas.llm_output import instruction_texts

    texts = list(instruction_texts())
    for path in PROMPTS_DIR.glob("*.md"):
        name = path.name.split(".")[0]
        for version in prompt_versions(name):
            prompt = load_prompt(name, version)
            texts += [prompt.system, prompt.user_template]
    grams = set()
    for text in texts:
        words = tokens(re.sub(r"\$\w+", " ", text))
        grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return frozenset(grams)


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def repetition_share(text: str) -> float:
    """Share of a text's word 3-grams that repeat an earlier one (0 for a text without repeats)."""
    grams = _ngrams(tokens(text), 3)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def text_problems(label: str, text: str, video_id: str, segment_texts: frozenset[tuple[str, ...]]) -> list[tuple[str, str]]:
    """The rules one generated text (question, answer or immediate reply) breaks on its own."""
    out: list[tuple[str, str]] = []
    norm = " ".join(re.sub(r"[^\w\s/.\u2026-]", " ", text.lower()).split()).strip(" .")
    letters = sum(c.isalpha() for c in text)
    visible = sum(not c.isspace() for c in text)
    if norm in PLACEHOLDERS or _NUMBERED_LABEL.match(norm) or _TEMPLATE.search(text) or _LABEL_PREFIX.match(text):
        out.append(("placeholder", f"{label}: {_quote(text)} is a placeholder or label, not a sentence about the video"))
    elif letters < 2 or letters < 0.5 * visible:
        out.append(("no_words", f"{label}: {_quote(text)} has no words; write a sentence"))
    debris = _DEBRIS.search(text)
    if debris:
        out.append(("json_debris", f"{label}: contains JSON or code debris ({debris.group(0)!r}); write plain "
                                   "text only inside the JSON strings"))
    words = tokens(text)
    copied = [g for g in _ngrams(words, 5) if g in _prompt_ngrams() and g not in segment_texts]
    if norm == video_id.lower() or copied or _META.search(text):
        what = (f"the instructions ({' '.join(copied[0])!r})" if copied else
                "the video id" if norm == video_id.lower() else "talk of segments or JSON")
        out.append(("copied_text", f"{label}: copies {what}; say what the video shows"))
    counts = Counter(_ngrams(words, 3))
    few_distinct = len(words) >= 8 and len(set(words)) < 0.5 * len(words)
    run = _CHAR_RUN.search(text) or _SYLLABLE_RUN.search(text)
    if (counts and max(counts.values()) >= 3) or few_distinct or run:
        out.append(("repetition", f"{label}: repeats itself (a loop); say it once"))
    return out


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def _is_question(text: str) -> bool:
    words = tokens(text)
    return bool(words) and (text.rstrip().endswith("?") or words[0] in INTERROGATIVE)


# --- grounding ----------------------------------------------------------------------------------
def grounding_words(text: str) -> set[str]:
    return content_words(text) - GENERIC


def _support(words: set[str], cited: set[str]) -> float:
    return len(words & cited) / len(words) if words else 0.0


def _answer_grounding(label: str, answer: str, question: str, evidence: Sequence[str],
                      words_of: dict[str, set[str]], cfg: QualityConfig) -> tuple[float, list[tuple[str, str]]]:
    words = grounding_words(answer)
    if not words:
        return 0.0, [("ungrounded", f"{label}: {_quote(answer)} says nothing about what the video shows")]
    padded = [s for s in evidence if not words & words_of.get(s, set())]
    if len(evidence) > 1 and padded:
        return 0.0, [("ungrounded", f"{label}: cites {', '.join(map(repr, padded))}, which it says nothing about; "
                                    "cite only the segments that show it")]
    cited = set().union(*(words_of.get(s, set()) for s in evidence))
    own = len(words & cited)
    support = own / len(words)
    best_id, best = max(((sid, len(words & w)) for sid, w in words_of.items() if sid not in evidence),
                        key=lambda item: item[1], default=("", 0))
    if own and best >= own + cfg.misattribution_margin and best >= 2 * own:
        return support, [("misattributed", f"{label}: describes what another segment shows ({best_id!r}, {best} "
                                           f"shared words against {own}); cite the segment it describes")]
    if own == 0 or support < cfg.min_grounding:
        return support, [("ungrounded", f"{label}: {_quote(answer)} is not what its cited segment shows "
                                        f"({own} of its {len(words)} content words are there); describe that segment")]
    return support, []


def _immediate_grounding(label: str, reply: str, earlier: set[str]) -> list[tuple[str, str]]:
    words = grounding_words(reply)
    if words & earlier or set(tokens(reply)) & NEGATIVE:
        return []
    return [("ungrounded", f"{label}: {_quote(reply)} is not what the earlier segments showed; summarise them, "
                           "or say that nothing about it was shown yet")]


# --- the gate -----------------------------------------------------------------------------------
def assess_dialogue(dialogue: Dialogue, segments: Sequence[Segment], cfg: QualityConfig) -> QualityVerdict:
    """The dialogue's quality figures and every gate rule it breaks (none: it passes)."""
    mine = [s for s in segments if s.video_id == dialogue.video_id]
    words_of = {s.segment_id: grounding_words(s.text) for s in mine}
    segment_grams = frozenset(g for s in mine for g in _ngrams(tokens(s.text), 5))
    turns = sorted(dialogue.user_turns, key=lambda t: t.time_s)
    labels, ref_labels = labels_of(dialogue)
    asked_at = {t.question_id: t.time_s for t in turns}
    broken: list[tuple[str, str]] = []
    texts = []
    for turn in turns:
        label = labels[turn.question_id]
        broken += text_problems(label, turn.text, dialogue.video_id, segment_grams)
        texts.append(turn.text)
        if not _is_question(turn.text) or len(tokens(turn.text)) < 2:
            broken.append(("not_a_question", f"{label}: {_quote(turn.text)} does not read as a question; "
                                             "ask one, ending with '?'"))

    support: list[float] = []
    restatement = [0.0]
    answers: list[tuple[str, str, str, bool]] = []  # (label, text, question id, immediate)
    for ref, label in zip(dialogue.references, ref_labels, strict=True):
        broken += text_problems(label, ref.answer, dialogue.video_id, segment_grams)
        texts.append(ref.answer)
        answers.append((label, ref.answer, ref.question_id, ref.immediate))
        if ref.immediate:
            asked = asked_at.get(ref.question_id, 0.0)
            earlier = set().union(*(w for s in mine if s.start_s < asked for w in [words_of[s.segment_id]]))
            broken += _immediate_grounding(label, ref.answer, earlier)
            continue
        score, problems = _answer_grounding(label, ref.answer, ref.question, ref.evidence, words_of, cfg)
        support.append(score)
        broken += problems
        share = _restated(ref.question, ref.answer)
        restatement.append(share)
        if share >= cfg.max_restatement:
            broken.append(("restates_question", f"{label}: {share:.0%} of its words are the question's: the answer "
                                                "says nothing new, or the question gives its answer away"))

    similar = [0.0]
    for i in range(len(answers)):
        for j in range(i + 1, len(answers)):
            a, b = answers[i], answers[j]
            if a[2] != b[2] and (a[3] or b[3]):
                continue  # an immediate reply sums up other questions' answers by design
            score = max(similarity(a[1], b[1]), _overlap(a[1], b[1]))
            similar.append(score)
            if score >= cfg.max_answer_similarity:
                broken.append(("near_duplicate", f"{a[0]} and {b[0]} say nearly the same ({score:.2f}); make each "
                                                 "say something new"))
    figures = DialogueQuality(grounding=round(min(support, default=1.0), 4), max_answer_similarity=round(max(similar), 4),
                              max_restatement=round(max(restatement), 4),
                              repetition=round(max(map(repetition_share, texts), default=0.0), 4), gate=GATE_VERSION)
    return QualityVerdict(figures, broken)


def _restated(question: str, answer: str) -> float:
    words = grounding_words(answer)
    return len(words & grounding_words(question)) / len(words) if words else 0.0


def _overlap(a: str, b: str) -> float:
    """Content-word overlap of two texts (over the smaller set), 0 below 3 words each: short
    answers about one subject share words without repeating each other."""
    wa, wb = grounding_words(a), grounding_words(b)
    if min(len(wa), len(wb)) < 3:
        return 0.0
    return len(wa & wb) / min(len(wa), len(wb))


