"""The quality gate: rules a dialogue must pass after it validates, because validity is not quality.

A small model behind a JSON grammar writes structurally valid nonsense: questions "5.1" and
"bikes", answers "0.1", "text", "]}{", "question1", an answer about the man in a suit citing the
segment about a bollard, answers restating their question, near-duplicate answers (FACTS.md
"Dialogue quality"). Each rule here names one such failure; `assess_dialogue` returns the
dialogue's quality figures (stored on its row) and every rule it breaks, as sentences naming the
question and answer, which go back to the model in the one repair request; still broken after it,
the dialogue is quarantined as `low_quality` with the rules' names.

Deterministic and cheap (no model, no second LLM; `bench/quality_gate.py` times it): words are
lower-cased, number words read as digits, stop words dropped and crudely stemmed
(`dialogue_validation.content_words`).
- grounded: an answer shares at least one content word with the segments it cites and at least
  `min_grounding` of its content words, and one with each of them when it cites several (SmolLM2
  cited every segment of a video for one answer); a word every segment of the video has ("C" of
  egocentric narration) does not ground an answer alone that adds two words of its own. An
  immediate reply shares `min_grounding` of its words with the segments before its question, or
  says nothing was shown yet. An answer whose words belong to another segment
  (`misattribution_margin` more words there than in its own) cites the wrong one.
- a question reads as a question (a question mark, or an interrogative or request word opening a
  clause) and asks about something; an answer that is mostly the question's words either restates
  the question or shows that the question gives its answer away (`max_restatement`), except under a
  request to be told when something happens, which its answer names. A "how many/much/long"
  question needs an answer with a number or an amount, a "what colour" one an answer with a colour.
- no placeholder ("text", "answer 1", "<answer>", "..."), no text without words ("5.1",
  "2.5561337890018806"), no JSON debris (brackets, `"key":`, schema field names, snake_case
  tokens), no copied text (the video id, prompt instructions, talk of "segments" unless the video
  itself says the word).
- no loops: a word 3-gram three times, a word three times in a row, a text of few distinct words,
  a run of one character or syllable (`repetition` is the largest share of repeated 3-grams in any
  text); no text cut off on a word a sentence cannot end on ("... out of a").
- answers distinct: word-sequence similarity (difflib) or content-word overlap at or over
  `max_answer_similarity`, where one of the two says nothing the other does not, is a
  near-duplicate ("The chef slices the onion." / "The chef fries the onion." each say something).
What it misses (tests/test_quality_holdout.py, a set written without looking at these rules): a
paraphrase sharing under a fifth of its words with its segment is refused (a wrong row is worse
than a missing one); an answer that contradicts its segment ("a blue frisbee" where it is red),
one grounded in its segment that answers another question, and an invented detail beside a word
the segment has pass.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from curation.text.config import QualityConfig
from curation.text.dialogue_validation import (
    content_words,
    labels_of,
    restated_share,
    similarity,
    tokens,
)
from schemas.records import Dialogue, DialogueQuality, Segment

GATE_VERSION = "v2"  # stored on every dialogue row and part of the config fingerprint: bump on a rule change
RULES = ("placeholder", "no_words", "json_debris", "copied_text", "not_a_question", "restates_question",
         "ungrounded", "misattributed", "off_question", "repetition", "truncated", "near_duplicate")

# Words that say where or how something is seen rather than what, or frame a summary ("so far",
# "earlier"): they neither ground an answer nor count against it.
GENERIC = frozenset(content_words("""video show shows shown showing appear appears appeared seen see sees
    visible view frame far yet only even really something someone thing things now okay ok well kind
    look looks like across along around toward towards near beside behind inside outside within without
    against among beneath beyond via upon earlier previously already since until till recently meanwhile
    so far""")) | frozenset("""far yet only even really""".split())
# First words of a question, or of a request that works as one ("Tell me when...", "Keep an eye on...",
# "Whenever a car passes, say so": the first word of any clause).
INTERROGATIVE = frozenset("""what which who whom whose when where why how is are was were do does did can
    could will would should shall may might has have had am any tell describe explain name list say
    identify count show point give watch let keep please notice spot find alert notify help guess follow
    track i summarise summarize narrate report monitor look observe mention indicate inform flag announce
    recap outline compare detail note warn remind update signal""".split())
# Words an English sentence cannot end on: a text ending on one was cut off ("The rabbit crawls out
# of a", "An ice-cream cart stops near the"); a question may ("What is it made of?").
UNFINISHED = frozenset("""a an the of and or but nor to with into onto from between among toward towards than
    because although whose my your his its our their very""".split())
NEGATIVE = frozenset("nothing not no none yet never nobody".split())
# What kind of answer a question asks for, and the words that give one: "How many...?" is answered by
# a number or an amount ("Two.", "None yet", "several"), "What colour...?" by a colour. An answer
# grounded in its segment that gives neither answers a different question.
_ASKS = {"amount": re.compile(r"\bhow (?:many|much|long|often|old)\b", re.I),
         "colour": re.compile(r"\bwhat colou?rs?\b", re.I)}
_GIVES = {
    "amount": frozenset("""no none nothing zero few several many much more most less fewer lot lots couple dozen
        dozens half all both every each once twice single long short brief briefly while moment minute minutes
        hour hours day days week weeks year years""".split()),
    "colour": frozenset("""red orange yellow green blue purple violet pink brown black white grey gray silver gold
        golden navy beige tan cyan magenta teal turquoise maroon colourful colorful""".split())}
PLACEHOLDERS = frozenset({
    "text", "answer", "question", "string", "reply", "response", "description", "caption", "example", "sample",
    "placeholder", "todo", "tbd", "tba", "n/a", "na", "none", "null", "nil", "undefined", "nan", "empty", "blank",
    "foo", "bar", "baz", "xxx", "test", "same", "unknown", "etc", "answer here", "question here", "your answer",
    "your question", "insert answer here", "the answer", "the question", "answer text", "question text",
    "no answer", "no question", "n a", "true", "false"})
_NUMBERED_LABEL = re.compile(r"^(?:question|answer|reply|response|text|string|segment|caption|example|sample|"
                             r"item|value|q|a)[\s_#.-]*\d+$")
# `$name` is a template variable; "$5" is a price.
_TEMPLATE = re.compile(r"<[^<>]{1,40}>|\{\{?\s*\w+\s*\}?\}|\$[a-z_]\w*|lorem ipsum|^[.\u2026_\s-]+$", re.I)
_LABEL_PREFIX = re.compile(r"^\s*(?:question|answer|reply|response|q|a)\s*\d*\s*:", re.I)
# JSON's true/false are English words too ("the statement is false"): alone they are placeholders.
# A quote then a comma is prose ('he calls it "the base", then'); quote-comma-quote is a JSON list.
_DEBRIS = re.compile(r"[{}\[\]]|\"\s*:|\"\s*,\s*\"|\\[nt\"]|\b(?:segment_ids?|asked_at_segment|immediate_reply|"
                     r"question_id|null)\b|\b\w+_\w+\b")
_META = re.compile(r"\b(segment|json)s?\b", re.I)
_CHAR_RUN = re.compile(r"([^\d\s])\1{5,}")
_SYLLABLE_RUN = re.compile(r"([^\d\s]{2,8}?)\1{4,}")
_WORD_RUN = re.compile(r"\b(\w+)(?:\W+\1\b){2}", re.I)  # "dice dice dice", "small, small, small"


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
        grams.update(_ngrams(tokens(re.sub(r"\$\w+", " ", text)), n))
    return frozenset(grams)


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def repetition_share(text: str) -> float:
    """Share of a text's word 3-grams that repeat an earlier one (0 for a text without repeats)."""
    grams = _ngrams(tokens(text), 3)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def text_problems(label: str, text: str, video_id: str, segment_texts: frozenset[tuple[str, ...]],
                  segment_words: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The rules one generated text (question, answer or immediate reply) breaks on its own.
    `segment_texts` are the word 5-grams of the video's segments and `segment_words` their content words:
    what the video itself says is not copied from the prompt ("a line segment" in a lecture)."""
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
    meta = next((m for m in _META.finditer(text) if not content_words(m.group(0)) <= segment_words), None)
    if norm == video_id.lower() or copied or meta:
        what = (f"the instructions ({' '.join(copied[0])!r})" if copied else
                "the video id" if norm == video_id.lower() else "talk of segments or JSON")
        out.append(("copied_text", f"{label}: copies {what}; say what the video shows"))
    counts = Counter(_ngrams(words, 3))
    few_distinct = len(words) >= 8 and len(set(words)) < 0.5 * len(words)
    run = _CHAR_RUN.search(text) or _SYLLABLE_RUN.search(text) or _WORD_RUN.search(text)
    if (counts and max(counts.values()) >= 3) or few_distinct or run:
        out.append(("repetition", f"{label}: repeats itself (a loop); say it once"))
    if words and words[-1] in UNFINISHED and not text.rstrip().endswith("?"):
        out.append(("truncated", f"{label}: {_quote(text[-60:])} stops mid-sentence; finish it"))
    return out


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def _is_question(text: str) -> bool:
    if text.rstrip().endswith("?"):
        return bool(tokens(text))
    return any(words[0] in INTERROGATIVE for clause in re.split(r"[,;:]", text) if (words := tokens(clause)))


# --- grounding ----------------------------------------------------------------------------------
def grounding_words(text: str) -> frozenset[str]:
    return content_words(text) - GENERIC


def _answer_grounding(label: str, answer: str, question: str, evidence: Sequence[str],
                      words_of: dict[str, frozenset[str]], topic: frozenset[str],
                      cfg: QualityConfig) -> tuple[float, list[tuple[str, str]]]:
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
    # The video's topic words ("C" of egocentric narration, "the rabbit") are in every segment: they
    # ground an answer that adds at most one word of its own ("C shuts it"), not "C chops a red pepper".
    topic_only = not (words & cited) - topic and len(words - cited) >= 2
    if own == 0 or support < cfg.min_grounding or topic_only:
        return support, [("ungrounded", f"{label}: {_quote(answer)} is not what its cited segment shows "
                                        f"({own} of its {len(words)} content words are there); describe that segment")]
    return support, []


def _immediate_grounding(label: str, reply: str, earlier: set[str], cfg: QualityConfig) -> list[tuple[str, str]]:
    """An immediate reply summarises the segments before its question, held to the share an answer
    owes its cited segments, or says nothing about it was shown yet."""
    words = grounding_words(reply)
    shared = len(words & earlier)
    if set(tokens(reply)) & NEGATIVE or (shared and shared >= cfg.min_grounding * len(words)):
        return []
    return [("ungrounded", f"{label}: {_quote(reply)} is not what the earlier segments showed; summarise them, "
                           "or say that nothing about it was shown yet")]


# --- the gate -----------------------------------------------------------------------------------
def assess_dialogue(dialogue: Dialogue, segments: Sequence[Segment], cfg: QualityConfig) -> QualityVerdict:
    """The dialogue's quality figures and every gate rule it breaks (none: it passes)."""
    mine = [s for s in segments if s.video_id == dialogue.video_id]
    words_of = {s.segment_id: grounding_words(s.text) for s in mine}
    topic = frozenset.intersection(*words_of.values()) if len(words_of) >= 3 else frozenset()
    segment_grams = frozenset(g for s in mine for g in _ngrams(tokens(s.text), 5))
    segment_words = frozenset().union(*(content_words(s.text) for s in mine))
    turns = sorted(dialogue.user_turns, key=lambda t: t.time_s)
    labels, ref_labels = labels_of(dialogue)
    asked_at = {t.question_id: t.time_s for t in turns}
    broken: list[tuple[str, str]] = []
    texts = []
    for turn in turns:
        label = labels[turn.question_id]
        broken += text_problems(label, turn.text, dialogue.video_id, segment_grams, segment_words)
        texts.append(turn.text)
        if not _is_question(turn.text) or len(tokens(turn.text)) < 2:
            broken.append(("not_a_question", f"{label}: {_quote(turn.text)} does not read as a question; "
                                             "ask one, ending with '?'"))

    support: list[float] = []
    restatement = [0.0]
    answers: list[tuple[str, str, str, bool]] = []  # (label, text, question id, immediate)
    for ref, label in zip(dialogue.references, ref_labels, strict=True):
        broken += text_problems(label, ref.answer, dialogue.video_id, segment_grams, segment_words)
        texts.append(ref.answer)
        answers.append((label, ref.answer, ref.question_id, ref.immediate))
        if ref.immediate:
            asked = asked_at.get(ref.question_id, 0.0)
            earlier = set().union(*(w for s in mine if s.start_s < asked for w in [words_of[s.segment_id]]))
            broken += _immediate_grounding(label, ref.answer, earlier, cfg)
            continue
        score, problems = _answer_grounding(label, ref.answer, ref.question, ref.evidence, words_of, topic, cfg)
        support.append(score)
        broken += problems
        share = restated_share(ref.question, ref.answer, grounding_words)
        restatement.append(share)
        if share >= cfg.max_restatement:
            broken.append(("restates_question", f"{label}: {share:.0%} of its words are the question's: the answer "
                                                "says nothing new, or the question gives its answer away"))

    for turn in turns:
        own = [r.answer for r in dialogue.references if r.question_id == turn.question_id and not r.immediate]
        broken += _answer_kind_problems(labels[turn.question_id], turn.text, own)

    similar = [0.0]
    for i in range(len(answers)):
        for j in range(i + 1, len(answers)):
            a, b = answers[i], answers[j]
            if a[2] != b[2] and (a[3] or b[3]):
                continue  # an immediate reply sums up other questions' answers by design
            score = max(similarity(a[1], b[1]), _overlap(a[1], b[1]))
            similar.append(score)
            if score >= cfg.max_answer_similarity and _adds_nothing(a[1], b[1]):
                broken.append(("near_duplicate", f"{a[0]} and {b[0]} say nearly the same ({score:.2f}); make each "
                                                 "say something new"))
    figures = DialogueQuality(grounding=round(min(support, default=1.0), 4), max_answer_similarity=round(max(similar), 4),
                              max_restatement=round(max(restatement), 4),
                              repetition=round(max(map(repetition_share, texts), default=0.0), 4), gate=GATE_VERSION)
    return QualityVerdict(figures, broken)


def _answer_kind_problems(label: str, question: str, answers: list[str]) -> list[tuple[str, str]]:
    """A question asking for an amount or a colour that none of its answers gives."""
    out = []
    for kind, asks in _ASKS.items():
        if not answers or not asks.search(question):
            continue
        if not any(w in _GIVES[kind] or (kind == "amount" and w.isdigit()) for a in answers for w in tokens(a)):
            what = "a colour" if kind == "colour" else "a number or an amount"
            out.append(("off_question", f"{label} asks for {what}, and none of its answers gives one: answer "
                                        "the question asked"))
    return out


def _adds_nothing(a: str, b: str) -> bool:
    """Whether one of two texts says nothing the other does not: "The chef slices the onion." and
    "The chef fries the onion." read alike but each says something new; "A player scores again."
    adds nothing to "A player scores."."""
    wa, wb = grounding_words(a), grounding_words(b)
    return wa <= wb or wb <= wa


def _overlap(a: str, b: str) -> float:
    """Content-word overlap of two texts (over the smaller set), 0 below 3 words each: short
    answers about one subject share words without repeating each other."""
    wa, wb = grounding_words(a), grounding_words(b)
    if min(len(wa), len(wb)) < 3:
        return 0.0
    return len(wa & wb) / min(len(wa), len(wb))


