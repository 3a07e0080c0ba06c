"""The catalogue of stored results: what is done, with which fingerprint, what was quarantined.

One SQLite file, `<results_dir>/catalogue.sqlite`, with a row per readable result file: the
file's identity on disk (inode, size, mtime in ns), the sha256 of its bytes, its config
fingerprint, and the few facts the flow needs without opening it (source, dialogue kinds,
quarantine triples, per-stage wall, wait and CPU seconds, the per-video counters the summary
sums, the input digests and acquired copy the reuse check compares). The result files stay the
truth and the resume marker; the catalogue is a cache of them that `sync_catalogue` brings up to
date by listing the store (names and `stat`, no reads) and reading only the files it has not
seen in that exact state. A result rewritten by `write_result` is a new inode (temp file +
rename), so a changed file is always re-read; a damaged one reads as absent, as in
`curation.corpus.results`.

Only the flow's own process writes it (workers write result files, never the catalogue), one
transaction per sync, so a crash leaves the previous state and the next sync catches up. It holds
nothing the files do not, so damage costs a rebuild, never a run: a catalogue SQLite cannot open
or read (not SQLite, a damaged page, text that is not UTF-8) is deleted and rebuilt from the
files, and a row whose check column does not match its other columns is read again from its
file. It uses SQLite's default rollback journal, which works on network filesystems that honour
locks for a single writer (WAL needs shared memory, which NFS lacks).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from curation.corpus.results import (
    SUFFIX,
    TMP_PREFIX,
    VideoResult,
    parse_result,
    result_folder_name,
)
from schemas.records import check_safe_id

CATALOGUE_NAME = "catalogue.sqlite"
UPSERT_BATCH = 2000
FORMAT = "4"  # bump when the columns change: an older catalogue is dropped and rebuilt

_SCHEMA = """
create table if not exists meta (key text primary key, value text not null);
create table if not exists results (
    video_id text primary key,
    file_key text not null,
    sha256 text not null,
    config_fingerprint text not null,
    source text not null,
    dialogue_kinds text not null,
    quarantine text not null,
    stage_stats text not null,
    inputs text not null,
    video_file text not null,
    row_check text not null
) without rowid;
"""


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One result as the catalogue knows it; the JSON columns are decoded on demand (the flow's
    resume check needs only the fingerprint and the quarantine)."""

    video_id: str
    sha256: str
    config_fingerprint: str
    source: str  # the video's `source` ('' before the probe): its split share may depend on it
    dialogue_kinds_json: str
    quarantine_json: str
    stage_stats_json: str  # {"durations_s", "wait_s", "cpu_s", "counts"}
    inputs_json: str = "null"  # the digests `curation.corpus.reuse` compares, or null (an old result)
    video_file: str = ""  # `path:bytes` of the acquired copy its videos row names, '' without one

    @property
    def dialogue_kinds(self) -> dict[str, int]:
        return json.loads(self.dialogue_kinds_json) if self.dialogue_kinds_json != "{}" else {}

    @property
    def quarantine(self) -> list[tuple[str, str, str]]:
        """(stage, reason, kind) of every quarantine row the result holds."""
        # Most results have none; the resume check asks 52k times per run.
        return [tuple(q) for q in json.loads(self.quarantine_json)] if self.quarantine_json != "[]" else []

    @property
    def inputs(self) -> dict[str, str] | None:
        return json.loads(self.inputs_json)

    @property
    def stage_stats(self) -> dict[str, dict]:
        """Per-stage wall, wait and CPU seconds and the per-video counters, from one parse."""
        stats = json.loads(self.stage_stats_json)
        return {key: stats.get(key, {}) for key in ("durations_s", "wait_s", "cpu_s", "counts")}

    @property
    def with_dialogues(self) -> bool:
        return self.dialogue_kinds_json != "{}"


@dataclass
class Catalogue:
    entries: dict[str, CatalogueEntry]
    read_files: int = 0  # result files this sync had to open (the rest were known by their stat)

    def get(self, video_id: str) -> CatalogueEntry | None:
        return self.entries.get(video_id)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CatalogueEntry]:
        """Entries sorted by video id (the shards' row order)."""
        return (self.entries[v] for v in sorted(self.entries))

    def only(self, video_ids: set[str]) -> Catalogue:
        """The entries of these ids: what one manifest publishes out of a store that may hold more."""
        return Catalogue({v: e for v, e in self.entries.items() if v in video_ids}, self.read_files)


def entry_of(result: VideoResult, sha256: str) -> CatalogueEntry:
    kinds: dict[str, int] = {}
    for dialogue in result.dialogues:
        kinds[dialogue.kind] = kinds.get(dialogue.kind, 0) + 1
    return CatalogueEntry(
        video_id=result.video_id, sha256=sha256, config_fingerprint=sys.intern(result.config_fingerprint),
        source=sys.intern(result.video.source if result.video else ""),
        dialogue_kinds_json=sys.intern(json.dumps(kinds, sort_keys=True)),
        quarantine_json=sys.intern(json.dumps([[q.stage, q.reason, q.kind] for q in result.quarantine])),
        stage_stats_json=json.dumps({"durations_s": result.stage_durations_s, "wait_s": result.stage_wait_s,
                                     "cpu_s": result.stage_cpu_s, "counts": result.counts}, sort_keys=True),
        inputs_json=json.dumps(result.inputs or None, sort_keys=True),
        video_file=f"{result.video.path}:{result.video.bytes}" if result.video else "")


def _file_key(stat: os.stat_result) -> str:
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def _listing(results_dir: Path) -> Iterator[tuple[str, str, str]]:
    """(video_id, path, file key) of every result file where `result_path` would look for it."""
    try:
        folders = sorted(os.scandir(results_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder.path):
            name = entry.name
            if not name.endswith(SUFFIX) or name.startswith(TMP_PREFIX):
                continue
            video_id = name[: -len(SUFFIX)]
            try:
                check_safe_id(video_id)
            except ValueError:
                continue
            # A file in the wrong hash folder is not what `read_result` reads: not a result.
            if result_folder_name(video_id) != folder.name:
                continue
            try:
                yield video_id, entry.path, _file_key(entry.stat())
            except FileNotFoundError:  # replaced or removed while listing
                continue


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(_SCHEMA)
    stored = con.execute("select value from meta where key = 'format'").fetchone()
    if stored is None or stored[0] != FORMAT:
        con.executescript("begin; delete from results; "
                          f"insert or replace into meta values ('format', '{FORMAT}'); commit;")
    return con


def _raise_if_disk_refused(error: sqlite3.Error, path: Path) -> None:
    # The flow stops cleanly on ENOSPC (an OSError); SQLite reports a full disk in its own words.
    if "disk is full" in str(error) or "disk I/O error" in str(error):
        raise OSError(errno.ENOSPC, f"No space left on device ({error})", str(path)) from None


def sync_catalogue(results_dir: str | Path) -> Catalogue:
    """Bring the catalogue in line with the result files and return every entry.

    Reads only files that are new or changed since the last sync; an absent results folder is an
    empty store (nothing is created for it). A catalogue SQLite cannot read (not SQLite, a damaged
    page, text that is not UTF-8) is deleted and rebuilt from the files; a row whose check does not
    match its columns is dropped and its file read again.
    """
    root = Path(results_dir)
    if not root.is_dir():
        return Catalogue(entries={})
    path = root / CATALOGUE_NAME
    try:
        with closing(_connect(path)) as con:
            return _sync(con, root)
    except sqlite3.DatabaseError as error:
        _raise_if_disk_refused(error, path)
    # Damaged: it holds nothing the result files do not, so start it again.
    for leftover in (path, path.with_name(path.name + "-journal")):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        leftover.unlink(missing_ok=True)
    with closing(_connect(path)) as con:
        try:
            return _sync(con, root)
        except sqlite3.DatabaseError as error:
            _raise_if_disk_refused(error, path)
            raise


_COLUMNS = ("video_id", "file_key", "sha256", "config_fingerprint", "source", "dialogue_kinds", "quarantine",
            "stage_stats", "inputs", "video_file", "row_check")
_UPSERT = f"insert or replace into results values ({', '.join('?' * len(_COLUMNS))})"


def _row_check(values: tuple[str, ...]) -> str:
    # A damaged page can leave text that still decodes; a row whose check fails is read again.
    return hashlib.sha1("\x1f".join(values).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _row(video_id: str, file_key: str, entry: CatalogueEntry) -> tuple[str, ...]:
    values = (video_id, file_key, entry.sha256, entry.config_fingerprint, entry.source, entry.dialogue_kinds_json,
              entry.quarantine_json, entry.stage_stats_json, entry.inputs_json, entry.video_file)
    return (*values, _row_check(values))


def _sync(con: sqlite3.Connection, root: Path) -> Catalogue:
    known: dict[str, str] = {}
    entries: dict[str, CatalogueEntry] = {}
    intern = sys.intern  # fingerprints and most fact columns repeat across 52k rows: one copy each
    damaged: list[str] = []
    for row in con.execute(f"select {', '.join(_COLUMNS)} from results"):
        if _row_check(row[:-1]) != row[-1]:
            damaged.append(row[0])
            continue
        video_id, file_key, sha256, fingerprint, source, kinds, quarantine, stats, inputs, video_file, _ = row
        known[video_id] = file_key
        entries[video_id] = CatalogueEntry(video_id, sha256, intern(fingerprint), intern(source), intern(kinds),
                                           intern(quarantine), stats, inputs, video_file)
    upserts: list[tuple[str, ...]] = []
    seen: set[str] = set()
    read_files = 0
    con.execute("begin")  # one transaction: the catalogue moves from one consistent state to the next
    for video_id, path, file_key in _listing(root):
        if known.get(video_id) == file_key:
            seen.add(video_id)
            continue
        read_files += 1
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        result = parse_result(data, video_id)
        if result is None:  # damaged: absent, so the video is redone
            continue
        seen.add(video_id)
        entry = entries[video_id] = entry_of(result, hashlib.sha256(data).hexdigest())
        upserts.append(_row(video_id, file_key, entry))
        if len(upserts) >= UPSERT_BATCH:  # bounded memory on a first sync of a large store
            con.executemany(_UPSERT, upserts)
            upserts = []
    known.clear()
    gone = [v for v in entries if v not in seen]
    for video_id in gone:
        del entries[video_id]
    con.executemany("delete from results where video_id = ?", [(v,) for v in gone + damaged])
    con.executemany(_UPSERT, upserts)
    con.execute("commit")
    return Catalogue(entries=entries, read_files=read_files)
