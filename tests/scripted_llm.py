"""A deterministic stand-in for the dialogue-writing LLM, served by `tests.openai_stub.StubServer`.

It reads the pipeline's real prompts (the segment lines `[id] start-end s: text`, the counts asked
for) and answers each with valid JSON, so a whole corpus build can run against a real HTTP server
for manifests that the replay file does not cover (generated videos in fault tests and the soak).
The answer is a pure function of the request: an interrupted and a clean run get the same text.
Faults are switched on per request by `FaultPlan`: whether a request is faulted is a pure function of
the request and the attempt number; which fault it gets goes round the kinds in the order faulted
requests first arrive, so every kind is exercised once as many requests are faulted (a hash of the
request left a kind out whenever the prompts changed).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.openai_stub import Reply

SEGMENT_LINE = re.compile(r"^\[(?P<id>[^\]\s]+)\] (?P<start>[\d.]+)-(?P<end>[\d.]+) s: (?P<text>.*)$", re.M)
BETWEEN = re.compile(r"between (\d+) and (\d+) (answers|questions)")
WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "glacier", "harbour", "indigo",
         "jasper", "kelp", "lagoon", "meadow", "nebula", "orchard", "prairie", "quartz", "reef")


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def kind_of(body: dict[str, Any]) -> str:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["name"]
    system = _text_of(body["messages"][0]).lower()
    if "describe one scene" in system:
        return "scene_caption"
    return "multi_question" if "questions that a viewer asks" in system else "single_question"


def _bounds(prompt: str, what: str, default: tuple[int, int]) -> tuple[int, int]:
    for low, high, noun in BETWEEN.findall(prompt):
        if noun == what:
            return int(low), int(high)
    return default


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()


CAPTIONS = ("A {a} test card with numbered squares fills the screen.",
            "Thin {a} stripes scroll upward over a dark background.",
            "A spinning {a} wheel sits beside a digital clock reading {n}.",
            "Concentric {a} rings pulse outward from the centre of the frame.",
            "Noise flickers across the picture, tinted {a}, with a bar at the bottom.",
            "A {a} fractal zooms slowly toward a bright spiral.",
            "Rows of {a} letters march from right to left.",
            "A bouncing {a} ball leaves a trail of {n} dots.")


def _caption(body: dict[str, Any]) -> dict[str, Any]:
    # Different sentence shapes per scene, so two captions of one video are never near-duplicates.
    prompt = "\n".join(_text_of(m) for m in body["messages"])
    match = re.search(r"scene \S*?(\d+) ", prompt)
    scene = int(match.group(1)) if match else 0
    h = int(_digest(body)[:8], 16)
    return {"caption": CAPTIONS[scene % len(CAPTIONS)].format(a=WORDS[h % len(WORDS)], n=h % 97)}


def _answers(segments: list[dict[str, str]], low: int, high: int) -> list[dict[str, Any]]:
    chosen = segments[: max(low, min(high, len(segments)))]
    return [{"segment_ids": [s["id"]], "answer": s["text"]} for s in chosen]


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The valid JSON answer to one pipeline request (repairs are answered like the original)."""
    kind = kind_of(body)
    if kind == "scene_caption":
        return _caption(body)
    prompt = "\n".join(_text_of(m) for m in body["messages"])
    segments = [m.groupdict() for m in SEGMENT_LINE.finditer(prompt)]
    seen, unique = set(), []
    for s in segments:
        if s["id"] not in seen:
            seen.add(s["id"])
            unique.append(s)
    segments = unique
    low, high = _bounds(prompt, "answers", (1, 4))
    if kind == "single_question":
        return {"question": "What does the video show as it plays?", "answers": _answers(segments, low, high)}
    q_low, q_high = _bounds(prompt, "questions", (2, 4))
    count = max(1, min(q_low, len(segments) // max(low, 1)))
    step = len(segments) // count
    questions = []
    for i in range(count):
        part = segments[i * step: (i + 1) * step if i < count - 1 else len(segments)]
        questions.append({
            "question": ["What is on screen now?", "What comes next in the video?", "How does it end?",
                         "What changes after this?"][i % 4],
            "asked_at_segment": part[0]["id"],
            "immediate_reply": None if i == 0 else f"Before this the video showed: {segments[0]['text']}",
            "answers": _answers(part, low, high),
        })
    return {"questions": questions}


@dataclass
class FaultPlan:
    """Which requests misbehave, decided by a hash of the request: `rate` of requests get a fault
    on their first `attempts` tries, then a good answer; the n-th faulted request gets kind n modulo
    the kinds, on every try."""

    rate: float = 0.0
    attempts: int = 1
    kinds: tuple[str, ...] = ("429", "500", "truncated", "empty", "bad_ids", "slow")
    slow_s: float = 0.0
    tries: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    faulted: set[str] = field(default_factory=set)
    fault_of: dict[str, str] = field(default_factory=dict)  # digest -> its fault, in order of first fault
    lock: threading.Lock = field(default_factory=threading.Lock)

    def survived(self) -> int:
        """Faulted requests that were asked again and then answered well."""
        return sum(self.tries[d] > self.attempts for d in self.faulted)

    def __call__(self, body: dict[str, Any]) -> Reply:
        digest = _digest(body)
        with self.lock:
            attempt = self.tries.get(digest, 0)
            self.tries[digest] = attempt + 1
        good = json.dumps(answer(body))
        bucket = int(digest[:8], 16) / 0xFFFFFFFF
        if bucket >= self.rate or attempt >= self.attempts:
            return Reply(content=good)
        with self.lock:
            fault = self.fault_of.setdefault(digest, self.kinds[len(self.fault_of) % len(self.kinds)])
            self.injected[fault] = self.injected.get(fault, 0) + 1
            self.faulted.add(digest)
        if fault in ("429", "500"):
            return Reply.error(int(fault), f"injected {fault}")
        if fault == "truncated":
            return Reply(content=good[: len(good) // 2])
        if fault == "empty":
            return Reply(content="")
        if fault == "slow":
            return Reply(content=good, delay_s=self.slow_s)
        # Citations of segments that do not exist: timestamps outside the video, in effect.
        return Reply(content=re.sub(r'"([^"]+-s)(\d{4})"', r'"\g<1>9\2"', good))
