"""Publishing one build as one swap: index.json, the card (README.md), its figures and summary.json
change together, or the corpus stays as it was.

Readers reach the shards through two files: `datasets` through the card's `configs:`, the trainer,
the viewer and the stats through `index.json`. Neither may ever name a file that is not there, and
the two must not stay out of step. POSIX renames one file at a time, so a release is a small
write-ahead log:

1. The new shards are written beside the old ones under names no live file has (their names carry
   their hash; `curation.corpus.shards.write_shards`).
2. Every other new file is written into `<corpus>/.release/` (`Release.path_for`).
3. `Release.commit` writes `.release/COMMIT`, the list of staged files in swap order, through a
   temp name, fsynced and renamed: the one atomic step. Before it the old corpus is whole and the
   staging is garbage; after it the new one is decided.
4. Each staged file is renamed over its live name (figures, summary.json, README.md, index.json).
5. Every shard the new index does not list goes, then COMMIT and `.release/`.

A kill in step 4 leaves some of these files new and some old, and every shard either names still
exists (old ones go in step 5 only, after every file is swapped), so `datasets` and the trainer
can both load it. Whoever opens the corpus to write next (`finish_release`, called by every build
and push before anything else) rolls a committed release forward and drops an uncommitted one
(its new shards stay unlisted until the next release deletes them), so the next build starts
from one corpus. One build per corpus at a time (`curation.corpus.build_lock`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from curation.corpus.results import fsync_folder
from schemas.records import TABLES

STAGING = ".release"
COMMIT = "COMMIT"
TMP_PREFIX = ".tmp-"
INDEX_NAME = "index.json"
# Swap order: what a file names must already be in place when it lands, and the index, which the
# trainer treats as the publication point, comes last.
_LAST = {"summary.json": 1, "README.md": 2, INDEX_NAME: 3}


def _swap_order(rel: str) -> tuple[int, str]:
    return _LAST.get(rel, 0), rel


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp name in its folder: whole or absent, never torn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


class Release:
    """The files of one build on their way in; see the module docstring."""

    def __init__(self, corpus_root: str | Path):
        self.root = Path(corpus_root)
        finish_release(self.root)  # a release left by a killed build lands (or goes) first
        self.staging = self.root / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)

    def path_for(self, rel: str) -> Path:
        """Where to write the new version of `<corpus>/<rel>` (its folders are made)."""
        path = self.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, rel: str, text: str) -> None:
        write_durably(self.path_for(rel), text.encode("utf-8"))

    def abandon(self) -> None:
        """Leave the corpus as it was (a stopped build); the new shards go with the next cleanup."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self) -> list[str]:
        """Swap every staged file in; returns the shards of the old build deleted after."""
        return commit_staged(self.root)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folders(root: Path, rels: list[str]) -> None:
    """fsync `root` and every folder under it that holds one of `rels`."""
    for folder in sorted({root} | {(root / rel).parent for rel in rels}):
        fsync_folder(folder)


def commit_staged(corpus_root: str | Path) -> list[str]:
    """Commit what `<corpus>/.release/` holds (step 3), then swap it in and clean up (4, 5)."""
    root = Path(corpus_root)
    staging = root / STAGING
    staged = sorted((p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()), key=_swap_order)
    for rel in staged:
        fsync_file(staging / rel)
    fsync_folders(staging, staged)  # a staged file in a subfolder is durable only with its entry there
    write_durably(staging / COMMIT, json.dumps(staged).encode())
    return finish_release(root)


def finish_release(corpus_root: str | Path) -> list[str]:
    """Roll a committed release forward (the rest of its swaps, then the cleanup) or drop an
    uncommitted one; returns the shards deleted. Safe to call at any time, any number of times."""
    root = Path(corpus_root)
    staging = root / STAGING
    if not staging.is_dir():
        return []
    try:
        staged = [str(rel) for rel in json.loads((staging / COMMIT).read_text())]
    except (OSError, ValueError, TypeError):  # never committed (or the commit was cut): the old corpus stands
        shutil.rmtree(staging, ignore_errors=True)
        return []
    # Only names inside the corpus: the list is ours, but it is read back from disk.
    staged = [rel for rel in staged if not Path(rel).is_absolute() and ".." not in Path(rel).parts]
    for rel in staged:
        source = staging / rel
        if source.is_file():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    fsync_folders(root, staged)  # the renames land on disk before COMMIT, which names them, goes
    removed = delete_unlisted(root)  # before COMMIT goes, so a kill here repeats it next time
    (staging / COMMIT).unlink()
    shutil.rmtree(staging, ignore_errors=True)
    return removed


def unlisted_shards(corpus_root: Path, listed: set[str]) -> list[str]:
    """Shard files (and crashed temp files) under `data/` that `listed` does not name."""
    found = []
    for table in TABLES:
        folder = corpus_root / "data" / table
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            rel = f"data/{table}/{path.name}"
            if path.is_file() and rel not in listed and (path.name.startswith(TMP_PREFIX) or path.suffix == ".parquet"):
                found.append(rel)
    return found


def delete_unlisted(corpus_root: Path) -> list[str]:
    """Remove the shards the live index does not list; returns what went. Nothing goes when the
    index cannot be read: then nothing says which files are stale."""
    try:
        index = json.loads((corpus_root / INDEX_NAME).read_text())
        listed = {str(entry["path"]) for entry in index["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    removed = unlisted_shards(corpus_root, listed)
    for rel in removed:
        (corpus_root / rel).unlink(missing_ok=True)
    return removed
