"""Parquet schemas derived from the record classes (no hand-kept second copy), and versioned I/O."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from schemas.errors import parse_record
from schemas.records import SCHEMA_VERSION, TABLES, Record

VERSION_KEY = b"proactive_video.schema_version"
TABLE_KEY = b"proactive_video.table"


class SchemaVersionError(ValueError):
    pass


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for one field annotation."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _arrow_type(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {annotation}")
        return _arrow_type(args[0])[0], True
    if origin is Literal:
        return pa.string(), False
    if origin is list:
        return pa.list_(_field("item", get_args(annotation)[0])), False
    if origin is tuple:
        args = get_args(annotation)
        return pa.list_(_field("item", args[0]), len(args)), False
    if origin is dict:
        # A list of {key, value} entries, not an Arrow map: `datasets` (and so the Hub viewer)
        # cannot type map columns. Read back as a dict by `_python_value`.
        key, value = get_args(annotation)
        entry = pa.struct([pa.field("key", _arrow_type(key)[0], nullable=False), _field("value", value)])
        return pa.list_(pa.field("item", entry, nullable=False)), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_fields(annotation)), False
    simple = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
              datetime: pa.timestamp("us", tz="UTC")}
    if annotation in simple:
        return simple[annotation], False
    raise TypeError(f"no arrow type for {annotation!r}")


def _field(name: str, annotation: Any) -> pa.Field:
    arrow_type, nullable = _arrow_type(annotation)
    return pa.field(name, arrow_type, nullable=nullable)


def _fields(model: type[BaseModel]) -> list[pa.Field]:
    hints = typing.get_type_hints(model, include_extras=True)
    return [_field(name, hints[name]) for name in model.model_fields]


def arrow_schema(record_cls: type[Record]) -> pa.Schema:
    meta = {VERSION_KEY: SCHEMA_VERSION.encode(), TABLE_KEY: record_cls.table.encode()}
    return pa.schema(_fields(record_cls), metadata=meta)


def _is_entries(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_list(arrow_type) and pa.types.is_struct(arrow_type.value_type)
            and [f.name for f in arrow_type.value_type] == ["key", "value"])


def _arrow_value(value: Any, arrow_type: pa.DataType) -> Any:
    # dict fields are stored as sorted {key, value} entries (sorted: same dict, same bytes).
    if value is None:
        return None
    if _is_entries(arrow_type):
        value_type = arrow_type.value_type.field("value").type
        return [{"key": k, "value": _arrow_value(v, value_type)} for k, v in sorted(value.items())]
    if pa.types.is_struct(arrow_type):
        return {f.name: _arrow_value(value.get(f.name), f.type) for f in arrow_type}
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return [_arrow_value(v, arrow_type.value_type) for v in value]
    return value


def to_table(records: list[Record], record_cls: type[Record]) -> pa.Table:
    schema = arrow_schema(record_cls)
    rows = [{f.name: _arrow_value(row[f.name], f.type) for f in schema}
            for row in (r.model_dump(mode="python") for r in records)]
    return pa.Table.from_pylist(rows, schema=schema)


def _python_value(value: Any, arrow_type: pa.DataType) -> Any:
    # pyarrow returns map columns as lists of (key, value) pairs; records want dicts.
    if value is None:
        return None
    if _is_entries(arrow_type):
        value_type = arrow_type.value_type.field("value").type
        return {e["key"]: _python_value(e["value"], value_type) for e in value}
    if pa.types.is_map(arrow_type):  # shards written before dict fields became entry lists
        return {k: _python_value(v, arrow_type.item_type) for k, v in value}
    if pa.types.is_struct(arrow_type):
        return {f.name: _python_value(value[f.name], f.type) for f in arrow_type}
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return [_python_value(v, arrow_type.value_type) for v in value]
    return value


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    fields = list(table.schema)
    return [{f.name: _python_value(row[f.name], f.type) for f in fields} for row in table.to_pylist()]


def from_table(table: pa.Table, record_cls: type[Record]) -> list[Record]:
    return [parse_record(record_cls, row) for row in rows_of(table)]


def check_version(metadata: dict[bytes, bytes] | None, where: str) -> str:
    version = (metadata or {}).get(VERSION_KEY)
    if version is None:
        raise SchemaVersionError(f"{where}: no schema version in the Parquet metadata; not a corpus shard")
    found = version.decode()
    if found.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise SchemaVersionError(
            f"{where}: schema version {found} is not readable by this code (reads {SCHEMA_VERSION.split('.')[0]}.x); "
            "upgrade the package or rebuild the corpus"
        )
    return found


def table_name_of(path: str | Path) -> str:
    meta = pq.read_schema(path).metadata or {}
    check_version(meta, str(path))
    return meta.get(TABLE_KEY, b"").decode()


def write_parquet(table: pa.Table, path: str | Path, row_group_bytes: int = 100 * 2**20) -> None:
    """Write with zstd; rows per group sized so a row group stays near `row_group_bytes`."""
    rows_per_group = max(1, int(row_group_bytes / max(1, table.nbytes / max(1, table.num_rows))))
    pq.write_table(table, path, compression="zstd", row_group_size=rows_per_group)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read one shard, refusing shards whose major schema version this code does not know."""
    schema = pq.read_schema(path)
    check_version(schema.metadata, str(path))
    return pq.read_table(path, columns=columns)


def record_class_of(path: str | Path) -> type[Record]:
    name = table_name_of(path)
    if name not in TABLES:
        raise SchemaVersionError(f"{path}: unknown table {name!r}")
    return TABLES[name]
