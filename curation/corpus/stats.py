"""Corpus statistics, computed with DuckDB straight from the shards (never the whole corpus in
memory). `python -m curation.corpus.stats CORPUS [--json]` prints them; the flow puts them in the card
and `curation.corpus.figures` draws them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from curation.corpus import shards
from curation.video.frames import frame_timeline
from schemas import Dialogue, Quarantine, Scene, Segment, Video, arrow_schema
from schemas.cli import (
    ArgumentParser,
    UsageError,
    add_cli_flags,
    add_corpus_argument,
    corpus_of,
    output_console,
    run_cli,
)

TABLES = {"videos": Video, "segments": Segment, "scenes": Scene, "dialogues": Dialogue, "quarantine": Quarantine}

FRAMES_PER_TURN = 2  # FACTS.md: 2 frames per user turn in the published data


def shard_paths(corpus_root: str | Path, table: str, index: dict[str, Any] | None = None) -> list[str]:
    """The table's shard files as strings, the form DuckDB's `read_parquet([...])` takes."""
    return [str(path) for path in shards.shard_paths(corpus_root, table, index=index)]


def _relation(con: duckdb.DuckDBPyConnection, corpus_root: Path, table: str, index: dict[str, Any] | None) -> str:
    paths = shard_paths(corpus_root, table, index)
    if not paths:  # an empty table with the real columns, so every query still runs
        con.register(table, arrow_schema(TABLES[table]).empty_table())
        return table
    con.execute(f"create or replace temp view {table} as select * from read_parquet({paths!r})")
    return table


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def no_reply_share(duration_s: float, reply_turns: int, seconds_per_frame: float, max_frames: int) -> float:
    """Share of user turns answered `NO REPLY` in an episode: each reference answer takes one turn."""
    turns = -(-len(frame_timeline(duration_s, seconds_per_frame, max_frames)) // FRAMES_PER_TURN)
    return max(0.0, 1.0 - min(reply_turns, turns) / turns) if turns else 0.0


def corpus_stats(corpus_root: str | Path, index: dict[str, Any] | None = None) -> dict[str, Any]:
    """Statistics of the corpus its live `index.json` describes, or of `index` (one not released yet)."""
    root = Path(corpus_root)
    con = duckdb.connect()
    for table in ("videos", "segments", "scenes", "dialogues", "quarantine"):
        _relation(con, root, table, index)
    stats: dict[str, Any] = {}
    stats["counts"] = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                       for t in ("videos", "segments", "scenes", "dialogues", "quarantine")}
    if stats["counts"]["videos"] == 0 and stats["counts"]["quarantine"] == 0:
        return stats
    stats["videos_by_source_licence"] = _rows(con, """
        select source, coalesce(licence, 'unknown') as licence, count(*) as videos,
               round(sum(duration_s) / 60, 2) as minutes from videos group by all order by all""")
    stats["video_durations_s"] = [r[0] for r in con.execute("select duration_s from videos order by 1").fetchall()]
    stats["video_heights"] = _rows(con, "select height, count(*) as videos from videos group by 1 order by 1")
    stats["scene_lengths_s"] = [r[0] for r in con.execute(
        "select end_s - start_s from scenes order by 1").fetchall()]
    stats["segments_by_origin"] = _rows(con, "select origin, count(*) as segments from segments group by 1 order by 1")
    stats["dialogues_by_kind"] = _rows(con, "select kind, count(*) as dialogues from dialogues group by 1 order by 1")
    stats["questions_per_dialogue"] = _rows(con, """
        select len(user_turns) as questions, count(*) as dialogues from dialogues group by 1 order by 1""")
    stats["answers_per_question"] = _rows(con, """
        with refs as (select unnest("references") as r from dialogues)
        select answers, count(*) as questions from (
            select r.question_id, count(*) as answers from refs where not r.immediate group by 1)
        group by 1 order by 1""")
    windows = con.execute("""
        with refs as (select duration_s, unnest("references") as r from dialogues)
        select r.reply_span[2] - r.reply_span[1], r.reply_span[1] / duration_s from refs""").fetchall()
    stats["reply_window_length_s"] = [w[0] for w in windows]
    stats["reply_window_start_fraction"] = [w[1] for w in windows]
    episodes = con.execute('select duration_s, len("references") from dialogues').fetchall()
    stats["no_reply_share"] = {
        f"{spf:g}s_per_frame": [no_reply_share(d, n, spf, max_frames) for d, n in episodes]
        for spf, max_frames in ((1.0, 180), (2.0, 90))  # FACTS.md: 180 frames at 1 s, 90 at 2 s
    }
    stats["dialogue_quality"] = _quality_figures(con)
    stats["quarantine_by_stage_reason"] = _rows(con, """
        select stage, reason, kind, count(*) as items from quarantine group by all order by stage, items desc""")
    try:  # a summary that is missing or damaged only leaves the usage out
        stats["llm_usage"] = dict(json.loads((root / "summary.json").read_text()).get("llm_usage") or {})
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return stats


QUALITY_FIGURES = ("grounding", "max_answer_similarity", "max_restatement", "repetition")


def _quality_figures(con: duckdb.DuckDBPyConnection) -> dict[str, list[float]]:
    """The quality gate's figures of every dialogue that has them (shards before the gate have none)."""
    try:
        rows = con.execute("select " + ", ".join(f"quality.{f}" for f in QUALITY_FIGURES)
                           + " from dialogues where quality is not null").fetchall()
    except duckdb.Error:
        return {}
    return {name: sorted(r[i] for r in rows) for i, name in enumerate(QUALITY_FIGURES)} if rows else {}


def _describe(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    mid = values[len(values) // 2]
    return f"n={len(values)} min={values[0]:.2f} median={mid:.2f} max={values[-1]:.2f}"


def print_stats(stats: dict[str, Any], console: Console) -> None:
    console.print("[bold]rows[/] " + "  ".join(f"{k}={v}" for k, v in stats["counts"].items()))
    for key in ("videos_by_source_licence", "video_heights", "segments_by_origin", "dialogues_by_kind",
                "questions_per_dialogue", "answers_per_question", "quarantine_by_stage_reason"):
        rows = stats.get(key) or []
        if not rows:
            continue
        table = Table(title=key.replace("_", " "))
        for col in rows[0]:
            table.add_column(col)
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    for key in ("video_durations_s", "scene_lengths_s", "reply_window_length_s", "reply_window_start_fraction"):
        console.print(f"[bold]{key}[/] {_describe(stats.get(key, []))}")
    for key, values in stats.get("no_reply_share", {}).items():
        console.print(f"[bold]NO REPLY share of turns at {key}[/] {_describe(values)}")
    if stats.get("llm_usage"):
        console.print(f"[bold]LLM usage[/] {stats['llm_usage']}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m curation.corpus.stats",
                            description="Corpus statistics: the numbers the dataset card carries.")
    add_corpus_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_cli_flags(parser)
    args = parser.parse_args(argv)
    corpus = corpus_of(args, parser)
    if not (corpus / "index.json").exists():
        raise UsageError(f"{corpus}: no index.json", "give the folder build-corpus wrote, e.g. --corpus corpus")
    stats = corpus_stats(corpus)
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        print_stats(stats, output_console())
    return 0

if __name__ == "__main__":
    sys.exit(main())
