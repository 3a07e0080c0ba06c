"""Parquet shards from the result store: rolling zstd files, an index, a split by video id.

Layout: `<corpus>/data/<table>/<split>-<NNNNN>-<sha8>.parquet` plus `<corpus>/index.json`. The
name carries the first 8 hex of the file's own sha256, so a rebuild whose content differs writes
new names and never overwrites a file that a reader of the old index has open; identical results
give byte-identical files, names and index (no timestamps: only parquet's `created_by`).

Crash safety, in order: each shard is written to a hidden temp name, fsynced and renamed; then
`index.json` is written to a temp name and swapped in with `os.replace`; only then are files the
new index does not list deleted. A crash at any point leaves the previous index and every file it
lists intact, and the next build starts again from the result store, which holds one result per
video: rows are neither duplicated nor dropped.

Rows stream through: results are read one at a time and every (table, split) keeps at most one
row group (`row_group_bytes` of Arrow memory) before writing it, so memory is bounded by
9 streams x `row_group_bytes`, whatever the number of videos. A file rolls once its written size
passes `target_shard_bytes`, so it may exceed the target by one compressed row group.
One build per corpus at a time: a build deletes any `.tmp-` file it finds under `data/`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.corpus.results import fsync_folder, iter_results, stored_ids
from curation.hashing import sha256_file
from schemas.arrow import arrow_schema, read_parquet, to_table
from schemas.records import SCHEMA_VERSION, TABLES, Record

MB = 10**6
ALL_SPLIT = "all"
TMP_PREFIX = ".tmp-"
INDEX_NAME = "index.json"


class ShardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_shard_bytes: int = Field(256 * MB, gt=0, description="roll to a new file past this size")  # issue 5: about 256 MB
    row_group_bytes: int = Field(100 * MB, gt=0)  # FACTS.md: Hub row groups about 100 MB (viewer fails over ~286 MiB)
    # our choice: no published SFT validation share; 5% of videos
    validation_share: float = Field(0.05, ge=0.0, le=1.0)
    # FACTS.md: 1,500 web + 400 egocentric of ~52.8k videos (3.6%) held out of SFT for RL.
    rl_share: float = Field(0.036, ge=0.0, le=1.0)
    # Per `Video.source` overrides of `rl_share`; the paper's own per-source shares are about
    # {web: 0.03, ego: 0.157} (1,500 of 50,228 and 400 of 2,543).
    rl_share_by_source: dict[str, float] = {}
    split_seed: str = Field("", description="change to draw a different split of the same videos")
    small_corpus_videos: int = Field(1000, ge=0, description="up to this many results, every split with a share "
                                     "gets at least one video with dialogues (see assign_splits)")
    batch_rows: int = Field(1024, ge=1, description="records turned into Arrow at once: bounds Python memory")
    publish_url: str | None = Field(None, description="fsspec URL (s3://bucket/corpus) to copy the corpus to")


    @model_validator(mode="after")
    def _shares_fit(self) -> ShardConfig:
        for source, share in {"": self.rl_share, **self.rl_share_by_source}.items():
            if not 0.0 <= share <= 1.0 - self.validation_share:
                raise ValueError(f"rl share {share} of source {source!r} must lie in [0, 1 - validation_share]")
        return self

    def rl_share_of(self, source: str | None) -> float:
        return self.rl_share_by_source.get(source or "", self.rl_share)


Split = Literal["train", "validation", "rl"]
SPLITS: tuple[Split, ...] = ("train", "validation", "rl")


def split_fraction(video_id: str, cfg: ShardConfig) -> float:
    digest = hashlib.sha256(f"{cfg.split_seed}|{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(video_id: str, cfg: ShardConfig, source: str | None = None) -> Split:
    """Deterministic per video, so all of a video's rows (and dialogues) land in one split.

    One hash fraction f in [0, 1): validation below `validation_share`, rl at or above
    1 - (the source's rl share), train between. The bands sit at opposite ends so growing one
    share only takes videos from train, and adding the rl split kept every validation video."""
    fraction = split_fraction(video_id, cfg)
    if fraction < cfg.validation_share:
        return "validation"
    return "rl" if fraction >= 1.0 - cfg.rl_share_of(source) else "train"


def assign_splits(videos: list[tuple[str, str | None]], cfg: ShardConfig) -> dict[str, Split]:
    """The split of each (video_id, source) with dialogues: `split_of`, unless that leaves a split
    whose share is positive without a video while there are enough videos for every such split
    (a tiny corpus, such as the sample's 4). Then the videos go by rank of the same fraction:
    the lowest `max(1, round(k * validation_share))` to validation, the highest
    `max(1, round(k * mean rl share))` to rl, the rest (at least one) to train."""
    splits = {video_id: split_of(video_id, cfg, source) for video_id, source in videos}
    k = len(videos)
    mean_rl = sum(cfg.rl_share_of(source) for _, source in videos) / k if k else 0.0
    wanted = {"validation": cfg.validation_share > 0, "rl": mean_rl > 0,
              "train": cfg.validation_share + mean_rl < 1}
    if all(split in splits.values() for split, on in wanted.items() if on) or k < sum(wanted.values()):
        return splits
    ranked = sorted((split_fraction(video_id, cfg), video_id) for video_id, _ in videos)
    n_val = max(1, round(k * cfg.validation_share)) if wanted["validation"] else 0
    n_rl = max(1, round(k * mean_rl)) if wanted["rl"] else 0
    while wanted["train"] and n_val + n_rl >= k:  # train keeps one video: shrink the larger band
        if n_val >= n_rl:
            n_val -= 1
        else:
            n_rl -= 1
    for rank, (_, video_id) in enumerate(ranked):
        splits[video_id] = "validation" if rank < n_val else "rl" if rank >= k - n_rl else "train"
    return splits


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _RollingWriter:
    """One (table, split): rows in, finished shard entries out; a new file past the target size."""

    def __init__(self, root: Path, table: str, split: str, cfg: ShardConfig):
        self.root, self.table, self.split, self.cfg = root, table, split, cfg
        self.cls: type[Record] = TABLES[table]
        self.schema = arrow_schema(self.cls)
        self.folder = root / "data" / table
        self.pending: list[Record] = []
        self.buffered: list[pa.Table] = []
        self.buffered_bytes = 0
        self.sink: pa.NativeFile | None = None
        self.writer: pq.ParquetWriter | None = None
        self.tmp: Path | None = None
        self.rows_in_file = 0
        self.entries: list[dict[str, Any]] = []

    def add(self, records: list[Record]) -> None:
        self.pending.extend(records)
        if len(self.pending) >= self.cfg.batch_rows:
            self._convert()

    def _convert(self) -> None:
        if not self.pending:
            return
        table = to_table(self.pending, self.cls)
        self.pending = []
        self.buffered.append(table)
        self.buffered_bytes += table.nbytes
        if self.buffered_bytes >= min(self.cfg.row_group_bytes, self.cfg.target_shard_bytes):
            self._write_row_group()

    def _write_row_group(self) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffered).combine_chunks()
        self.buffered, self.buffered_bytes = [], 0
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.tmp = self.folder / f"{TMP_PREFIX}{self.split}-{len(self.entries):05d}-{os.getpid()}.parquet.part"
            self.sink = pa.OSFile(str(self.tmp), "wb")
            self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows_in_file += table.num_rows
        if self.sink.tell() >= self.cfg.target_shard_bytes:
            self._finish_file()

    def _finish_file(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.sink.close()
        tmp = self.tmp
        self.writer = self.sink = self.tmp = None
        _fsync_file(tmp)
        sha256 = sha256_file(tmp)
        rel = f"data/{self.table}/{self.split}-{len(self.entries):05d}-{sha256[:8]}.parquet"
        os.replace(tmp, self.root / rel)
        self.entries.append({"table": self.table, "split": self.split, "path": rel,
                             "rows": self.rows_in_file, "sha256": sha256, "bytes": (self.root / rel).stat().st_size})
        self.rows_in_file = 0

    def close(self) -> list[dict[str, Any]]:
        self._convert()
        self._write_row_group()
        self._finish_file()
        return self.entries


_RESULT_FIELDS: dict[str, str] = {"videos": "video", "segments": "segments", "scenes": "scenes",
                                  "dialogues": "dialogues", "quarantine": "quarantine"}


def _write_index(corpus_root: Path, index: dict[str, Any]) -> Path:
    path = corpus_root / INDEX_NAME
    tmp = corpus_root / f"{TMP_PREFIX}{INDEX_NAME}-{os.getpid()}"
    with tmp.open("w") as handle:
        handle.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(corpus_root)
    return path


def _delete_unlisted(corpus_root: Path, index: dict[str, Any]) -> list[str]:
    """Remove shards (and crashed temp files) the live index does not list; returns what went."""
    listed = {entry["path"] for entry in index["shards"]}
    removed = []
    for table in TABLES:
        folder = corpus_root / "data" / table
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            rel = f"data/{table}/{path.name}"
            stale_tmp = path.name.startswith(TMP_PREFIX)
            if path.is_file() and rel not in listed and (stale_tmp or path.suffix == ".parquet"):
                path.unlink(missing_ok=True)
                removed.append(rel)
    return removed


def build_shards(results_dir: str | Path, corpus_root: str | Path, cfg: ShardConfig | None = None) -> dict[str, Any]:
    """Rewrite the corpus's shards and index from every stored result; returns the new index."""
    cfg = cfg or ShardConfig()
    corpus_root = Path(corpus_root)
    corpus_root.mkdir(parents=True, exist_ok=True)
    writers: dict[tuple[str, str], _RollingWriter] = {}
    results = with_dialogues = 0
    fingerprints: set[str] = set()

    def writer_for(table: str, split: str) -> _RollingWriter:
        key = (table, split)
        if key not in writers:
            writers[key] = _RollingWriter(corpus_root, table, split, cfg)
        return writers[key]

    # A small corpus is read twice: once for the videos with dialogues (the tiny-corpus rule of
    # `assign_splits` needs them all), once to write. A large one is split by hash alone.
    assigned: dict[str, Split] = {}
    ranked = False
    if len(stored_ids(results_dir)) <= cfg.small_corpus_videos:
        with_text = [(r.video_id, r.video.source if r.video else None) for r in iter_results(results_dir) if r.dialogues]
        assigned = assign_splits(with_text, cfg)
        ranked = any(assigned[v] != split_of(v, cfg, source) for v, source in with_text)
    for result in iter_results(results_dir):
        results += 1
        with_dialogues += bool(result.dialogues)
        fingerprints.add(result.config_fingerprint)
        split = assigned.get(result.video_id) or split_of(result.video_id, cfg,
                                                          result.video.source if result.video else None)
        for table, attr in _RESULT_FIELDS.items():
            value = getattr(result, attr)
            records = [value] if isinstance(value, Record) else list(value or [])
            if records:
                # Quarantine rows describe the build, not training data: one split for all of them.
                writer_for(table, ALL_SPLIT if table == "quarantine" else split).add(records)

    table_order = list(_RESULT_FIELDS)
    split_order = [*SPLITS, ALL_SPLIT]
    shards: list[dict[str, Any]] = []
    for key in sorted(writers, key=lambda k: (table_order.index(k[0]), split_order.index(k[1]))):
        shards.extend(writers[key].close())
    rows: dict[str, int] = {}
    for entry in shards:
        rows[entry["table"]] = rows.get(entry["table"], 0) + entry["rows"]
    index = {
        "schema_version": SCHEMA_VERSION,
        "created_from": {"results": results, "results_with_dialogues": with_dialogues,
                         "config_fingerprints": sorted(fingerprints), "rows": rows},
        "split": {"validation_share": cfg.validation_share, "rl_share": cfg.rl_share,
                  "rl_share_by_source": dict(sorted(cfg.rl_share_by_source.items())), "split_seed": cfg.split_seed,
                  "by": "sha256(split_seed|video_id)", "ranked_small_corpus": ranked},
        "shards": shards,
    }
    _write_index(corpus_root, index)
    _delete_unlisted(corpus_root, index)
    if cfg.publish_url:
        publish(corpus_root, cfg.publish_url)
    return index


class CorpusError(ValueError):
    """A corpus whose index or shards cannot be read; the message names the file."""


def read_index(corpus_root: str | Path) -> dict[str, Any]:
    path = Path(corpus_root) / INDEX_NAME
    if not path.is_file():
        raise CorpusError(f"{path}: no corpus index (build the corpus first, or check the path)")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorpusError(f"{path}: unreadable corpus index: {error}") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise CorpusError(f"{path}: not a corpus index (no 'shards' list)")
    return index


def shard_paths(corpus_root: str | Path, table: str, split: str | None = None) -> list[Path]:
    """Shards of one table (and split), in index order, each checked to lie inside the corpus and
    to exist: the one reader of `index.json` for the trainer, the stats and `read_table`."""
    root = Path(corpus_root)
    found = []
    for entry in read_index(root)["shards"]:
        if entry.get("table") != table or (split is not None and entry.get("split") != split):
            continue
        rel = str(entry.get("path", ""))
        path = (root / rel).resolve()
        if not rel or root.resolve() not in path.parents:
            raise CorpusError(f"{root / INDEX_NAME}: shard path {rel!r} is outside the corpus")
        if not path.is_file():
            raise CorpusError(f"{path}: shard listed in {INDEX_NAME} is missing")
        found.append(path)
    return found


def read_table(corpus_root: str | Path, table: str, split: str | None = None) -> pa.Table:
    """One table (optionally one split) as a pyarrow Table, via the index; empty when it has no shards."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    parts = [read_parquet(path) for path in shard_paths(corpus_root, table, split)]
    return pa.concat_tables(parts) if parts else arrow_schema(TABLES[table]).empty_table()


def publish(corpus_root: str | Path, url: str) -> list[str]:
    """Copy the corpus (shards, then README.md and figures/, index.json last) to an fsspec URL.

    Resumable: a shard already there with the same size is skipped (its name carries its hash).
    Remote shards the new index does not list are deleted after the index is in place.
    Returns the relative paths sent.
    """
    import fsspec

    root = Path(corpus_root)
    index = read_index(root)
    fs, base = fsspec.core.url_to_fs(url)
    base = base.rstrip("/")
    sent = []

    def put(rel: str, skip_same_size: bool) -> None:
        target = f"{base}/{rel}"
        local = root / rel
        if skip_same_size and fs.exists(target) and fs.size(target) == local.stat().st_size:
            return
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(local), target)
        sent.append(rel)

    for entry in index["shards"]:
        put(entry["path"], skip_same_size=True)
    extras = [root / "README.md"] + sorted(p for p in (root / "figures").rglob("*") if p.is_file())
    for path in extras:
        if path.is_file():
            put(path.relative_to(root).as_posix(), skip_same_size=False)
    # The index goes last, through a temp name, so a remote reader never sees it list a missing shard.
    tmp = f"{base}/{TMP_PREFIX}{INDEX_NAME}"
    fs.put_file(str(root / INDEX_NAME), tmp)
    fs.mv(tmp, f"{base}/{INDEX_NAME}")
    sent.append(INDEX_NAME)
    listed = {f"{base}/{entry['path']}".lstrip("/") for entry in index["shards"]}
    for table in TABLES:
        folder = f"{base}/data/{table}"
        if not fs.exists(folder):
            continue
        for remote in fs.ls(folder, detail=False):
            if remote.lstrip("/") not in listed and remote.endswith(".parquet"):
                fs.rm(remote)
    return sent
