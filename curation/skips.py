"""What a stage returns instead of a result when an item cannot go on: a countable reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.records import Quarantine

_REASON = re.compile(r"^[a-z0-9_]+$")


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
