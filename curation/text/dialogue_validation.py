"""The rules every generated dialogue must pass before it enters the corpus.

`dialogue_problems` lists every broken rule as a readable sentence (the same sentences go back to
the LLM in the one repair request, so they say what to change). A dialogue with no problems is
valid. The rules: the record's own schema invariants; cited segments exist and belong to the
video; each window overlaps the segments it cites; no answer before its question (and, in a
multi_question dialogue, none after the next question is asked); no near-duplicate answers or
questions; no question that restates its answer; counts within the configured bounds; every time
inside the video; no timestamp, segment id or control character in any text
(`curation.text.text_filter`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from pydantic import ValidationError

from curation.text.config import DialogueConfig
from curation.text.text_filter import forbidden_text_problems
from schemas.records import NO_REPLY, Dialogue, ReferenceAnswer, Segment

EPS_S = 1e-6
_WORD = re.compile(r"[a-z]+|[0-9]+")  # "2x" is "2", "x"; "28-24" is "28", "24"
# Number words read as digits, so "Two." is grounded in "C cracks two eggs" and "28-24" in
# "twenty-eight to twenty-four": a number is content (it answers "how many?"), except "one", which
# is mostly a pronoun ("a red one").
_UNITS = {w: i for i, w in enumerate("""zero one two three four five six seven eight nine ten eleven twelve
    thirteen fourteen fifteen sixteen seventeen eighteen nineteen""".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
# Words that carry no content: a question may share these with its answer freely. The last line
# holds what an apostrophe leaves behind ("it's", "laptop's", "don't").
STOPWORDS = frozenset("""
a an the and or but of to in on at by for with from into onto over under up down out off as is are
was were be been being it its this that these those there here he she they them his her their him
we you i me my your our what which who whom whose when where why how does do did doing done has
have had can could will would should may might must shall not no yes some any each every all both
then than so such very just also again still while during after before about above below between
through same other another 1 first next last now
s t d ll re ve m don doesn didn isn aren wasn weren hasn haven hadn couldn wouldn shouldn""".split())


# The validator and the quality gate read the same few texts many times over (each answer once per
# pair of answers and per rule, each segment once per dialogue of its video): the words of a text
# are worked out once and kept, immutable so no caller can change what another reads.
WORD_CACHE_SIZE = 8192


@lru_cache(maxsize=WORD_CACHE_SIZE)
def tokens(text: str) -> tuple[str, ...]:
    """Lower-case words and numbers, number words as digits."""
    out: list[str] = []
    tens = False  # the previous word was "twenty".."ninety": "twenty eight" is one number
    for word in _WORD.findall(text.lower()):
        unit = _UNITS.get(word)
        if tens and unit is not None and 0 < unit < 10:
            out[-1] = str(int(out[-1]) + unit)
        elif word in _TENS or unit is not None:
            out.append(str(_TENS.get(word, unit)))
        else:
            out.append(word)
        tens = word in _TENS
    return tuple(out)


def _stem(word: str) -> str:
    # Crude on purpose: "rides"/"ride"/"riding", "cars"/"car" count as one word for the
    # restatement test.
    if len(word) <= 3:
        return word
    if word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "ches", "shes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


@lru_cache(maxsize=WORD_CACHE_SIZE)
def content_words(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in tokens(text) if w not in STOPWORDS)


def similarity(a: str, b: str) -> float:
    """difflib ratio over word sequences: 1.0 for the same words in the same order."""
    return difflib.SequenceMatcher(a=tokens(a), b=tokens(b), autojunk=False).ratio()


_TELL_ME = re.compile(r"\b(?:tell|let|alert|notify|warn|inform|remind)\s+(?:me|us)\b", re.I)
_WHEN = re.compile(r"\b(?:when|whenever|once|if|each time|every time|as soon as)\b", re.I)


def asks_to_be_told(question: str) -> bool:
    """A request to be told when something happens ("Tell me when the light turns green."): its
    answer says that it happened ("It turns green."), and the answer's news is its time."""
    return bool(_TELL_ME.search(question) and _WHEN.search(question))


def restated_share(question: str, answer: str, words: Callable[[str], frozenset[str]] = content_words) -> float:
    """Share of the answer's content words that the question already contains (0 when the answer
    has none: a bare yes/no is judged by other rules; 0 for a request to be told when something
    happens)."""
    if asks_to_be_told(question):
        return 0.0
    mine = words(answer)
    return len(mine & words(question)) / len(mine) if mine else 0.0


def labels_of(dialogue: Dialogue) -> tuple[dict[str, str], list[str]]:
    """Question labels by question id ("question 1" in time order) and one label per reference
    ("question 1, answer 3", "question 2, immediate reply"): how problems name places."""
    turns = sorted(dialogue.user_turns, key=lambda t: t.time_s)
    questions = {t.question_id: f"question {i + 1}" for i, t in enumerate(turns)}
    count: dict[str, int] = {}
    refs = []
    for ref in dialogue.references:
        label_q = questions.get(ref.question_id, f"question {ref.question_id!r}")
        if ref.immediate:
            refs.append(f"{label_q}, immediate reply")
        else:
            count[ref.question_id] = count.get(ref.question_id, 0) + 1
            refs.append(f"{label_q}, answer {count[ref.question_id]}")
    return questions, refs


_FIELD_PATH = re.compile(r"^(references|user_turns)\.(\d+)(?:\.(\w+))?")
_FIELD_WORDS = {"reply_span": "window", "time_s": "time", "question_id": "question id", "question": "question text",
                "answer": "text", "text": "text"}


def _in_words(where: str, dialogue: Dialogue, labels: tuple[dict[str, str], list[str]]) -> str:
    """`references.7.reply_span` as "question 2, answer 3, window" (what a person and a model read)."""
    match = _FIELD_PATH.match(where)
    if not match:
        return where
    table, index, name = match.group(1), int(match.group(2)), match.group(3)
    if table == "references":
        label = labels[1][index] if index < len(labels[1]) else f"answer {index + 1}"
    else:
        turns = dialogue.user_turns
        label = labels[0].get(turns[index].question_id, f"question {index + 1}") if index < len(turns) else (
            f"question {index + 1}")
    return label + (f", {_FIELD_WORDS.get(name, name)}" if name else "") + where[match.end():]


def schema_problems(dialogue: Dialogue) -> list[str]:
    """The record's own invariants, re-checked on a dialogue built without validation, each naming
    its place in words."""
    try:
        Dialogue.model_validate(dialogue.model_dump(warnings=False))
    except ValidationError as error:
        labels = labels_of(dialogue)
        out = []
        for item in error.errors():
            problems = (item.get("ctx") or {}).get("problems")
            if problems:
                out.extend(f"{_in_words(field, dialogue, labels)}: {msg}" for field, msg in problems)
            else:
                where = _in_words(".".join(str(p) for p in item["loc"]), dialogue, labels)
                out.append(f"{where}: {item['msg']}" if where else item["msg"])
        return out
    return []


def _overlaps(span: tuple[float, float], segment: Segment) -> bool:
    return span[0] < segment.end_s - EPS_S and segment.start_s < span[1] - EPS_S


def _grounding_problems(ref: ReferenceAnswer, label: str, by_id: dict[str, Segment],
                        video_id: str, duration_s: float) -> list[str]:
    out = []
    start_s, end_s = ref.reply_span
    if start_s < -EPS_S or end_s > duration_s + EPS_S:
        out.append(f"{label}: window {start_s:g}-{end_s:g} s lies outside the video (0-{duration_s:g} s)")
    if ref.immediate:
        return out
    if not ref.evidence:
        out.append(f"{label}: cites no segment")
    for segment_id in ref.evidence:
        segment = by_id.get(segment_id)
        if segment is None:
            out.append(f"{label}: cites segment {segment_id!r}, which is not a segment of video {video_id!r}")
        elif not _overlaps(ref.reply_span, segment):
            out.append(f"{label}: window {start_s:g}-{end_s:g} s does not overlap its cited segment "
                       f"{segment_id!r} ({segment.start_s:g}-{segment.end_s:g} s)")
    return out


def _pair_problems(texts: list[tuple[str, str]], what: str, threshold: float,
                   compared=lambda i, j: True) -> list[str]:
    out = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if not compared(i, j):
                continue
            score = similarity(texts[i][1], texts[j][1])
            if score >= threshold:
                out.append(f"{texts[i][0]} and {texts[j][0]} are near-duplicate {what} "
                           f"(similarity {score:.2f} >= {threshold:g}): make each say something new")
    return out


def dialogue_problems(dialogue: Dialogue, segments: Sequence[Segment], cfg: DialogueConfig,
                      earlier_questions: Sequence[str] = ()) -> list[str]:
    """Every rule `dialogue` breaks, as sentences; [] when it is valid. `dialogue` may have been
    built with `model_construct` (unvalidated); `earlier_questions` are the questions of the
    video's other dialogues, which a new question must not repeat."""
    problems = schema_problems(dialogue)
    by_id = {s.segment_id: s for s in segments if s.video_id == dialogue.video_id}
    turns = sorted(dialogue.user_turns, key=lambda t: t.time_s)
    times = {t.question_id: t.time_s for t in turns}
    labels, ref_labels = labels_of(dialogue)
    next_time = {t.question_id: (turns[i + 1].time_s if i + 1 < len(turns) else None)
                 for i, t in enumerate(turns)}

    if dialogue.kind == "single_question" and turns and turns[0].time_s > EPS_S:
        problems.append(f"the single question is asked at {turns[0].time_s:g} s, not at the start")
    if dialogue.kind == "multi_question":
        n = len(turns)
        if not cfg.min_questions <= n <= cfg.max_questions:
            problems.append(f"{n} questions; write between {cfg.min_questions} and {cfg.max_questions}")
        for a, b in zip(turns, turns[1:], strict=False):
            if b.time_s - a.time_s < EPS_S:
                problems.append(f"{labels[a.question_id]} and {labels[b.question_id]} are asked at the same "
                                f"segment ({a.time_s:g} s): ask each at a different segment")
    for turn in turns:
        if turn.time_s > dialogue.duration_s + EPS_S:
            problems.append(f"{labels[turn.question_id]} is asked at {turn.time_s:g} s, after the video ends")
        problems += forbidden_text_problems(labels[turn.question_id], turn.text, by_id)

    answers: dict[str, list[tuple[str, str]]] = {}
    every: list[tuple[str, str, str, bool]] = []  # (label, text, question id, immediate)
    cited: dict[str, dict[str, str]] = {}
    for ref, label in zip(dialogue.references, ref_labels, strict=True):
        qid = ref.question_id
        problems += _grounding_problems(ref, label, by_id, dialogue.video_id, dialogue.duration_s)
        problems += forbidden_text_problems(label, ref.answer, by_id)
        if ref.answer.strip().upper() == NO_REPLY:
            problems.append(f"{label}: is the {NO_REPLY!r} marker, not an answer; leave silent segments uncited")
        asked = times.get(qid)
        if asked is not None and ref.immediate and asked < EPS_S:
            problems.append(f"{label}: the question opens the video, so nothing earlier can be summarised "
                            "(use null)")
        if asked is not None and not ref.immediate:
            if ref.reply_span[0] < asked - EPS_S:
                problems.append(f"{label}: answers from {ref.reply_span[0]:g} s, before the question is asked "
                                f"({asked:g} s): cite only segments from the question's segment on")
            later = next_time.get(qid)
            if dialogue.kind == "multi_question" and later is not None and ref.reply_span[0] >= later - EPS_S:
                problems.append(f"{label}: answers from {ref.reply_span[0]:g} s, after the next question is "
                                f"asked ({later:g} s)")
            for segment_id in ref.evidence:
                first = cited.setdefault(qid, {}).setdefault(segment_id, label)
                if first != label:
                    problems.append(f"{first} and {label} both cite segment {segment_id!r}")
        share = restated_share(ref.question, ref.answer)
        if share >= cfg.restatement_threshold:
            problems.append(f"{label}: {share:.0%} of the answer's words are already in the question, so the "
                            "question gives its answer away: ask without naming what happens")
        answers.setdefault(qid, []).append((label, ref.answer))
        every.append((label, ref.answer, qid, ref.immediate))

    for turn in turns:
        own = [a for a in answers.get(turn.question_id, []) if not a[0].endswith("immediate reply")]
        if not cfg.min_answers <= len(own) <= cfg.max_answers:
            problems.append(f"{labels[turn.question_id]} has {len(own)} answers; give between "
                            f"{cfg.min_answers} and {cfg.max_answers}")
    # An immediate reply summarises earlier answers of other questions by design: it is compared
    # with its own question's answers only.
    problems += _pair_problems([(e[0], e[1]) for e in every], "answers", cfg.near_duplicate_threshold,
                               lambda i, j: every[i][2] == every[j][2] or not (every[i][3] or every[j][3]))
    problems += _pair_problems([(labels[t.question_id], t.text) for t in turns], "questions",
                               cfg.near_duplicate_threshold)
    for turn in turns:
        for earlier in earlier_questions:
            if similarity(turn.text, earlier) >= cfg.near_duplicate_threshold:
                problems.append(f"{labels[turn.question_id]} repeats a question already asked about this "
                                f"video ({earlier!r})")
    return problems
