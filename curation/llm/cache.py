"""On-disk stores of LLM answers: the content-addressed response cache and the replay file.

Both are keyed by `LLMRequest.key` (sha256 of model, messages and resolved parameters), so a
re-run or a resumed run never pays for the same call twice, and a sample run needs no model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ResponseCache:
    """`<root>/<key[:2]>/<key>.json`, written atomically (tmp + rename) so a killed run never
    leaves a half-written entry that a resumed run would trust."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or None when absent or unreadable (a corrupt entry is a miss)."""
        try:
            entry = json.loads(self.path_for(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("text"), str):
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({**entry, "key": key}, fh, ensure_ascii=False, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


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
