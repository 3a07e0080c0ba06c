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
- A valid dialogue then meets the quality gate (`dialogue_quality`): its figures go on the row; a
  rule it breaks goes into the same one repair, and a dialogue still breaking one is quarantined
  as `low_quality` with the rules' names.
- Every reply of a failed request (first try and repair) is kept in `DialogueOutcome.raw_replies`
  (the flow writes them under the corpus's work folder and points the quarantine row at them); a
  repair whose reply repeats the first is counted (`tally["repair_repeated"]`).
- Bounds before any request: more than `max_segments_per_video` segments, or more than
  `max_segments_per_s` per second of video, is one `too_many_segments` row for the video (an input
  error, not a request to send); the client refuses a request over `llm.max_request_chars`.
- `Provenance.created_at` is when the model answered: the response's cache entry time when the
  client has a cache (so a re-run from the cache writes identical records), else now.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from curation.llm.cache import ResponseCache
from curation.llm.client import LLMClient, LLMFailure, LLMRequest, LLMResponse
from curation.skips import declare_reasons
from curation.text.config import DialogueConfig
from curation.text.dialogue_quality import assess_dialogue, is_quality_problem
from curation.text.dialogue_records import dialogue_from_output, expand_compact
from curation.text.dialogue_requests import build_repair_request, build_request, render_segments
from curation.text.dialogue_validation import dialogue_problems
from curation.text.text_filter import is_text_filter_problem
from schemas.records import Dialogue, Provenance, Quarantine, Scene, Segment, Video

# Re-exported: the stage's callers and tests reach the request and record builders through here.
__all__ = ["DialogueOutcome", "build_repair_request", "build_request", "dialogue_from_output", "generate_dialogues",
           "render_segments", "write_dialogue"]
STAGE = "dialogues"
declare_reasons(final=("no_segments", "invalid_dialogue", "forbidden_text", "low_quality",
                       "too_many_segments"))
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
    # Every reply of a request that failed, by dialogue id: [{"attempt": "first" | "repair", "key",
    # "reason", "problems", "text"}], the first try and the repair (kept whether or not it passed).
    raw_replies: dict[str, list[dict]] = field(default_factory=dict)


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
            # A small model that loops (SmolLM2-135M listing ids) needs to hear why.
            problem += ": the answer ran past the token limit before the JSON closed; write a shorter one"
        return None, [problem]
    provenance = _provenance(client, request, reply.key, repaired)
    data, problems = reply.data or {}, []
    if cfg.output_shape == "compact":
        data, problems = expand_compact(kind, data, segments, cfg)
    dialogue, more = dialogue_from_output(kind, data, dialogue_id, video, segments, provenance, cfg)
    problems += more
    if dialogue is not None:
        problems += dialogue_problems(dialogue, segments, cfg, earlier)
    if dialogue is not None and not problems and cfg.quality.enabled:
        verdict = assess_dialogue(dialogue, segments, cfg.quality)
        problems += verdict.problems()
        dialogue = dialogue.model_copy(update={"quality": verdict.figures})
    if dialogue is not None and not problems:
        dialogue = Dialogue.model_validate(dialogue.model_dump())  # a validated record from here on
    return dialogue, problems


def _raw(attempt: str, reply: LLMResponse | LLMFailure, problems: list[str]) -> dict[str, Any]:
    reason = reply.reason if isinstance(reply, LLMFailure) else _invalid_reason(problems) if problems else "kept"
    return {"attempt": attempt, "key": reply.key, "reason": reason, "problems": problems, "text": reply.text}


def _keep_repair(replies: list[dict], first: LLMResponse | LLMFailure, second: LLMResponse | LLMFailure,
                 problems: list[str], tally: Counter) -> None:
    """The repair's reply (when it has text) after the first, with its problems and whether it
    repeats the first (counted)."""
    if second.text:
        repeated = _same_reply(first, second)
        tally["repair_repeated"] += repeated
        replies.append({**_raw("repair", second, problems), "repeats_first": repeated})


def _same_reply(a: LLMResponse | LLMFailure, b: LLMResponse | LLMFailure) -> bool:
    """Whether a repair's reply repeats the first (the same text, or the same parsed answer)."""
    if " ".join(a.text.split()) == " ".join(b.text.split()):
        return True
    return isinstance(a, LLMResponse) and isinstance(b, LLMResponse) and a.data is not None and a.data == b.data


def _quarantine(dialogue_id: str, video_id: str, reason: str, detail: str) -> Quarantine:
    return Quarantine(item_id=dialogue_id, video_id=video_id, stage=STAGE, reason=reason, detail=detail[:4000])


def write_dialogue(kind: Kind, index: int, video: Video, segments: list[Segment], scenes: list[Scene],
                   client: LLMClient, cfg: DialogueConfig, earlier: list[str],
                   text_filter: Counter | None = None, tally: Counter | None = None,
                   raw_replies: dict[str, list[dict]] | None = None) -> Dialogue | Quarantine:
    """One dialogue, repaired once if needed; or the quarantine row saying why there is none.
    `text_filter` (when given) counts a dialogue the text filter flagged, and how it ended; `tally`
    (when given) counts the attempt, how it ended and the tokens its answers cost."""
    tally = Counter() if tally is None else tally
    tally["attempted"] += 1
    result = _write_dialogue(kind, index, video, segments, scenes, client, cfg, earlier,
                             Counter() if text_filter is None else text_filter, tally,
                             {} if raw_replies is None else raw_replies)
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
                    tally: Counter, raw: dict[str, list[dict]]) -> Dialogue | Quarantine:
    dialogue_id = f"{video.video_id}-d{index}"
    request = build_request(kind, video, segments, scenes, cfg, f"dialogue/{video.video_id}/{kind}/{index}", earlier)
    reply = client.complete(request)
    _count_tokens(reply, tally)
    repairable = isinstance(reply, LLMResponse) or (reply.reason == "llm_invalid_json" and reply.text)
    if not repairable:
        if reply.text:
            raw[dialogue_id] = [_raw("first", reply, [reply.detail])]
        return _quarantine(dialogue_id, video.video_id, reply.reason, f"{kind}: {reply.detail}")
    dialogue, problems = _attempt(kind, reply, request, dialogue_id, video, segments, client, cfg, earlier, False)
    if not problems:
        return dialogue
    raw[dialogue_id] = [_raw("first", reply, problems)]
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
        _keep_repair(raw[dialogue_id], reply, second, [second.detail], tally)
        text_filter["quarantined"] += flagged
        return _quarantine(dialogue_id, video.video_id, second.reason,
                           f"{kind} repair: {second.detail}; first answer: " + "; ".join(problems))
    dialogue, still = _attempt(kind, second, repair, dialogue_id, video, segments, client, cfg, earlier, True)
    _keep_repair(raw[dialogue_id], reply, second, still, tally)
    if not still:
        text_filter["repaired"] += flagged
        return dialogue
    text_filter["quarantined"] += flagged
    return _quarantine(dialogue_id, video.video_id, _invalid_reason(still),
                       f"{kind}, after one repair: " + "; ".join(still) + " | first answer: " + "; ".join(problems))


def _invalid_reason(problems: list[str]) -> str:
    if any(map(is_text_filter_problem, problems)):
        return "forbidden_text"
    return "low_quality" if problems and all(map(is_quality_problem, problems)) else "invalid_dialogue"


def segment_bound_problem(segments: list[Segment], duration_s: float, cfg: DialogueConfig) -> str | None:
    """Why a video has too many segments to write dialogues from, or None."""
    n = len(segments)
    if n > cfg.max_segments_per_video:
        return f"{n} segments; at most {cfg.max_segments_per_video} per video (dialogues.max_segments_per_video)"
    if n > cfg.max_segments_per_s * max(duration_s, 1.0):
        return (f"{n} segments in {duration_s:g} s; at most {cfg.max_segments_per_s:g} per second "
                "(dialogues.max_segments_per_s)")
    return None


def generate_dialogues(video: Video, segments: list[Segment], scenes: list[Scene], client: LLMClient,
                       cfg: DialogueConfig) -> DialogueOutcome:
    """The video's dialogues (every one valid) and a quarantine row for each one that failed."""
    segments = sorted((s for s in segments if s.video_id == video.video_id), key=lambda s: (s.start_s, s.end_s))
    if not segments:
        return DialogueOutcome([], [_quarantine(video.video_id, video.video_id, "no_segments",
                                                "no timestamped segment to write dialogues from")])
    too_many = segment_bound_problem(segments, video.duration_s, cfg)
    if too_many:
        return DialogueOutcome([], [_quarantine(video.video_id, video.video_id, "too_many_segments", too_many)])
    outcome = DialogueOutcome()
    earlier: list[str] = []
    for index, kind in enumerate(plan_kinds(video.video_id, video.duration_s, len(segments), cfg)):
        result = write_dialogue(kind, index, video, segments, scenes, client, cfg, earlier, outcome.text_filter,
                                outcome.tally, outcome.raw_replies)
        if isinstance(result, Quarantine):
            outcome.quarantined.append(result)
        else:
            outcome.dialogues.append(result)
            earlier += [t.text for t in result.user_turns]
    return outcome
