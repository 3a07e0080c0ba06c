"""Reading the manifest: one row per video from JSONL, CSV or Parquet; bad rows go to quarantine.

A bad row never stops the read: unreadable JSON, a missing id or uri, an id that is not a safe file
name, or a repeated id (the first one wins) each become one `Quarantine` row with stage "manifest".
Columns the row type does not know land in `metadata` (as strings), so a CSV can carry any extra
fields. Relative local paths in `uri` and `text_uri` resolve against the manifest's folder.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.records import Quarantine, check_safe_id

STAGE = "manifest"
TextFormat = Literal["whisperx", "narration", "csv"]


class ManifestRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    video_id: str = Field(min_length=1)
    uri: str = Field(min_length=1, description="local path (absolute after reading), file://, http(s)://, hf://, s3://, gs://, youtube:ID")
    source: str = Field("web", min_length=1, description="source family; admission rules are chosen by it")
    licence: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="expected checksum, if known")
    text_uri: str | None = Field(None, description="timestamped text shipped with the source")
    text_format: TextFormat | None = Field(None, description="None: decided from the file's content")
    text_origin: Literal["asr", "narration"] | None = None


class ManifestRead(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: list[ManifestRow]
    skips: list[Quarantine]


_KNOWN = set(ManifestRow.model_fields)


def is_local(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("youtube:")


def _resolve(uri: str | None, base: Path) -> str | None:
    if uri is None or not is_local(uri):
        return uri
    path = Path(uri).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _normalise(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Blank strings become absent; unknown keys go into metadata; local paths become absolute."""
    row = {k: v for k, v in raw.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    metadata = row.pop("metadata", None) or {}
    if isinstance(metadata, list):  # Parquet map columns come back as (key, value) pairs
        metadata = dict(metadata)
    if isinstance(metadata, str):  # a CSV cell holding a JSON object
        metadata = json.loads(metadata)
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be an object, got {type(metadata).__name__}")
    metadata = {str(k): _as_text(v) for k, v in metadata.items() if v is not None}
    for key in [k for k in row if k not in _KNOWN]:
        metadata[str(key)] = _as_text(row.pop(key))
    row["metadata"] = metadata
    for key in ("video_id", "uri", "text_uri", "source", "licence"):
        if key in row and not isinstance(row[key], str):
            row[key] = _as_text(row[key])
    if isinstance(row.get("sha256"), str):
        row["sha256"] = row["sha256"].strip().lower()
    row["uri"] = _resolve(row.get("uri"), base)
    row["text_uri"] = _resolve(row.get("text_uri"), base)
    if row.get("text_uri") and "text_format" not in row and row["text_uri"].lower().endswith(".csv"):
        row["text_format"] = "csv"
    return row


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    """(where, row or None, why not) per non-blank line."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield where, None, f"not JSON ({error.msg} at column {error.colno})"
                continue
            if not isinstance(row, dict):
                yield where, None, f"not a JSON object ({type(row).__name__})"
                continue
            yield where, row, ""


def _iter_csv(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), 2):
            extra = row.pop(None, None)  # values beyond the header: a broken line
            if extra:
                yield f"line {number}", None, f"{len(extra)} more values than header columns"
                continue
            yield f"line {number}", dict(row), ""


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    import pyarrow.parquet as pq

    for number, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield f"row {number}", row, ""


_READERS = {".jsonl": _iter_jsonl, ".ndjson": _iter_jsonl, ".csv": _iter_csv, ".parquet": _iter_parquet}


def _skip(item_id: str, reason: str, detail: str) -> Quarantine:
    return Quarantine(item_id=item_id, video_id=item_id, stage=STAGE, reason=reason, detail=detail)


def read_manifest(path: str | Path) -> ManifestRead:
    """All usable rows in file order, and a quarantine row for each one that is not usable.

    Raises only for the file as a whole (missing, unknown extension, unreadable Parquet)."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: manifest must be .jsonl, .csv or .parquet")
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    base = path.resolve().parent
    rows: list[ManifestRow] = []
    skips: list[Quarantine] = []
    seen: dict[str, str] = {}
    for where, raw, why in reader(path):
        if raw is None:
            skips.append(_skip(f"{path.name}:{where}", "unreadable_row", f"{where}: {why}"))
            continue
        video_id = raw.get("video_id")
        video_id = None if video_id is None else str(video_id).strip()
        if not video_id:
            skips.append(_skip(f"{path.name}:{where}", "missing_id", f"{where}: no video_id"))
            continue
        try:
            check_safe_id(video_id)
        except ValueError as error:
            skips.append(_skip(video_id, "unsafe_id", f"{where}: {error}"))
            continue
        if video_id in seen:
            skips.append(_skip(video_id, "duplicate_id", f"{where}: id already used at {seen[video_id]}; the first row wins"))
            continue
        if not str(raw.get("uri") or "").strip():
            skips.append(_skip(video_id, "missing_uri", f"{where}: no uri"))
            continue
        try:
            row = ManifestRow.model_validate(_normalise({**raw, "video_id": video_id}, base))
        except (ValidationError, ValueError) as error:
            problems = error.errors() if isinstance(error, ValidationError) else None
            detail = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems) if problems else str(error)
            skips.append(_skip(video_id, "invalid_row", f"{where}: {detail}"))
            continue
        seen[video_id] = where
        rows.append(row)
    return ManifestRead(rows=rows, skips=skips)
