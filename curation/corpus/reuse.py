"""Whether a stored result may stand for a manifest row on a re-run, and if not, why.

A result is reused only when everything that made it is unchanged. "Changed" compares:

- the config fingerprint (`CorpusConfig.fingerprint`: stage configs, LLM model, versions);
- the manifest row, normalised as the reader gives it (every `ManifestRow` field: id, uri,
  source, licence, metadata, sha256, text_uri, text_format, text_origin) as sorted JSON;
- the text the row points to: the sha256 of a local file's bytes, or `absent`; a remote
  `text_uri` (http, s3, hf) counts by its URI, which is part of the row;
- the video the row points to: a local file by its size and modification time in ns (a file
  replaced, edited or restored from elsewhere differs), or `absent`; a remote one by its URI and
  the manifest's `sha256` when the row gives one (both in the row): we cannot see a server's
  file change without downloading it;
- the acquired copy the result's `videos` row names (`path`) is still there with its size;
- for a result quarantined by a verdict that depends on limits, the limits it was made under
  (`CorpusConfig.verdict_limits`): the stage budgets for `stage_timeout`, the download's size cap,
  schemes and checks for a verdict of the acquire stage.

The digests are computed before a video's first stage and stored in its result
(`VideoResult.inputs`), and the catalogue keeps them, so the check opens no result file: a
change made while a video runs makes the stored digest old, so the next run redoes it.
Then a result is final unless it holds a crash or a reason its emitter declared retryable
(`curation.skips`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from curation.corpus.catalogue import CatalogueEntry
from curation.hashing import ABSENT, file_state, sha256_file
from curation.manifest import ManifestRow, local_path
from curation.skips import is_retryable

INPUT_PARTS = ("row", "text", "video")


def _text_state(text_uri: str | None) -> str:
    if not text_uri:
        return ""
    path = local_path(text_uri)
    if path is None:
        return "remote"
    try:
        return sha256_file(path)
    except OSError:
        return ABSENT


def row_inputs(row: ManifestRow, limits: dict[str, str] | None = None) -> dict[str, str]:
    """Digests of what a row's result is made from (see the module docstring), with `limits`
    (`CorpusConfig.verdict_limits()`)."""
    canonical = json.dumps(row.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    video = local_path(row.uri)
    return {"row": hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16],
            "text": _text_state(row.text_uri),
            "video": file_state(video) if video is not None else "remote"} | (limits or {})


def copy_present(corpus_root: Path, video_file: str) -> bool:
    """The acquired copy named by a result (`path:bytes`, '' for no video row) is still in place."""
    if not video_file:
        return True
    path, _, size = video_file.rpartition(":")
    try:
        return os.stat(corpus_root / path).st_size == int(size)
    except (OSError, ValueError):
        return False


REDO_WHY = {"new": "new", "config": "config changed", "row": "manifest row changed",
            "text": "text changed", "video": "video file changed", "copy": "acquired copy missing",
            "limits": "quarantined under other limits", "retry": "retryable failure"}


def _limits_of(stage: str, reason: str) -> str | None:
    """Which of `CorpusConfig.verdict_limits` a verdict depends on, if any."""
    return "budgets" if reason == "stage_timeout" else "download" if stage == "acquire" else None


def redo_reason(entry: CatalogueEntry | None, row: ManifestRow, fingerprint: str, corpus_root: Path,
                limits: dict[str, str] | None = None) -> str | None:
    """None when the stored result stands for the row as it is now; else a key of `REDO_WHY`."""
    if entry is None:
        return "new"
    if entry.config_fingerprint != fingerprint:
        return "config"
    stored, current = entry.inputs or {}, row_inputs(row, limits)
    for part in INPUT_PARTS:
        if stored.get(part) != current[part]:
            return part
    if not copy_present(corpus_root, entry.video_file):
        return "copy"
    quarantine = entry.quarantine
    for stage, reason, _ in quarantine:
        part = _limits_of(stage, reason)
        if part is not None and stored.get(part) != current.get(part):
            return "limits"
    if any(kind == "error" or is_retryable(reason) for _, reason, kind in quarantine):
        return "retry"
    return None
