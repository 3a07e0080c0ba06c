"""Validate JSONL or Parquet files of corpus records: one line per bad record, then a summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.arrow import SchemaVersionError, read_parquet, record_class_of, rows_of
from schemas.errors import Problem, RecordError, parse_record
from schemas.records import TABLES, Dialogue, Record, id_of


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


def validate_files(paths: list[Path]) -> tuple[int, list[Problem]]:
    """(records seen, problems); ids must be unique per table across all files."""
    seen_ids: dict[str, set[str]] = {}
    problems: list[Problem] = []
    total = 0
    for path in paths:
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
