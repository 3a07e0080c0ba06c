"""Validate JSONL or Parquet files of corpus records, or manifests: one line per bad record or row,
then a summary. A manifest (any CSV; JSONL or Parquet whose rows have `uri` but none of a `videos`
record's probe fields) is checked by the rules a build applies to it (`schemas.manifest`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.arrow import SchemaVersionError, read_parquet, record_class_of, rows_of
from schemas.errors import Problem, RecordError, parse_record
from schemas.manifest import ManifestFileError, check_manifest
from schemas.records import TABLES, Dialogue, Record, Video, id_of

# Fields a `videos` record has and a manifest row never does: a row with `uri` and none of them
# is a manifest row.
PROBE_FIELDS = set(Video.model_fields) - {"video_id", "source", "uri", "licence", "metadata", "sha256", "path"}
OTHER_IDS = {"table", "scene_id"} | {cls.id_field for cls in TABLES.values()} - {"video_id"}


def guess_table(row: dict[str, Any]) -> type[Record]:
    """For JSONL, which has no metadata: an explicit `table` key, else the id field present."""
    if "table" in row:
        return TABLES[row.pop("table")]
    for cls in (Dialogue, *TABLES.values()):
        if cls.id_field in row:
            return cls
    if "scene_id" in row:
        return TABLES["scenes"]
    return Dialogue


def iter_rows(path: Path) -> Iterator[tuple[type[Record] | None, Any, str | None]]:
    """(record class, row, read error) for every row of a file."""
    if path.suffix == ".parquet":
        try:
            cls = record_class_of(path)
            rows = rows_of(read_parquet(path))
        except (SchemaVersionError, OSError, ValueError) as error:
            yield None, None, str(error)
            return
        for row in rows:
            yield cls, row, None
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield None, None, f"line {number}: not JSON ({error.msg})"
                continue
            if not isinstance(row, dict):
                yield None, None, f"line {number}: not a JSON object"
                continue
            yield guess_table(row), row, None


def is_manifest(path: Path) -> bool:
    """A CSV file, or JSONL/Parquet whose first row (its columns) has `video_id` or `uri` and no
    probe field or other table's id (a misnamed column is still a manifest, reported as such)."""
    if path.suffix.lower() == ".csv":
        return True
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            if (schema.metadata or {}).get(b"proactive_video.schema_version"):
                return False
            columns = set(schema.names)
        else:
            with path.open(encoding="utf-8-sig", errors="replace") as lines:
                first = next((line for line in lines if line.strip()), "{}")
            row = json.loads(first)
            columns = set(row) if isinstance(row, dict) else set()
    except (OSError, ValueError):
        return False  # unreadable: the record reader reports it
    return bool(columns & {"video_id", "uri"}) and not columns & (PROBE_FIELDS | OTHER_IDS)


def manifest_problems(path: Path) -> tuple[int, list[Problem]]:
    """(rows seen, problems) of a manifest: each quarantined row and the file's own problem."""
    try:
        checked = check_manifest(path)
    except ManifestFileError as error:
        return 0, [Problem(str(path), "<file>", str(error))]
    problems = [Problem(q.item_id, "manifest row", f"{q.reason}: {q.detail}") for q in checked.skips]
    if checked.problem:
        problems.append(Problem(str(path), "<file>", checked.problem))
    return len(checked.rows) + len(checked.skips), problems


def validate_files(paths: list[Path]) -> tuple[int, list[Problem]]:
    """(records seen, problems); ids must be unique per table across all files."""
    seen_ids: dict[str, set[str]] = {}
    problems: list[Problem] = []
    total = 0
    for path in paths:
        if is_manifest(path):
            rows, found = manifest_problems(path)
            total += rows
            problems += found
            continue
        for cls, row, read_error in iter_rows(path):
            if read_error is not None:
                problems.append(Problem(str(path), "<file>", read_error))
                continue
            total += 1
            try:
                record = parse_record(cls, row)
            except RecordError as error:
                problems.extend(error.problems)
                continue
            ids = seen_ids.setdefault(cls.table, set())
            if record.record_id() in ids:
                problems.append(Problem(record.record_id(), cls.id_field, "duplicate id"))
            ids.add(record.record_id())
    return total, problems


__all__ = ["validate_files", "id_of"]
