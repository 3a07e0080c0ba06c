"""Parquet shards from the result store: stable hash buckets of videos, zstd files, an index.

Layout: `<corpus>/data/<table>/<split>-<BBBBB>-<PP>-<sha8>.parquet` plus `<corpus>/index.json`.
Every video belongs to one bucket, `sha256(video_id) mod count` (`bucket_of`), and one split
(`split_of`); a bucket's rows of one (table, split) go to file part 00 (a part rolls to 01, ...
only past `target_shard_bytes`), in video-id order. The count is fixed per corpus: chosen at the
first build (`ShardConfig.buckets`, 64 by default), stored in `index.json`, kept by every later
build unless the config names another count. So a new or redone video rewrites only the files
of its own bucket, one per table and split it has rows in; every other file keeps its bytes and
name, and a push sends only what changed (the index lists each file's sha256).

Which buckets to rewrite: the index stores a digest per bucket, the sha256 over its members'
`video_id result-sha256` lines (from `curation.corpus.catalogue`, no result file opened), and a
`layout` key over everything else that decides the bytes (shard settings, bucket count, schema
and pyarrow versions). A bucket whose digest and layout match the previous index, and whose
listed files are all there with their sizes, is kept as listed; any other is rebuilt from its
result files. A full rebuild and an update of the same results give byte-identical files, names
and index (no timestamps: only parquet's `created_by`).

The name carries the first 8 hex of the file's own sha256, so a rewrite never overwrites a file
that a reader of the old index has open. Each new file is written to a hidden temp name, fsynced
and renamed; the new index is then released together with the card and figures
(`curation.corpus.release`), and only after that are files it does not list deleted. A crash at
any point leaves an index and card whose every file is there, and the next build starts again
from the result store, which holds one result per video: rows are neither duplicated nor dropped.
An index that is absent or damaged in any way (a bucket count of 0, entries of the wrong shape)
only costs a full rewrite.

Rows stream through one bucket at a time: results are read one at a time and every (table,
split) keeps at most one row group (`row_group_bytes` of Arrow memory) before writing it, so
memory is bounded by a bucket's share of the corpus, not by the number of videos.
One build per corpus at a time (`curation.corpus.build_lock`): a build deletes any `.tmp-` file
it finds under `data/`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.corpus.catalogue import Catalogue, sync_catalogue
from curation.corpus.hub_upload import card_figures
from curation.corpus.public_rows import public_record
from curation.corpus.release import INDEX_NAME, TMP_PREFIX, Release, finish_release, fsync_file
from curation.corpus.results import read_result_bytes
from curation.hashing import sha256_file
from schemas.arrow import arrow_schema, read_parquet, to_table
from schemas.records import SCHEMA_VERSION, TABLES, Record

MB = 10**6
ALL_SPLIT = "all"
MAX_BUCKETS = 99999  # five digits in a shard's name
DEFAULT_BUCKETS = 64  # our choice: at 52k videos ~800 per bucket, so adding one rewrites ~1/64 of the rows
BUCKET_RULE = "sha256(video_id) mod count"
# 3: rows in their public form (no local paths); 2: hash buckets (1 was one rolling sequence of
# files per table and split)
LAYOUT_VERSION = "3"


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
    buckets: int | None = Field(None, ge=1, le=MAX_BUCKETS, description=(
        "hash buckets of videos; None keeps the corpus's own count (64 for a new corpus); another "
        "number rewrites every shard once"))


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


def bucket_of(video_id: str, count: int) -> int:
    """The video's bucket: a pure function of its id, independent of the split's hash and seed."""
    return int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "big") % count


@functools.cache
def _schema(table: str) -> pa.Schema:
    # Derived from the record class by reflection: once per table, not once per bucket file.
    return arrow_schema(TABLES[table])


class _RollingWriter:
    """One (table, split, bucket): rows in, finished shard entries out; a new part past the target size."""

    def __init__(self, root: Path, table: str, split: str, bucket: int, cfg: ShardConfig):
        self.root, self.table, self.split, self.bucket, self.cfg = root, table, split, bucket, cfg
        self.cls: type[Record] = TABLES[table]
        self.schema = _schema(table)
        self.folder = root / "data" / table
        self.pending: list[Record] = []
        self.buffered: list[pa.Table] = []
        self.buffered_bytes = 0
        self.sink: pa.NativeFile | None = None
        self.writer: pq.ParquetWriter | None = None
        self.tmp: Path | None = None
        self.rows_in_file = 0
        self.entries: list[dict[str, Any]] = []
        self.written: list[str] = []  # paths of entries whose bytes were not on disk before

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

    def _stem(self) -> str:
        return f"{self.split}-{self.bucket:05d}-{len(self.entries):02d}"

    def _write_row_group(self) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffered).combine_chunks()
        self.buffered, self.buffered_bytes = [], 0
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.tmp = self.folder / f"{TMP_PREFIX}{self._stem()}-{os.getpid()}.parquet.part"
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
        fsync_file(tmp)
        sha256 = sha256_file(tmp)
        rel = f"data/{self.table}/{self._stem()}-{sha256[:8]}.parquet"
        target = self.root / rel
        if target.is_file() and sha256_file(target) == sha256:
            # The same bytes are there already (the bucket changed in another split): leave the
            # file a reader may have open, and its timestamps, alone.
            tmp.unlink()
        else:
            os.replace(tmp, target)
            self.written.append(rel)
        self.entries.append({"table": self.table, "split": self.split, "bucket": self.bucket, "path": rel,
                             "rows": self.rows_in_file, "sha256": sha256, "bytes": (self.root / rel).stat().st_size})
        self.rows_in_file = 0

    def close(self) -> list[dict[str, Any]]:
        self._convert()
        self._write_row_group()
        self._finish_file()
        return self.entries


_RESULT_FIELDS: dict[str, str] = {"videos": "video", "segments": "segments", "scenes": "scenes",
                                  "dialogues": "dialogues", "quarantine": "quarantine"}
TABLE_ORDER = list(_RESULT_FIELDS)


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def layout_key(cfg: ShardConfig, bucket_count: int) -> str:
    """Everything but the results that decides a shard's bytes; another key rewrites every file."""
    settings = cfg.model_dump(mode="json", exclude={"publish_url", "buckets"})
    blob = json.dumps({"settings": settings, "buckets": bucket_count, "by": BUCKET_RULE,
                       "versions": [LAYOUT_VERSION, SCHEMA_VERSION, pa.__version__]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_bucket(results_dir: Path, corpus_root: Path, bucket: int, splits: dict[str, Split],
                  cfg: ShardConfig) -> tuple[list[dict[str, Any]], list[str], str]:
    """Every file of one bucket from its result files; returns the entries, the paths whose bytes
    are new, and the bucket's digest over the results actually read (a file damaged since the
    catalogue saw it is left out)."""
    writers: dict[tuple[str, str], _RollingWriter] = {}
    lines = []
    for video_id in splits:
        found = read_result_bytes(results_dir, video_id)
        if found is None:
            continue
        result, data = found
        split = splits[video_id]
        lines.append(f"{video_id} {hashlib.sha256(data).hexdigest()} {split}")
        for table, attr in _RESULT_FIELDS.items():
            value = getattr(result, attr)
            # The public form: no builder's local path in a published row (curation.corpus.public_rows).
            records = [public_record(r) for r in ([value] if isinstance(value, Record) else list(value or []))]
            if records:
                # Quarantine rows describe the build, not training data: one split for all of them.
                key = (table, ALL_SPLIT if table == "quarantine" else split)
                if key not in writers:
                    writers[key] = _RollingWriter(corpus_root, key[0], key[1], bucket, cfg)
                writers[key].add(records)
    entries = [e for key in sorted(writers) for e in writers[key].close()]
    written = [path for key in sorted(writers) for path in writers[key].written]
    return entries, written, _digest(lines)


def _previous_index(corpus_root: Path) -> dict[str, Any] | None:
    """The live index when it can guide an update; None (rebuild every bucket) when it is absent or
    damaged in any way, so a bad index costs a full rewrite, never a failed build."""
    try:
        index = read_index(corpus_root)
    except CorpusError:
        return None
    buckets = index.get("buckets")
    if not isinstance(buckets, dict) or not isinstance(buckets.get("digests", {}), dict):
        return None
    count = buckets.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BUCKETS:
        return None
    return index if all(map(_valid_entry, index["shards"])) else None


_ENTRY_TYPES = {"table": str, "split": str, "bucket": int, "path": str, "rows": int, "sha256": str, "bytes": int}


def _valid_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and entry.get("table") in TABLE_ORDER
            and all(isinstance(entry.get(k), t) and not isinstance(entry.get(k), bool) for k, t in _ENTRY_TYPES.items()))


def _intact(corpus_root: Path, entry: dict[str, Any], released_ns: int) -> bool:
    """The listed file is there with its size, and its bytes are those listed. Every shard an index
    lists was written before that index was released, so only one modified since (`released_ns`,
    the index's mtime) is hashed again: re-hashing every kept file each run would cost what the
    stable layout saves, and a byte changed in place (same size) must not be kept and published."""
    path = corpus_root / entry["path"]
    try:
        stat = path.stat()
        if stat.st_size != entry["bytes"]:
            return False
        return stat.st_mtime_ns <= released_ns or sha256_file(path) == entry["sha256"]
    except OSError:
        return False


@dataclass
class ShardUpdate:
    index: dict[str, Any]
    written: list[str] = field(default_factory=list)  # files whose bytes this build wrote
    kept: int = 0  # files left as they were (their bytes were already on disk)
    removed: list[str] = field(default_factory=list)  # files of the previous build deleted after the swap


def write_shards(results_dir: str | Path, corpus_root: str | Path, cfg: ShardConfig | None = None,
                 catalogue: Catalogue | None = None,
                 on_bucket: Callable[[int, int], None] | None = None) -> ShardUpdate:
    """Write the shards of every bucket whose results changed, beside the live ones, and return the
    index that lists them; nothing a reader sees changes until that index is released
    (`curation.corpus.release`). `catalogue` is synced here when the caller has none; `on_bucket`
    is called after each bucket (it may raise to stop: what was written is unlisted, and goes)."""
    cfg = cfg or ShardConfig()
    results_dir, corpus_root = Path(results_dir), Path(corpus_root)
    corpus_root.mkdir(parents=True, exist_ok=True)
    finish_release(corpus_root)  # the previous index must be the one readers see
    catalogue = catalogue if catalogue is not None else sync_catalogue(results_dir)
    previous = _previous_index(corpus_root)
    count = cfg.buckets or (previous["buckets"]["count"] if previous else DEFAULT_BUCKETS)
    layout = layout_key(cfg, count)
    reusable = previous if previous and previous.get("layout") == layout else None
    old_digests = reusable["buckets"].get("digests", {}) if reusable else {}
    released_ns = (corpus_root / INDEX_NAME).stat().st_mtime_ns if reusable else 0
    old_entries: dict[int, list[dict[str, Any]]] = {}
    for entry in reusable["shards"] if reusable else []:
        old_entries.setdefault(entry.get("bucket"), []).append(entry)

    # A small corpus gets every split a video by rank (`assign_splits`); a large one by hash alone.
    assigned: dict[str, Split] = {}
    if len(catalogue) <= cfg.small_corpus_videos:
        assigned = assign_splits([(e.video_id, e.source) for e in catalogue if e.with_dialogues], cfg)
    ranked = any(split != split_of(v, cfg, catalogue.get(v).source) for v, split in assigned.items())
    members: dict[int, list[tuple[str, str, Split]]] = {}
    results = with_dialogues = 0
    fingerprints: set[str] = set()
    for entry in catalogue:  # sorted by video id: each bucket's members stay in row order
        split = assigned.get(entry.video_id) or split_of(entry.video_id, cfg, entry.source)
        members.setdefault(bucket_of(entry.video_id, count), []).append((entry.video_id, entry.sha256, split))
        results += 1
        with_dialogues += entry.with_dialogues
        fingerprints.add(entry.config_fingerprint)

    update = ShardUpdate(index={})
    shards: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    for bucket in sorted(members):
        # The split is part of the digest: on a small corpus a new video can move another's split.
        wanted = _digest([f"{video_id} {sha256} {split}" for video_id, sha256, split in members[bucket]])
        old = old_entries.get(bucket, [])
        if old_digests.get(str(bucket)) == wanted and all(_intact(corpus_root, e, released_ns) for e in old):
            shards += old
            update.kept += len(old)
            digests[str(bucket)] = wanted
        else:
            entries, written, digests[str(bucket)] = _write_bucket(
                results_dir, corpus_root, bucket, {v: split for v, _, split in members[bucket]}, cfg)
            shards += entries
            update.written += written
            update.kept += len(entries) - len(written)
        if on_bucket:
            on_bucket(bucket, count)
    shards.sort(key=lambda e: (TABLE_ORDER.index(e["table"]), e["path"]))
    rows: dict[str, int] = {}
    for entry in shards:
        rows[entry["table"]] = rows.get(entry["table"], 0) + entry["rows"]
    update.index = {
        "schema_version": SCHEMA_VERSION,
        "created_from": {"results": results, "results_with_dialogues": with_dialogues,
                         "config_fingerprints": sorted(fingerprints), "rows": rows},
        "split": {"validation_share": cfg.validation_share, "rl_share": cfg.rl_share,
                  "rl_share_by_source": dict(sorted(cfg.rl_share_by_source.items())), "split_seed": cfg.split_seed,
                  "by": "sha256(split_seed|video_id)", "ranked_small_corpus": ranked},
        "buckets": {"count": count, "by": BUCKET_RULE, "digests": digests},
        "layout": layout,
        "shards": shards,
    }
    return update


def index_text(index: dict[str, Any]) -> str:
    """`index.json` as written: sorted keys, so the same corpus gives the same bytes."""
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def update_shards(results_dir: str | Path, corpus_root: str | Path, cfg: ShardConfig | None = None,
                  catalogue: Catalogue | None = None) -> ShardUpdate:
    """Bring the corpus's shards and index in line with the stored results, rewriting only the
    buckets whose results changed, and release the new index (the flow releases it together with
    the card: `flows.build_corpus`)."""
    cfg = cfg or ShardConfig()
    update = write_shards(results_dir, corpus_root, cfg, catalogue)
    release = Release(corpus_root)
    release.write(INDEX_NAME, index_text(update.index))
    update.removed = release.commit()
    if cfg.publish_url:
        publish(corpus_root, cfg.publish_url)
    return update


def build_shards(results_dir: str | Path, corpus_root: str | Path, cfg: ShardConfig | None = None,
                 catalogue: Catalogue | None = None) -> dict[str, Any]:
    """Shards and index for every stored result (only changed buckets rewritten); returns the index."""
    return update_shards(results_dir, corpus_root, cfg, catalogue).index


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


def shard_paths(corpus_root: str | Path, table: str, split: str | None = None,
                index: dict[str, Any] | None = None) -> list[Path]:
    """Shards of one table (and split), in index order, each checked to lie inside the corpus and
    to exist: the one reader of `index.json` for the trainer, the stats and `read_table`. `index`:
    one not released yet (the card of a build is drawn from the index it is released with)."""
    root = Path(corpus_root)
    found = []
    for entry in (index if index is not None else read_index(root))["shards"]:
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
    extras = [root / "README.md"] + [root / rel for rel in card_figures(root)]  # what the card shows
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
