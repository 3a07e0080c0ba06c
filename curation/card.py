"""The dataset card: `<corpus>/README.md` with the Hub's YAML header, written from the corpus itself.

The header declares one config per table with the exact shard paths of `index.json`, and each
table's features derived from the shards' Arrow schema. Dict fields are stored as lists of
`{key, value}` entries (schemas/arrow.py), which `datasets` types like any list of structs. Shards
written before that hold Arrow `map` columns, which `datasets` (5.2) can neither infer nor cast to
a list of structs; it does cast them to its `Json` feature, so for those the card says `json`.
Nothing here reads the environment, and nothing varies between two
builds of the same rows (no timestamps, no run timings), so the card is byte-identical for
identical inputs.
"""

from __future__ import annotations

import json
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curation.figures import draw_figures
from curation.stats import corpus_stats
from schemas.arrow import arrow_schema
from schemas.records import SCHEMA_VERSION, TABLES

CARD_NAME = "README.md"
FIGURES_DIR = "figures"
TABLE_ORDER = ("dialogues", "videos", "scenes", "segments", "quarantine")
SPLIT_ORDER = ("train", "validation", "test", "all")
# Licence ids the Hub accepts in `license:` (lowercase SPDX-like); anything else is `other`.
HUB_LICENCES = {
    "apache-2.0", "mit", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
    "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "odc-by", "odbl", "pddl",
    "cdla-permissive-2.0", "cdla-sharing-1.0", "bsd-3-clause", "gpl-3.0", "unknown",
}
# Hub size buckets by number of rows (https://huggingface.co/docs/hub/datasets-cards).
SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
                (1_000_000_000, "100M<n<1B"))


def hub_feature(arrow_type: pa.DataType):
    """The `datasets` feature for one Arrow type; a (legacy) map becomes `Json`, see the module docstring."""
    import datasets  # heavy import, only needed while writing a card
    from datasets.features.features import generate_from_arrow_type

    if pa.types.is_map(arrow_type):
        return datasets.Json()
    if pa.types.is_struct(arrow_type):
        return {f.name: hub_feature(f.type) for f in arrow_type}
    if pa.types.is_fixed_size_list(arrow_type):
        return datasets.List(hub_feature(arrow_type.value_type), length=arrow_type.list_size)
    if pa.types.is_list(arrow_type):
        return datasets.List(hub_feature(arrow_type.value_type))
    if pa.types.is_large_list(arrow_type):
        return datasets.LargeList(hub_feature(arrow_type.value_type))
    return generate_from_arrow_type(arrow_type)


def hub_features(schema: pa.Schema):
    """`datasets.Features` for a shard schema."""
    import datasets

    return datasets.Features({f.name: hub_feature(f.type) for f in schema})


def table_schema(corpus_root: Path, shards: list[dict[str, Any]], table: str) -> pa.Schema:
    """The first shard's schema (what readers will see), else the record class's."""
    for shard in shards:
        path = corpus_root / shard["path"]
        if path.exists():
            return pq.read_schema(path)
    return arrow_schema(TABLES[table])


def hub_split(split: str) -> str:
    # `all` is reserved by `datasets` (it means "every split"); a one-split table is `train` there.
    return "train" if split == "all" else split


def _order(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def shards_by_table(index: dict[str, Any]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """table -> Hub split -> shard entries, in a fixed order."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for shard in index.get("shards", []):
        grouped.setdefault(shard["table"], {}).setdefault(hub_split(shard["split"]), []).append(shard)
    return {t: {s: sorted(grouped[t][s], key=lambda e: e["path"])
                for s in sorted(grouped[t], key=lambda s: _order(s, SPLIT_ORDER))}
            for t in sorted(grouped, key=lambda t: _order(t, TABLE_ORDER))}


def licence_of(stats: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """(Hub licence id, videos per licence as found): one id if every video agrees, else `other`."""
    counts: dict[str, int] = {}
    for row in stats.get("videos_by_source_licence", []):
        counts[row["licence"]] = counts.get(row["licence"], 0) + row["videos"]
    normalised = {lic.strip().lower() for lic in counts}
    if len(normalised) == 1 and (only := normalised.pop()) in HUB_LICENCES:
        return only, counts
    return ("unknown" if not counts else "other"), counts


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_BUCKETS if rows < limit), "n>1B")


def pipeline_version() -> str:
    try:
        return importlib_metadata.version("proactive-video")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _uncompressed_bytes(corpus_root: Path, shards: list[dict[str, Any]]) -> int:
    # The Hub's `num_bytes` is the in-memory size; Parquet's uncompressed row-group size is close.
    total = 0
    for shard in shards:
        meta = pq.read_metadata(corpus_root / shard["path"])
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total


def card_header(corpus_root: Path, index: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    grouped = shards_by_table(index)
    licence, _ = licence_of(stats)
    configs, infos = [], []
    for table, splits in grouped.items():
        config: dict[str, Any] = {"config_name": table, "data_files": [
            {"split": split, "path": [s["path"] for s in shards]} for split, shards in splits.items()]}
        if table == "dialogues":
            config["default"] = True
        configs.append(config)
        schema = table_schema(corpus_root, [s for shards in splits.values() for s in shards], table)
        infos.append({
            "config_name": table,
            "features": hub_features(schema)._to_yaml_list(),
            "splits": [{"name": split, "num_bytes": _uncompressed_bytes(corpus_root, shards),
                        "num_examples": sum(s["rows"] for s in shards)} for split, shards in splits.items()],
            "download_size": sum(s["bytes"] for shards in splits.values() for s in shards),
        })
    header: dict[str, Any] = {
        "pretty_name": "Proactive video dialogues (MMDuet2-style)",
        "license": licence,
        "language": ["en"],
        "size_categories": [size_category(stats.get("counts", {}).get("dialogues", 0))],
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "proactive", "streaming-video", "dialogue", "mmduet2", "synthetic"],
        "configs": configs,
        "dataset_info": infos,
    }
    if licence == "other":
        header["license_name"] = "mixed-per-video"
    return header


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(none)"]
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return lines


def _describe(values: list[float]) -> str:
    if not values:
        return "no data"
    ordered = sorted(values)
    return (f"n={len(ordered)}, min {ordered[0]:.2f}, median {ordered[len(ordered) // 2]:.2f}, "
            f"max {ordered[-1]:.2f}")


def _provenance(summary: dict[str, Any], llm_backend: str) -> list[str]:
    lines = ["## How it was built", "",
             "Built by the `build-corpus` Prefect flow of the proactive-video toolkit: each video is "
             "probed and cut into scenes, and the configured LLM backend writes its descriptions and "
             "dialogues; every "
             "dialogue is validated against the schema before it is written, and every skipped "
             "or failed item lands in the `quarantine` table with its stage and reason.", "",
             f"- pipeline version: `{pipeline_version()}`, record schema version `{SCHEMA_VERSION}`",
             f"- LLM backend: `{llm_backend}`"]
    for key, label in (("config_fingerprint", "config fingerprint"), ("llm_model", "LLM model")):
        if summary.get(key):
            lines.append(f"- {label}: `{summary[key]}`")
    if summary.get("llm_usage"):
        usage = ", ".join(f"{k}={v}" for k, v in sorted(summary["llm_usage"].items()))
        lines.append(f"- LLM usage over the corpus: {usage}")
    if llm_backend == "replay":
        lines += ["", "**Answers come from a replay file of hand-written answers; no model was run.** "
                  "This corpus exercises the pipeline; it is not model-generated data."]
    return lines + [""]


def _licence_section(stats: dict[str, Any]) -> list[str]:
    licence, counts = licence_of(stats)
    lines = ["## Licence", ""]
    if licence not in ("other", "unknown"):
        lines.append(f"Every source video is under `{licence}`.")
    else:
        lead = ("The source videos do not share one Hub licence id" if licence == "other"
                else "No licence was recorded for the source videos")
        lines.append(f"{lead}, so the card says `{licence}`. Videos per licence as recorded at acquisition:")
        lines += ["", *_table([{"licence": k, "videos": v} for k, v in sorted(counts.items())])]
    lines += ["", "The video files themselves are not part of this dataset (their bytes are not ours "
              "to redistribute): the `videos` table lists each source `uri` and `sha256` so that "
              "users can fetch and verify them.", ""]
    return lines


def _stats_section(stats: dict[str, Any], figures: list[str]) -> list[str]:
    lines = ["## Statistics", ""]
    if stats.get("stats_error"):
        lines += [f"Only row counts, licences and dialogue kinds: `curation.stats` failed "
                  f"(`{stats['stats_error']}`).", ""]
    lines += [*_table([{"table": k, "rows": v} for k, v in stats.get("counts", {}).items()]), ""]
    for key in ("videos_by_source_licence", "dialogues_by_kind", "questions_per_dialogue",
                "answers_per_question", "segments_by_origin"):
        if stats.get(key):
            lines += [f"### {key.replace('_', ' ')}", "", *_table(stats[key]), ""]
    for key in ("video_durations_s", "scene_lengths_s", "reply_window_length_s", "reply_window_start_fraction"):
        lines.append(f"- {key.replace('_', ' ')}: {_describe(stats.get(key, []))}")
    for key, values in sorted(stats.get("no_reply_share", {}).items()):
        lines.append(f"- share of `NO REPLY` turns per episode at {key.replace('_', ' ')}: {_describe(values)}")
    lines.append("")
    lines += [f"![{Path(name).stem.replace('_', ' ')}]({FIGURES_DIR}/{name})" for name in figures]
    return lines + [""]


def _quarantine_section(summary: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    rows = summary.get("quarantined")
    if rows is None:
        rows = [{"stage": r["stage"], "reason": r["reason"], "kind": r["kind"], "count": r["items"]}
                for r in stats.get("quarantine_by_stage_reason", [])]
    rows = sorted(rows, key=lambda r: (r["stage"], r["reason"], r["kind"]))
    return ["## Quarantine", "",
            "Items left out, by stage and reason (`error` = a crash, `skip` = a rule said no); "
            "the rows are in the `quarantine` config.", "", *_table(rows), ""]


def _loading_section(header: dict[str, Any]) -> list[str]:
    first = next((c for c in header["configs"] if c.get("default")), header["configs"][0] if header["configs"] else None)
    glob = f"data/{first['config_name']}/*.parquet" if first else "data/dialogues/*.parquet"
    return ["## Loading", "", "With `datasets` (one config per table; `dialogues` is the default):", "",
            "```python", "from datasets import load_dataset",
            'dialogues = load_dataset("REPO_ID", "dialogues")  # or a local copy: load_dataset("path/to/corpus", "dialogues")',
            'videos = load_dataset("REPO_ID", "videos", split="train")', "```", "",
            "Dict-valued columns (`videos.metadata`, `dialogues.provenance.parameters`) are lists "
            "of `{key, value}` entries, sorted by key.", "",
            "With DuckDB, straight from the Parquet files:", "", "```python", "import duckdb",
            f"duckdb.sql(\"select kind, count(*) from read_parquet('{glob}') group by kind\").show()",
            "```", "", "With pandas:", "", "```python", "import pandas as pd",
            f'df = pd.read_parquet("{glob.rsplit("/", 1)[0]}")', "```", "",
            "`index.json` lists every shard with its rows, bytes and sha256.", ""]


def render_card(corpus_root: Path, index: dict[str, Any], summary: dict[str, Any], llm_backend: str,
                stats: dict[str, Any], figures: list[str]) -> str:
    header = card_header(corpus_root, index, stats)
    counts = stats.get("counts", {})
    body = ["# Proactive video dialogues", "",
            "Timestamped, multi-turn dialogues about videos in the style of MMDuet2: a user asks "
            "questions while the video plays and the assistant replies when the frames show the "
            "answer, staying silent (`NO REPLY`) otherwise. Each reference answer carries the time "
            "span in which it should be given.", "",
            f"This build holds {counts.get('dialogues', 0)} dialogues over {counts.get('videos', 0)} "
            f"videos; {counts.get('quarantine', 0)} items were quarantined.", ""]
    body += _provenance(summary, llm_backend)
    body += _licence_section(stats)
    body += _stats_section(stats, figures)
    body += _quarantine_section(summary, stats)
    body += _loading_section(header)
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n" + "\n".join(body)


def basic_stats(corpus_root: Path, index: dict[str, Any], error: Exception) -> dict[str, Any]:
    """What the card cannot do without (counts, licences, kinds), when `corpus_stats` fails."""
    def column(table: str, name: str) -> list[Any]:
        paths = [corpus_root / s["path"] for s in index.get("shards", []) if s["table"] == table]
        return [v for p in paths for v in pq.read_table(p, columns=[name]).column(name).to_pylist()]

    def tally(values: list[Any], label: str, value: str) -> list[dict[str, Any]]:
        return [{label: k, value: values.count(k)} for k in sorted(set(values), key=str)]

    counts = {t: sum(s["rows"] for s in index.get("shards", []) if s["table"] == t) for t in TABLE_ORDER}
    pairs = list(zip(column("videos", "source"), column("videos", "licence"), strict=True))
    licences = [{"source": src, "licence": lic or "unknown", "videos": n}
                for (src, lic), n in sorted(((p, pairs.count(p)) for p in set(pairs)), key=str)]
    return {"counts": counts, "videos_by_source_licence": licences,
            "dialogues_by_kind": tally(column("dialogues", "kind"), "kind", "dialogues"),
            "stats_error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}


def stats_of(corpus_root: Path, index: dict[str, Any]) -> dict[str, Any]:
    """`corpus_stats` (falling back to `basic_stats` if it fails), also for a corpus where some
    table has no shard.

    `corpus_stats` stands in an empty table with a column-less view, so its queries fail on a
    missing column; here each missing table gets an empty shard of the record schema, listed in a
    scratch index next to the real shards (absolute paths), and the corpus itself is not touched.
    """
    try:
        return _corpus_stats(corpus_root, index)
    except duckdb.Error as error:
        return basic_stats(corpus_root, index, error)


def _corpus_stats(corpus_root: Path, index: dict[str, Any]) -> dict[str, Any]:
    present = {s["table"] for s in index.get("shards", [])}
    if present >= set(TABLES):
        return corpus_stats(corpus_root)
    with tempfile.TemporaryDirectory(prefix="card-stats-") as scratch:
        shards = [dict(s, path=str((corpus_root / s["path"]).resolve())) for s in index.get("shards", [])]
        for table in sorted(set(TABLES) - present):
            path = Path(scratch) / f"{table}-empty.parquet"
            pq.write_table(arrow_schema(TABLES[table]).empty_table(), path)
            shards.append({"table": table, "split": "all", "path": str(path), "rows": 0})
        (Path(scratch) / "index.json").write_text(json.dumps({"shards": shards}))
        return corpus_stats(scratch)


def write_dataset_card(corpus_root: str | Path, index: dict[str, Any], summary: dict[str, Any],
                       llm_backend: str) -> Path:
    """Compute statistics, draw figures into `<corpus>/figures/`, write `<corpus>/README.md`."""
    root = Path(corpus_root)
    stats = stats_of(root, index)
    # corpus_stats reads llm_usage from a summary.json the flow writes after the card (so from the
    # previous run, or none): the summary handed in is this build's, so it wins.
    stats["llm_usage"] = dict(sorted((summary.get("llm_usage") or {}).items()))
    figures = draw_figures(stats, root / FIGURES_DIR)
    text = render_card(root, json.loads(json.dumps(index)), summary, llm_backend, stats, figures)
    path = root / CARD_NAME
    tmp = path.with_name(f".tmp-{CARD_NAME}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
