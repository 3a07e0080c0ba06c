"""Turning pydantic's errors into (record id, field, rule) problems a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from schemas.records import Record, id_of

R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Problem:
    record_id: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.record_id}: {self.field}: {self.reason}"


class RecordError(ValueError):
    def __init__(self, table: str, problems: list[Problem]):
        self.table = table
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid {table} record ({len(problems)} problem(s)):\n{lines}")


def problems_from(error: ValidationError, record_id: str) -> list[Problem]:
    found: list[Problem] = []
    for err in error.errors():
        ctx = err.get("ctx") or {}
        if err["type"] == "invariant" and "problems" in ctx:
            found.extend(Problem(record_id, f, m) for f, m in ctx["problems"])
            continue
        loc = ".".join(str(p) for p in err["loc"]) or "<record>"
        found.append(Problem(record_id, loc, err["msg"]))
    return found


def parse_record(cls: type[R], data: Any) -> R:
    """Build a record from untrusted data or raise a RecordError naming id, field and rule."""
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise RecordError(cls.table, problems_from(error, id_of(data, cls))) from None
