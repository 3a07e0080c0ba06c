"""`python -m schemas validate PATH...` and `python -m schemas json-schema NAME`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.llm_output import LLM_OUTPUTS, json_schema
from schemas.validate import validate_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate JSONL or Parquet files of corpus records")
    check.add_argument("paths", nargs="+", type=Path)
    export = sub.add_parser("json-schema", help="print the JSON Schema of an LLM output type")
    export.add_argument("name", choices=sorted(LLM_OUTPUTS))
    args = parser.parse_args(argv)

    if args.command == "json-schema":
        print(json.dumps(json_schema(args.name), indent=2))
        return 0
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"no such file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    total, problems = validate_files(args.paths)
    for problem in problems:
        print(problem)
    bad = len({p.record_id for p in problems})
    print(f"{total} records checked, {total - bad if bad <= total else 0} valid, {bad} with problems "
          f"({len(problems)} problems)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
