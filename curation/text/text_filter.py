"""The whole-text filter on generated text: what every prompt forbids, checked in code.

The dialogue and caption prompts say "no timestamps, no segment ids"; a model that writes them
anyway ("At 00:12 the man ...", "as [vid-s0003] shows") would teach the assistant to read out times
it cannot know in a live stream. Control characters and invalid Unicode (a lone surrogate in a JSON
string) break readers and writers downstream. `forbidden_text_problems` names each offence as a
sentence the repair request can pass back to the model; a dialogue still offending after the repair
is quarantined with reason `forbidden_text`, a caption is dropped with that reason.

Timestamps in any common form: clock times (`0:12`, `00:12`, `1:02:03`, `12:30.5`), seconds with a
unit (`12 s`, `12.5s`, `at 12s`, `3 sec`, `4 seconds`; not "the 1990s"), second/minute marks (`the 12-second mark`), time spans
as the prompt lists them (`12.0-18.5`), and `t=12`. Durations in minutes or hours ("it bakes for 20
minutes") are content, not a position in the video, and pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_TIMESTAMPS = re.compile(
    # 0:12, 00:12, 1:02:03, 12:30.5; not a time of day on a clock in the picture ("10:30 pm")
    r"(?<![\w.:])\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?(?![\w:])(?!\s?[ap]\.?m\b)"
    r"|(?<![\w.])\d+(?:\.\d+)?\s?(?:secs?|seconds?)\b"  # 3 sec, 4 seconds, 2.5secs
    r"|(?<![\w.])\d+(?:\.\d+)?\ss\b|(?<![\w.])\d+\.\d+s\b"  # 12 s, 12.5s
    r"|\b(?:at|from|to|until|till|by|after|before|around)\s\d+s\b"  # at 12s (not "the 1990s")
    r"|\b\d+(?:\.\d+)?[- ](?:second|minute)s? mark\b"  # the 12-second mark
    r"|(?<![\w.])\d+\.\d+\s?[-\u2013]\s?\d+\.\d+(?![\w.])"  # 12.0-18.5 (the prompt's span form)
    r"|\bt\s?=\s?\d",  # t=12
    re.IGNORECASE,
)
_SEGMENT_ID = re.compile(r"-s\d{4,}\b")  # `<video_id>-sNNNN`, however the id before it looks
# Format characters that reorder or hide text (bidi overrides and isolates), plus the BOM.
_HIDDEN = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff"}


def control_characters(text: str) -> list[str]:
    """U+XXXX names of the control and hidden characters in `text` (lone surrogates included)."""
    found = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs") or char in _HIDDEN:
            name = f"U+{ord(char):04X}"
            if name not in found:
                found.append(name)
    return found


def forbidden_text_problems(label: str, text: str, segment_ids: Iterable[str] = ()) -> list[str]:
    """Each forbidden thing in one generated text, as a sentence naming `label`; [] when clean."""
    problems = []
    stamp = _TIMESTAMPS.search(text)
    if stamp:
        problems.append(f"{label}: contains a timestamp ({stamp.group(0).strip()!r}); say what happens, "
                        "never when")
    if _SEGMENT_ID.search(text) or any(sid in text for sid in segment_ids):
        problems.append(f"{label}: contains a segment id; cite segments only in segment_ids")
    controls = control_characters(text)
    if controls:
        problems.append(f"{label}: contains control characters ({', '.join(controls[:5])}); write plain text")
    return problems


def is_text_filter_problem(problem: str) -> bool:
    """Whether a problem sentence came from `forbidden_text_problems` (for the quarantine reason)."""
    return problem.endswith(("say what happens, never when", "cite segments only in segment_ids",
                             "write plain text"))
