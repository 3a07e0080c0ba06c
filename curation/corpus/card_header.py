"""The Hub's YAML header of the dataset card: configs, features, licence, size, from the corpus.

One config per table lists the exact shard paths of `index.json` (a stale file left in `data/`
is never read); features are derived from the shards' Arrow schema. Dict fields are stored as
lists of `{key, value}` entries (schemas/arrow.py), which `datasets` types like any list of
structs. Shards written before that hold Arrow `map` columns, which `datasets` (5.2) can neither
infer nor cast to a list of structs; it does cast them to its `Json` feature, so for those the
header says `json`.
"""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import arrow_schema
from schemas.records import TABLES

TABLE_ORDER = ("dialogues", "videos", "scenes", "segments", "quarantine")
SPLIT_ORDER = ("train", "validation", "rl", "test", "all")
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
        # The Hub asks for a link with `other`: the card's licence section lists each source's.
        header["license_link"] = "README.md#licence"
    return header
