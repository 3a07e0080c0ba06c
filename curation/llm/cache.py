"""On-disk stores of LLM answers: the content-addressed response cache and the replay file.

Both are keyed by `LLMRequest.key` (sha256 of model, messages and resolved parameters), so a
re-run or a resumed run never pays for the same call twice, and a sample run needs no model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curation.json_store import JsonStore


class ResponseCache(JsonStore):
    """Answers by request key (`curation.json_store`: atomic, a corrupt entry is a miss)."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or None when absent, unreadable or without its answer's text."""
        entry = super().get(key)
        return entry if entry is not None and isinstance(entry.get("text"), str) else None


def load_replay(path: str | Path) -> dict[str, dict[str, Any]]:
    """Replay answers by key from JSONL lines `{"key", "tag", "text"}` (a later line wins).

    A malformed line is a broken sample artifact, not a model failure: it raises, naming the line.
    """
    answers: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            if not (isinstance(row, dict) and isinstance(row.get("key"), str) and isinstance(row.get("text"), str)):
                raise ValueError(f"{path}:{lineno}: a replay line needs string 'key' and 'text'")
            answers[row["key"]] = row
    return answers


def write_replay(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write replay lines (dicts with at least key, tag, text) atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"key": r["key"], "tag": r.get("tag", ""), "text": r["text"]}, ensure_ascii=False)
             for r in rows]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    return len(lines)
