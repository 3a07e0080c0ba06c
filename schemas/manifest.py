"""The manifest: one row per video, in JSONL, CSV or Parquet; what a usable row is, and why not.

A bad row never stops the read: unreadable JSON, a missing id or uri, an id that is not a safe file
name or too long for the ids derived from it, a repeated id (the first one wins), or any field of
the wrong type, with invalid Unicode (a lone surrogate), control characters or over its length
limit each become one `Quarantine` row with stage "manifest", whose detail names the field and the
problem without quoting the value. Columns the row type does not know land in `metadata` (as
strings), so a CSV can carry any extra fields. A CSV manifest holds one row per line: a quoted cell
cannot span lines, so an unclosed quote costs its own line, never the rows after it. A UTF-8 byte
order mark (what spreadsheet exports write) is read as no character.

A bad file is another matter: a Parquet file that does not open, a file where no row has
`video_id` or `uri` (`url`, `vidoe_id`: a misnamed column), or one with no usable row at all (a
trailing comma on every JSONL line) is a mistake to fix before anything is built, so
`unusable_manifest` names it as one line, with the column it probably meant.

It lives in `schemas` (the input contract, as the records are the output one) so that
`python -m schemas validate manifest.jsonl` checks manifest rows by the rules a build applies;
`curation.manifest` reads a manifest for a build (local paths resolved against its folder).
"""

from __future__ import annotations

import csv
import difflib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.records import MAX_VIDEO_ID_CHARS, Quarantine, check_safe_id, printable

STAGE = "manifest"
TextFormat = Literal["whisperx", "narration", "csv"]
SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")
REQUIRED = ("video_id", "uri")


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


KNOWN = set(ManifestRow.model_fields)
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


class ManifestFileError(ValueError):
    """The manifest file as a whole cannot be used; the message is one line naming the fix."""


def _check_text(field: str, value: str, limit: int, keep: str = "") -> None:
    if len(value) > limit:
        raise RowProblem(f"{field}: {len(value)} characters, over the limit of {limit}")
    for char in value:
        if "\ud800" <= char <= "\udfff":
            raise RowProblem(f"{field}: not valid Unicode (a lone surrogate)")
        if not char.isprintable() and char not in keep and char != " ":
            raise RowProblem(f"{field}: contains the control character U+{ord(char):04X}")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (ValueError, TypeError, RecursionError):  # keys of mixed types, nesting too deep
        raise RowProblem(f"a {type(value).__name__} value that cannot be written as text") from None


def normalise_row(raw: dict[str, Any]) -> dict[str, Any]:
    """Blank strings become absent; unknown keys go into metadata; each field is checked.
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
    for key in [k for k in row if k not in KNOWN]:
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
    if row.get("text_uri") and "text_format" not in row and row["text_uri"].lower().endswith(".csv"):
        row["text_format"] = "csv"
    return row


Rows = Iterator[tuple[str, dict[str, Any] | None, str]]


def iter_jsonl(path: Path) -> Rows:
    """(where, row or None, why not) per non-blank line."""
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
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


def iter_csv(path: Path) -> Rows:
    """One row per physical line (see the module docstring), each parsed on its own, strictly."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        header: list[str] | None = None
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if header is None:
                try:
                    header = _csv_cells(line) or []
                except csv.Error:
                    raise ManifestFileError(f"{path.name}: the header line has broken CSV quoting") from None
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


def iter_parquet(path: Path) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as error:  # truncated, not Parquet, unreadable
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ManifestFileError(f"{path.name}: not a readable Parquet file ({first[:200]})") from None
    for number, row in enumerate(rows, 1):
        yield f"row {number}", row, ""


READERS = {".jsonl": iter_jsonl, ".ndjson": iter_jsonl, ".csv": iter_csv, ".parquet": iter_parquet}


def skip_row(item_id: str, reason: str, detail: str) -> Quarantine:
    return Quarantine(item_id=item_id, video_id=item_id, stage=STAGE, reason=reason, detail=detail)


def _row_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("video_id")
    if value is None or isinstance(value, bool) or not isinstance(value, _SCALARS):
        return None
    return str(value).strip()


def check_row(name: str, where: str, raw: dict[str, Any], seen: dict[str, str]) -> ManifestRow | Quarantine:
    """The usable row (paths as written), or the quarantine row saying why not. Raises nothing a
    value can cause. `name`: the manifest's file name; `seen`: id -> where, of earlier usable rows."""
    if "video_id" in raw and raw["video_id"] is not None and _row_id(raw) is None:
        return skip_row(f"{name}:{where}", "invalid_row",
                        f"{where}: video_id must be text, got {type(raw['video_id']).__name__}")
    video_id = _row_id(raw)
    if not video_id:
        return skip_row(f"{name}:{where}", "missing_id", f"{where}: no video_id")
    try:
        check_safe_id(video_id)
    except ValueError:
        # Described, not quoted: the id may hold anything (a lone surrogate, a megabyte of text).
        return skip_row(printable(video_id, 120), "unsafe_id",
                        f"{where}: unsafe id ({len(video_id)} characters): use letters, digits, '.', '_' or '-' "
                        "(no path separators, no '..', starting with a letter or digit)")
    if len(video_id) > MAX_VIDEO_ID_CHARS:
        return skip_row(video_id, "id_too_long",
                        f"{where}: id of {len(video_id)} characters; at most {MAX_VIDEO_ID_CHARS}, so the "
                        "segment, dialogue and question ids made from it stay valid")
    if video_id in seen:
        return skip_row(video_id, "duplicate_id", f"{where}: id already used at {seen[video_id]}; the first row wins")
    uri = raw.get("uri")
    if uri is None or (isinstance(uri, str) and not uri.strip()):
        return skip_row(video_id, "missing_uri", f"{where}: no uri")
    try:
        return ManifestRow.model_validate(normalise_row({**raw, "video_id": video_id}))
    except ValidationError as error:
        detail = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors())
    except RowProblem as error:
        detail = str(error)
    except (ValueError, TypeError, RecursionError) as error:
        detail = f"a field could not be read ({type(error).__name__})"
    return skip_row(video_id, "invalid_row", f"{where}: {detail}")


def reader_for(path: Path):
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ManifestFileError(f"{path}: a manifest must be .jsonl, .csv or .parquet")
    return reader


def _did_you_mean(column: str, found: set[str]) -> str:
    close = difflib.get_close_matches(column, sorted(found - KNOWN), n=1, cutoff=0.5)
    if close:
        return f"; it has `{close[0]}` (did you mean `{column}`? rename that column)"
    listed = ", ".join(f"`{c}`" for c in sorted(found)[:8]) or "none"
    return f" (the columns are {listed}; every row needs `video_id` and `uri`)"


def unusable_manifest(name: str, columns: set[str], lines: int, usable: int,
                      skips: list[Quarantine]) -> str:
    """"" when the manifest is usable; else one line saying why not and what to change."""
    readable = lines - sum(q.reason == "unreadable_row" for q in skips)
    if lines == 0:
        return f"{name}: no rows (one row per video: `video_id`, `uri`, ...)"
    if readable == 0:
        first = next(q.detail for q in skips if q.reason == "unreadable_row")
        return (f"{name}: none of its {lines} rows can be read ({first}); fix the file's format "
                "(JSONL: one JSON object per line, no trailing commas)")
    for column in REQUIRED:
        if column not in columns:
            return f"{name}: no row has a `{column}` column{_did_you_mean(column, columns)}"
    if usable == 0:
        counts = Counter(q.reason for q in skips)
        tally = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
        return f"{name}: no usable row ({tally}; first: {skips[0].detail})"
    return ""


class ManifestRead(BaseModel):
    """What reading a manifest gave: usable rows, quarantined ones, and whether the file as a whole
    is usable (`problem` is "" when it is). Paths as written from `check_manifest`; local ones made
    absolute by `curation.manifest.read_manifest`."""

    model_config = ConfigDict(frozen=True)

    rows: list[ManifestRow]
    skips: list[Quarantine]
    problem: str = ""


def check_manifest(path: str | Path) -> ManifestRead:
    """Every row of a manifest checked by the rules a build applies. Raises ManifestFileError for
    a file of the wrong kind or one that cannot be read at all, FileNotFoundError when missing."""
    path = Path(path)
    reader = reader_for(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    rows: list[ManifestRow] = []
    skips: list[Quarantine] = []
    seen: dict[str, str] = {}
    columns: set[str] = set()
    lines = 0
    for where, raw, why in reader(path):
        lines += 1
        if raw is None:
            skips.append(skip_row(f"{path.name}:{where}", "unreadable_row", f"{where}: {why}"))
            continue
        columns.update(str(k) for k, v in raw.items() if v is not None)
        checked = check_row(path.name, where, raw, seen)
        if isinstance(checked, Quarantine):
            skips.append(checked)
            continue
        seen[checked.video_id] = where
        rows.append(checked)
    problem = unusable_manifest(path.name, columns, lines, len(rows), skips)
    return ManifestRead(rows=rows, skips=skips, problem=problem)
