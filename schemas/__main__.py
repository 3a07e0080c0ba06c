"""`python -m schemas validate PATH...` and `python -m schemas json-schema NAME`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.cli import ArgumentParser, UsageError, add_cli_flags, run_cli
from schemas.llm_output import LLM_OUTPUTS, json_schema
from schemas.validate import validate_files

RECORD_FILES = (".parquet", ".jsonl")
HOW_CHECKED = """A Parquet shard is checked as the record type stamped in its schema metadata (the table that
wrote it). A JSONL line is checked as its `table` key (videos, segments, scenes, dialogues,
quarantine) when it has one, else by the id field it carries (dialogue_id, video_id, segment_id,
item_id; scene_id means scenes). A manifest (a CSV file, or JSONL/Parquet whose rows have `uri` and
no probe fields such as duration_s) is checked row by row as a build reads it: each row that would
be quarantined, and a file no build could use (no `uri` column, no usable row). A folder is searched
for *.parquet and *.jsonl files."""


def record_files(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for every record file under it (sorted)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or folder: {path}", "check the path")
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix in RECORD_FILES and p.is_file())
            if not inside:
                raise UsageError(f"{path} holds no .parquet or .jsonl files", "give record files or a folder of them")
            found += inside
        else:
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m schemas")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate JSONL or Parquet files of corpus records, or manifests",
                           description=HOW_CHECKED, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("paths", nargs="+", type=Path, help="files, or folders of them")
    add_cli_flags(check)
    export = sub.add_parser("json-schema", help="print the JSON Schema of an LLM output type")
    export.add_argument("name", choices=sorted(LLM_OUTPUTS))
    args = parser.parse_args(argv)

    if args.command == "json-schema":
        print(json.dumps(json_schema(args.name), indent=2))
        return 0
    total, problems = validate_files(record_files(args.paths))
    for problem in problems:
        print(problem)
    bad = len({p.record_id for p in problems if p.field != "<file>"})
    whole = sum(p.field == "<file>" for p in problems)
    print(f"{total} records checked, {max(0, total - bad)} valid, {bad} with problems ({len(problems)} problems"
          + (f", {whole} about a file as a whole)" if whole else ")"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
