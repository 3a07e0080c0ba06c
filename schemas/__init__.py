"""The corpus contract: record types, their Parquet schemas and the LLM output shapes."""

from schemas import environment  # noqa: F401, I001  (first: one line, not a traceback, outside the venv)
from schemas.arrow import (
    SchemaVersionError,
    arrow_schema,
    from_table,
    read_parquet,
    to_table,
    write_parquet,
)
from schemas.errors import Problem, RecordError, parse_record
from schemas.records import (
    NO_REPLY,
    SCHEMA_VERSION,
    TABLES,
    Dialogue,
    Provenance,
    Quarantine,
    ReferenceAnswer,
    Scene,
    Segment,
    UserTurn,
    Video,
    check_safe_id,
)

__all__ = [
    "NO_REPLY", "SCHEMA_VERSION", "TABLES", "Dialogue", "Problem", "Provenance", "Quarantine",
    "RecordError", "ReferenceAnswer", "Scene", "SchemaVersionError", "Segment", "UserTurn", "Video",
    "arrow_schema", "check_safe_id", "from_table", "parse_record", "read_parquet", "to_table",
    "write_parquet",
]
