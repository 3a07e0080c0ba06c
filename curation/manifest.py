"""Reading the manifest: one row per video from JSONL, CSV or Parquet; bad rows go to quarantine.

A bad row never stops the read: unreadable JSON, a missing id or uri, an id that is not a safe file
name or too long for the ids derived from it, a repeated id (the first one wins), or any field of
the wrong type, with invalid Unicode (a lone surrogate), control characters or over its length
limit each become one `Quarantine` row with stage "manifest", whose detail names the field and the
problem without quoting the value. Columns the row type does not know land in `metadata` (as
strings), so a CSV can carry any extra fields. Relative local paths in `uri` and `text_uri` resolve
against the manifest's folder. A CSV manifest holds one row per line: a quoted cell cannot span
lines, so an unclosed quote costs its own line, never the rows after it.
"""

from __future__ import annotations

import csv
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curation.skips import declare_reasons
from schemas.records import MAX_VIDEO_ID_CHARS, Quarantine, check_safe_id, printable

STAGE = "manifest"
# A row's own content decides each of these; a changed row is a new item.
declare_reasons(final=("invalid_row", "missing_id", "unsafe_id", "id_too_long", "duplicate_id", "missing_uri",
                       "unreadable_row"))
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
# Length limits per field, in characters: far above any real value, low enough that a hostile row
# cannot blow up a result file or a shard.
MAX_CHARS = {"uri": 4096, "text_uri": 4096, "source": 128, "licence": 1024, "sha256": 64,
             "text_format": 16, "text_origin": 16}
MAX_METADATA_ENTRIES = 256
MAX_METADATA_KEY_CHARS = 256
MAX_METADATA_VALUE_CHARS = 65536
_SCALARS = (str, int, float)


class RowProblem(ValueError):
    """A field of a row that cannot be used; the message describes it and never quotes it."""


def _check_text(field: str, value: str, limit: int, keep: str = "") -> None:
    if len(value) > limit:
        raise RowProblem(f"{field}: {len(value)} characters, over the limit of {limit}")
    for char in value:
        if "\ud800" <= char <= "\udfff":
            raise RowProblem(f"{field}: not valid Unicode (a lone surrogate)")
        if not char.isprintable() and char not in keep and char != " ":
            raise RowProblem(f"{field}: contains the control character U+{ord(char):04X}")


def is_local(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("youtube:")


def local_path(uri: str) -> Path | None:
    """The file a local path or file:// URI names; None for anything fetched from elsewhere."""
    if uri.startswith("file://"):
        return Path(urllib.parse.unquote(uri.removeprefix("file://")))
    return Path(uri) if is_local(uri) else None


def _resolve(uri: str | None, base: Path) -> str | None:
    if uri is None or not is_local(uri):
        return uri
    path = Path(uri).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (ValueError, TypeError, RecursionError):  # keys of mixed types, nesting too deep
        raise RowProblem(f"a {type(value).__name__} value that cannot be written as text") from None


def _normalise(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Blank strings become absent; unknown keys go into metadata; local paths become absolute.
    Raises RowProblem (or another ValueError/TypeError) for a field that cannot be used."""
    row = {str(k): v for k, v in raw.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    metadata = row.pop("metadata", None) or {}
    if isinstance(metadata, list):  # Parquet map columns come back as (key, value) pairs
        if not all(isinstance(p, list | tuple) and len(p) == 2 for p in metadata):
            raise RowProblem("metadata: must be an object (or a list of key/value pairs)")
        metadata = dict(metadata)
    if isinstance(metadata, str):  # a CSV cell holding a JSON object
        try:
            metadata = json.loads(metadata)
        except (ValueError, RecursionError):
            raise RowProblem("metadata: a text cell that is not a JSON object") from None
    if not isinstance(metadata, dict):
        raise RowProblem(f"metadata: must be an object, got {type(metadata).__name__}")
    metadata = {str(k): _as_text(v) for k, v in metadata.items() if v is not None}
    for key in [k for k in row if k not in _KNOWN]:
        metadata[key] = _as_text(row.pop(key))
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise RowProblem(f"metadata: {len(metadata)} entries, over the limit of {MAX_METADATA_ENTRIES}")
    for number, (key, value) in enumerate(metadata.items(), 1):
        _check_text(f"metadata key #{number}", key, MAX_METADATA_KEY_CHARS)
        _check_text(f"metadata value #{number}", value, MAX_METADATA_VALUE_CHARS, keep="\n\r\t")
    row["metadata"] = metadata
    for key, limit in MAX_CHARS.items():
        if key not in row:
            continue
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, _SCALARS):
            raise RowProblem(f"{key}: must be text, got {type(value).__name__}")
        row[key] = value = value if isinstance(value, str) else _as_text(value)
        _check_text(key, value, limit)
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
            except RecursionError:
                yield where, None, "not JSON (nested too deeply)"
                continue
            if not isinstance(row, dict):
                yield where, None, f"not a JSON object ({type(row).__name__})"
                continue
            yield where, row, ""


def _iter_csv(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    """One row per physical line (see the module docstring), each parsed on its own, strictly."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        header: list[str] | None = None
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if header is None:
                header = _csv_cells(line) or []
                if not header:
                    return
                continue
            if not line.strip():
                continue
            where = f"line {number}"
            if "\x00" in line:
                yield where, None, "contains a NUL byte"
                continue
            try:
                cells = _csv_cells(line)
            except csv.Error:
                yield where, None, "broken CSV quoting (an unclosed or stray quote)"
                continue
            if cells is None:
                continue
            if len(cells) > len(header):  # values beyond the header: a broken line
                yield where, None, f"{len(cells) - len(header)} more values than header columns"
                continue
            yield where, dict(zip(header, cells + [None] * (len(header) - len(cells)), strict=True)), ""


def _csv_cells(line: str) -> list[str] | None:
    rows = list(csv.reader([line], strict=True))
    return rows[0] if rows else None


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    import pyarrow.parquet as pq

    for number, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield f"row {number}", row, ""


_READERS = {".jsonl": _iter_jsonl, ".ndjson": _iter_jsonl, ".csv": _iter_csv, ".parquet": _iter_parquet}


def _skip(item_id: str, reason: str, detail: str) -> Quarantine:
    return Quarantine(item_id=item_id, video_id=item_id, stage=STAGE, reason=reason, detail=detail)


def _row_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("video_id")
    if value is None or isinstance(value, bool) or not isinstance(value, _SCALARS):
        return None
    return str(value).strip()


def _check_row(path: Path, where: str, raw: dict[str, Any], base: Path,
               seen: dict[str, str]) -> ManifestRow | Quarantine:
    """The usable row, or the quarantine row saying why not. Raises nothing a value can cause."""
    if "video_id" in raw and raw["video_id"] is not None and _row_id(raw) is None:
        return _skip(f"{path.name}:{where}", "invalid_row",
                     f"{where}: video_id must be text, got {type(raw['video_id']).__name__}")
    video_id = _row_id(raw)
    if not video_id:
        return _skip(f"{path.name}:{where}", "missing_id", f"{where}: no video_id")
    try:
        check_safe_id(video_id)
    except ValueError:
        # Described, not quoted: the id may hold anything (a lone surrogate, a megabyte of text).
        return _skip(printable(video_id, 120), "unsafe_id",
                     f"{where}: unsafe id ({len(video_id)} characters): use letters, digits, '.', '_' or '-' "
                     "(no path separators, no '..', starting with a letter or digit)")
    if len(video_id) > MAX_VIDEO_ID_CHARS:
        return _skip(video_id, "id_too_long",
                     f"{where}: id of {len(video_id)} characters; at most {MAX_VIDEO_ID_CHARS}, so the "
                     "segment, dialogue and question ids made from it stay valid")
    if video_id in seen:
        return _skip(video_id, "duplicate_id", f"{where}: id already used at {seen[video_id]}; the first row wins")
    uri = raw.get("uri")
    if uri is None or (isinstance(uri, str) and not uri.strip()):
        return _skip(video_id, "missing_uri", f"{where}: no uri")
    try:
        return ManifestRow.model_validate(_normalise({**raw, "video_id": video_id}, base))
    except ValidationError as error:
        detail = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors())
    except RowProblem as error:
        detail = str(error)
    except (ValueError, TypeError, OSError, RecursionError) as error:  # e.g. a path the OS refuses
        detail = f"a field could not be read ({type(error).__name__})"
    return _skip(video_id, "invalid_row", f"{where}: {detail}")


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
        checked = _check_row(path, where, raw, base, seen)
        if isinstance(checked, Quarantine):
            skips.append(checked)
            continue
        seen[checked.video_id] = where
        rows.append(checked)
    return ManifestRead(rows=rows, skips=skips)
