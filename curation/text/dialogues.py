"""Dialogue writing: an LLM reads a video's timestamped segments and writes questions and answers
citing segment ids; code turns the citations into reply windows, so every window is grounded.

Decisions (FACTS.md "The corpus" gives the published shape; the rest is ours):
- Dialogues per video: ceil(duration / `seconds_per_dialogue`) clamped to [min, max] = [2, 4]
  ("two to four question sets per video, by length"; 120 s each puts the published 93-164 s
  average videos at 2, i.e. about 2 questions per video as published).
- Mix: `single_question_share` of a video's dialogues are single_question, rounded up or down by a
  hash of the video id, so the share holds over the corpus, a video with two dialogues gets one of
  each at the default 0.5, and a resumed run makes the same choice. A video with fewer segments
  than `min_questions` gets single_question only.
- Window of an answer = the span from the first to the last segment it cites (FACTS.md: an answer's
  window is its segment's span; an answer citing several adjacent segments spans them all). Where
  inside the window the trainer puts the answer is the trainer's `EpisodeConfig.answer_position`
  ("end" by default, FACTS.md): one knob, in the one place that uses it.
- multi_question: a question is asked at the start of its `asked_at_segment`; its immediate reply is
  a reference with `immediate=True` and window [asked, asked + `immediate_window_s`].
- A video's dialogues are written one after another, each prompt listing the questions already
  asked, so question sets do not repeat (throughput comes from many videos at once).
- One repair request per invalid dialogue (original conversation + the bad answer + the problems);
  still invalid, or an LLM failure, -> a Quarantine row (stage "dialogues") with the reasons. Text
  the whole-text filter refuses (timestamps, segment ids, control characters) goes the same way,
  and is quarantined as `forbidden_text`; `DialogueOutcome.text_filter` counts what it caught.
- `Provenance.created_at` is when the model answered: the response's cache entry time when the
  client has a cache (so a re-run from the cache writes identical records), else now.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from curation.llm.cache import ResponseCache
from curation.llm.client import LLMClient, LLMFailure, LLMRequest, LLMResponse
from curation.skips import declare_reasons
from curation.text.config import DialogueConfig
from curation.text.dialogue_validation import dialogue_problems
from curation.text.prompts import Prompt, load_prompt
from curation.text.text_filter import is_text_filter_problem
from schemas.records import (
    Dialogue,
    Provenance,
    Quarantine,
    ReferenceAnswer,
    Scene,
    Segment,
    UserTurn,
    Video,
)

STAGE = "dialogues"
declare_reasons(final=("no_segments", "invalid_dialogue", "forbidden_text"))
# A stable label stored in every dialogue's provenance, not an import path: it kept its value when
# the module moved into curation/text/, so corpora built before and after compare equal.
GENERATOR = "curation.dialogues"
Kind = Literal["single_question", "multi_question"]


@dataclass(frozen=True)
class DialogueOutcome:
    dialogues: list[Dialogue] = field(default_factory=list)
    quarantined: list[Quarantine] = field(default_factory=list)
    # Dialogues whose first answer the text filter refused: "flagged", then "repaired" or "quarantined".
    text_filter: Counter = field(default_factory=Counter)
    # The yield of this video's dialogue requests: "attempted", "valid_first_try",
    # "valid_after_repair", "quarantined", and the "prompt_tokens"/"completion_tokens" the answers
    # cost (first tries and repairs, failed ones included; a cached answer counts what it cost).
    tally: Counter = field(default_factory=Counter)


# --- planning -----------------------------------------------------------------------------------
def unit_hash(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`: the same video gets the same choice on every run."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def dialogue_count(duration_s: float, cfg: DialogueConfig) -> int:
    wanted = math.ceil(duration_s / cfg.seconds_per_dialogue - 1e-9)
    return max(cfg.min_dialogues, min(cfg.max_dialogues, wanted))


def plan_kinds(video_id: str, duration_s: float, segment_count: int, cfg: DialogueConfig) -> list[Kind]:
    """The kinds of a video's dialogues, single_question first."""
    n = dialogue_count(duration_s, cfg)
    if segment_count < cfg.min_questions:
        return ["single_question"] * n
    singles = min(n, math.floor(n * cfg.single_question_share + unit_hash(video_id, "mix")))
    return ["single_question"] * singles + ["multi_question"] * (n - singles)


# --- prompt rendering ---------------------------------------------------------------------------
def render_segments(segments: list[Segment], scenes: list[Scene]) -> str:
    """`[<segment_id>] 12.0-18.5 s: text` lines, with a line at each scene boundary."""
    events: list[tuple[float, int, str]] = [
        (sc.start_s, 0, f"-- scene {sc.scene_id}: {sc.start_s:.1f}-{sc.end_s:.1f} s --") for sc in scenes]
    events += [(s.start_s, 1, f"[{s.segment_id}] {s.start_s:.1f}-{s.end_s:.1f} s: {s.text}") for s in segments]
    return "\n".join(line for _, _, line in sorted(events, key=lambda e: (e[0], e[1])))


def _prompt_for(kind: Kind, cfg: DialogueConfig) -> Prompt:
    version = cfg.single_question_prompt if kind == "single_question" else cfg.multi_question_prompt
    return load_prompt(kind, version)


def build_request(kind: Kind, video: Video, segments: list[Segment], scenes: list[Scene], cfg: DialogueConfig,
                  tag: str, earlier_questions: list[str]) -> LLMRequest:
    prompt = _prompt_for(kind, cfg)
    bounds = {"min_answers": cfg.min_answers, "max_answers": cfg.max_answers,
              "min_questions": cfg.min_questions, "max_questions": cfg.max_questions}
    avoid = ""
    if earlier_questions:
        avoid = "Already asked about this video (ask about something else):\n" + "\n".join(
            f"- {q}" for q in earlier_questions) + "\n"
    user = prompt.render_user(video_id=video.video_id, duration_s=f"{video.duration_s:.1f}", avoid=avoid,
                              segments=render_segments(segments, scenes), **bounds)
    messages = [{"role": "system", "content": prompt.render_system(**bounds)}, {"role": "user", "content": user}]
    return LLMRequest(messages=messages, schema_name=kind, prompt_version=prompt.prompt_version,
                      temperature=cfg.temperature, max_tokens=cfg.max_tokens, tag=tag)


def build_repair_request(original: LLMRequest, bad_text: str, problems: list[str], cfg: DialogueConfig) -> LLMRequest:
    prompt = load_prompt("repair", cfg.repair_prompt)
    follow_up = prompt.render_user(problems="\n".join(f"- {p}" for p in problems))
    messages = [*original.messages, {"role": "assistant", "content": bad_text},
                {"role": "user", "content": follow_up}]
    return original.model_copy(update={"messages": messages, "tag": f"{original.tag}/repair",
                                       "prompt_version": f"{original.prompt_version}+{prompt.prompt_version}"})


# --- citations -> records -----------------------------------------------------------------------
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


def dialogue_from_output(kind: Kind, data: dict, dialogue_id: str, video: Video, segments: list[Segment],
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


# --- the stage ----------------------------------------------------------------------------------
def answered_at(client: LLMClient, key: str) -> datetime:
    """When the model gave the answer with this key: the cache entry's time (stable across re-runs
    that read the cache), else now."""
    if client.cfg.cache_dir:
        try:
            mtime = ResponseCache(client.cfg.cache_dir).path_for(key).stat().st_mtime
            return datetime.fromtimestamp(int(mtime), UTC)
        except OSError:
            pass
    return datetime.now(UTC).replace(microsecond=0)


def _provenance(client: LLMClient, request: LLMRequest, key: str, repaired: bool) -> Provenance:
    params = {"temperature": str(request.temperature if request.temperature is not None else client.cfg.temperature),
              "max_tokens": str(request.max_tokens if request.max_tokens is not None else client.cfg.max_tokens),
              "request_key": key, "repaired": str(repaired).lower()}
    return Provenance(generator=GENERATOR, model=client.cfg.model, prompt_version=request.prompt_version,
                      parameters=params, created_at=answered_at(client, key))


def _attempt(kind: Kind, reply: LLMResponse | LLMFailure, request: LLMRequest, dialogue_id: str, video: Video,
             segments: list[Segment], client: LLMClient, cfg: DialogueConfig, earlier: list[str],
             repaired: bool) -> tuple[Dialogue | None, list[str]]:
    if isinstance(reply, LLMFailure):
        problem = f"not valid {kind} JSON: {reply.detail}"
        if reply.detail.endswith("(cut at max_tokens)"):
            # A small model that loops (SmolLM2-135M listing ids, issue 21) needs to hear why.
            problem += ": the answer ran past the token limit before the JSON closed; write a shorter one"
        return None, [problem]
    provenance = _provenance(client, request, reply.key, repaired)
    dialogue, problems = dialogue_from_output(kind, reply.data or {}, dialogue_id, video, segments, provenance, cfg)
    if dialogue is not None:
        problems += dialogue_problems(dialogue, segments, cfg, earlier)
    if dialogue is not None and not problems:
        dialogue = Dialogue.model_validate(dialogue.model_dump())  # a validated record from here on
    return dialogue, problems


def _quarantine(dialogue_id: str, video_id: str, reason: str, detail: str) -> Quarantine:
    return Quarantine(item_id=dialogue_id, video_id=video_id, stage=STAGE, reason=reason, detail=detail[:4000])


def write_dialogue(kind: Kind, index: int, video: Video, segments: list[Segment], scenes: list[Scene],
                   client: LLMClient, cfg: DialogueConfig, earlier: list[str],
                   text_filter: Counter | None = None, tally: Counter | None = None) -> Dialogue | Quarantine:
    """One dialogue, repaired once if needed; or the quarantine row saying why there is none.
    `text_filter` (when given) counts a dialogue the text filter flagged, and how it ended; `tally`
    (when given) counts the attempt, how it ended and the tokens its answers cost."""
    tally = Counter() if tally is None else tally
    tally["attempted"] += 1
    result = _write_dialogue(kind, index, video, segments, scenes, client, cfg, earlier,
                             Counter() if text_filter is None else text_filter, tally)
    if isinstance(result, Quarantine):
        tally["quarantined"] += 1
    else:
        tally["valid_after_repair" if result.provenance.parameters.get("repaired") == "true"
              else "valid_first_try"] += 1
    return result


def _count_tokens(reply: LLMResponse | LLMFailure, tally: Counter) -> None:
    tally["prompt_tokens"] += reply.prompt_tokens
    tally["completion_tokens"] += reply.completion_tokens


def _write_dialogue(kind: Kind, index: int, video: Video, segments: list[Segment], scenes: list[Scene],
                    client: LLMClient, cfg: DialogueConfig, earlier: list[str], text_filter: Counter,
                    tally: Counter) -> Dialogue | Quarantine:
    dialogue_id = f"{video.video_id}-d{index}"
    request = build_request(kind, video, segments, scenes, cfg, f"dialogue/{video.video_id}/{kind}/{index}", earlier)
    reply = client.complete(request)
    _count_tokens(reply, tally)
    repairable = isinstance(reply, LLMResponse) or (reply.reason == "llm_invalid_json" and reply.text)
    if not repairable:
        return _quarantine(dialogue_id, video.video_id, reply.reason, f"{kind}: {reply.detail}")
    dialogue, problems = _attempt(kind, reply, request, dialogue_id, video, segments, client, cfg, earlier, False)
    if not problems:
        return dialogue
    flagged = any(map(is_text_filter_problem, problems))
    text_filter["flagged"] += flagged
    if not cfg.repair:
        reason = reply.reason if isinstance(reply, LLMFailure) else _invalid_reason(problems)
        text_filter["quarantined"] += flagged
        return _quarantine(dialogue_id, video.video_id, reason, f"{kind}: " + "; ".join(problems))
    repair = build_repair_request(request, reply.text, problems, cfg)
    second = client.complete(repair)
    _count_tokens(second, tally)
    if isinstance(second, LLMFailure) and second.reason != "llm_invalid_json":
        text_filter["quarantined"] += flagged
        return _quarantine(dialogue_id, video.video_id, second.reason,
                           f"{kind} repair: {second.detail}; first answer: " + "; ".join(problems))
    dialogue, still = _attempt(kind, second, repair, dialogue_id, video, segments, client, cfg, earlier, True)
    if not still:
        text_filter["repaired"] += flagged
        return dialogue
    text_filter["quarantined"] += flagged
    return _quarantine(dialogue_id, video.video_id, _invalid_reason(still),
                       f"{kind}, after one repair: " + "; ".join(still) + " | first answer: " + "; ".join(problems))


def _invalid_reason(problems: list[str]) -> str:
    return "forbidden_text" if any(map(is_text_filter_problem, problems)) else "invalid_dialogue"


def generate_dialogues(video: Video, segments: list[Segment], scenes: list[Scene], client: LLMClient,
                       cfg: DialogueConfig) -> DialogueOutcome:
    """The video's dialogues (every one valid) and a quarantine row for each one that failed."""
    segments = sorted((s for s in segments if s.video_id == video.video_id), key=lambda s: (s.start_s, s.end_s))
    if not segments:
        return DialogueOutcome([], [_quarantine(video.video_id, video.video_id, "no_segments",
                                                "no timestamped segment to write dialogues from")])
    outcome = DialogueOutcome()
    earlier: list[str] = []
    for index, kind in enumerate(plan_kinds(video.video_id, video.duration_s, len(segments), cfg)):
        result = write_dialogue(kind, index, video, segments, scenes, client, cfg, earlier, outcome.text_filter,
                                outcome.tally)
        if isinstance(result, Quarantine):
            outcome.quarantined.append(result)
        else:
            outcome.dialogues.append(result)
            earlier += [t.text for t in result.user_turns]
    return outcome
