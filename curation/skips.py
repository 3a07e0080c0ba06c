"""What a stage returns instead of a result when an item cannot go on: a countable reason.

Every reason is declared by the module that emits it, next to where it is emitted, as **final**
(the input decides it: the same row would fail the same way again) or **retryable** (a re-run may
pass: a server back up, a file readable again). The build redoes a video whose result holds a
retryable reason and reuses one whose reasons are all final. A reason nobody declared counts as
retryable (redoing costs time; reusing a wrong verdict would lose the row for good), and
`tests/test_skip_reasons.py` fails when code emits one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from schemas.records import Quarantine

_REASON = re.compile(r"^[a-z0-9_]+$")
Verdict = Literal["final", "retryable"]
_DECLARED: dict[str, Verdict] = {}


def declare_reasons(*, final: Iterable[str] = (), retryable: Iterable[str] = ()) -> None:
    """Declare the reasons a module emits. Two modules may declare one reason alike; declaring it
    final in one and retryable in another is a bug, refused at import."""
    for verdict, reasons in (("final", final), ("retryable", retryable)):
        for reason in reasons:
            if not _REASON.match(reason):
                raise ValueError(f"skip reason must be a lowercase code, got {reason!r}")
            if _DECLARED.setdefault(reason, verdict) != verdict:
                raise ValueError(f"skip reason {reason!r} is declared both final and retryable")


def verdict_of(reason: str) -> Verdict | None:
    """How a declared reason counts; None for one no imported module declares."""
    return _DECLARED.get(reason)


def is_retryable(reason: str) -> bool:
    """A re-run should try the item again (undeclared reasons included, see the module docstring)."""
    return _DECLARED.get(reason) != "final"


@dataclass(frozen=True)
class Skip:
    """A recorded, explained skip. `reason` is a stable code the summary counts; `detail` is prose."""

    stage: str
    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if not _REASON.match(self.reason):
            raise ValueError(f"skip reason must be a lowercase code, got {self.reason!r}")

    def to_quarantine(self, item_id: str, video_id: str, kind: str = "skip") -> Quarantine:
        return Quarantine(item_id=item_id, video_id=video_id, stage=self.stage, reason=self.reason,
                          detail=self.detail, kind=kind)

    def __str__(self) -> str:
        return f"{self.stage}/{self.reason}: {self.detail}" if self.detail else f"{self.stage}/{self.reason}"
