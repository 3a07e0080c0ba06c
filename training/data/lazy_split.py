"""A split read lazily: an index of row groups, dialogues materialised only when asked for.

`read_split` (training.data.corpus) builds every `Dialogue` of a split in every rank: at 52k videos
(~99k dialogues) that is 29 s and ~1.2 GiB per process (issue 17). `LazySplit` holds instead
- the shard paths and, per row group, its first item index (numpy; footers only, no column read);
- the videos' `video_id` and `path` columns as one sorted Arrow table (a few MiB at 52k videos).
Item `i` is row `i - start[g]` of row group `g`; `dialogue(i)` decodes that row group (kept in a
small per-process LRU of Arrow tables, never Python objects) and builds one `Dialogue`. A rank
therefore materialises only the items of its own batches, and memory does not grow with the
corpus beyond a few bytes per row group and video.

Items are numbered as `read_split` numbers them (shards in index order, rows in file order), and
`max_dialogues` keeps the first N, so `LazySplit(...).dialogue(i) == read_split(...).dialogues[i]`.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.corpus.shards import CorpusError, shard_paths
from schemas import Dialogue, SchemaVersionError, from_table
from schemas.arrow import check_version
from training.data.corpus import unreadable_shard
from training.data.frame_cache import FrameCache

CACHED_ROW_GROUPS = 4  # per process: a window of the locality-aware order (dataset.batch_order) fits


class CorpusItem(NamedTuple):
    """What `EpisodeDataset` takes from a corpus: the dialogue, its video and the corpus's frame
    cache for this run's key (None: decode)."""

    dialogue: Dialogue
    video_path: Path | None
    frame_cache: FrameCache | None = None


def spread_indices(n_items: int, limit: int) -> list[int]:
    """At most `limit` of `range(n_items)`, spread evenly (all of them when there are fewer)."""
    if n_items <= limit:
        return list(range(n_items))
    return sorted({int(i) for i in np.linspace(0, n_items - 1, limit)})


def _footer(path: Path) -> pq.FileMetaData:
    try:
        meta = pq.read_metadata(path)
    except Exception as error:
        raise unreadable_shard(path, error) from None
    check_version(meta.metadata, str(path))
    return meta


class _SortedKeys:
    """A sorted Arrow string column seen as a Python sequence, for `bisect`."""

    def __init__(self, column: pa.Array):
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, i: int) -> str:
        return self.column[i].as_py()


class VideoPaths:
    """`video_id -> path` over every video row, kept as two sorted Arrow columns (no dict of 52k
    Python strings); a lookup is a binary search."""

    def __init__(self, root: Path):
        parts = []
        for path in shard_paths(root, "videos"):
            _footer(path)
            try:
                parts.append(pq.read_table(path, columns=["video_id", "path"]))
            except Exception as error:
                raise unreadable_shard(path, error) from None
        table = pa.concat_tables(parts) if parts else pa.table({"video_id": pa.array([], pa.string()),
                                                                "path": pa.array([], pa.string())})
        table = table.take(pc.sort_indices(table, [("video_id", "ascending")])).combine_chunks()
        self.ids = table.column("video_id").chunk(0) if table.num_rows else pa.array([], pa.string())
        self.paths = table.column("path").chunk(0) if table.num_rows else pa.array([], pa.string())

    def get(self, video_id: str) -> str | None:
        i = bisect.bisect_left(_SortedKeys(self.ids), video_id)
        if i < len(self.ids) and self.ids[i].as_py() == video_id:
            return self.paths[i].as_py()
        return None


class LazySplit:
    """The dialogues of one split of a corpus, read on demand (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", max_dialogues: int | None = None,
                 cached_row_groups: int = CACHED_ROW_GROUPS):
        self.root = Path(root)
        self.split = split
        self.paths = shard_paths(self.root, "dialogues", split)
        starts, files, groups = [0], [], []
        for f, path in enumerate(self.paths):
            meta = _footer(path)
            for g in range(meta.num_row_groups):
                files.append(f)
                groups.append(g)
                starts.append(starts[-1] + meta.row_group(g).num_rows)
        total = starts[-1] if max_dialogues is None else min(starts[-1], max_dialogues)
        self.group_start = np.asarray(starts, dtype=np.int64)  # item index of each group's row 0
        self.group_file = np.asarray(files, dtype=np.int32)
        self.group_index = np.asarray(groups, dtype=np.int32)
        self.n_items = int(total)
        self.videos = VideoPaths(self.root)
        self.cached_row_groups = cached_row_groups
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._files: dict[int, pq.ParquetFile] = {}
        self._pid = os.getpid()
        self.frame_cache: FrameCache | None = None  # set by the trainer when this run's key exists

    def __len__(self) -> int:
        return self.n_items

    def __getstate__(self) -> dict:  # a spawned DataLoader worker gets the index, not open files
        return {**self.__dict__, "_cache": OrderedDict(), "_files": {}}

    def drop_cache(self) -> None:
        """Forget the decoded row groups and hand Arrow's freed memory back (after the summary
        sample, before loader workers fork: they would each inherit the pages)."""
        self._cache.clear()
        self._files.clear()  # open readers keep their buffers
        pa.default_memory_pool().release_unused()

    def block_sizes(self) -> list[int]:
        """Items per row group, in item order (cut at `max_dialogues`): the blocks of the
        locality-aware batch order."""
        ends = np.minimum(self.group_start[1:], self.n_items)
        sizes = ends - np.minimum(self.group_start[:-1], self.n_items)
        return [int(s) for s in sizes if s > 0]

    def _row_group(self, g: int) -> pa.Table:
        if self._pid != os.getpid():  # a forked worker: its own file handles and cache
            self._cache, self._files, self._pid = OrderedDict(), {}, os.getpid()
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        f = int(self.group_file[g])
        path = self.paths[f]
        try:
            if f not in self._files:
                self._files[f] = pq.ParquetFile(path)
            table = self._files[f].read_row_group(int(self.group_index[g]))
        except Exception as error:
            raise unreadable_shard(path, error) from None
        self._cache[g] = table
        while len(self._cache) > self.cached_row_groups:
            self._cache.popitem(last=False)
        return table

    def dialogue(self, index: int) -> Dialogue:
        if not 0 <= index < self.n_items:
            raise IndexError(f"item {index} of {self.n_items}")
        g = int(np.searchsorted(self.group_start, index, side="right")) - 1
        row = self._row_group(g).slice(index - int(self.group_start[g]), 1)
        try:
            return from_table(row, Dialogue)[0]
        except SchemaVersionError:
            raise
        except Exception as error:
            raise CorpusError(f"{self.paths[int(self.group_file[g])]}: bad dialogue row: "
                              f"{type(error).__name__}: {error}") from None

    def video_path(self, video_id: str) -> Path | None:
        rel = self.videos.get(video_id)
        return None if rel is None else self.root / rel

    def __getitem__(self, index: int) -> CorpusItem:
        dialogue = self.dialogue(index)
        return CorpusItem(dialogue, self.video_path(dialogue.video_id), self.frame_cache)

    def column(self, name: str) -> pa.ChunkedArray:
        """One column of the split, read alone (e.g. `video_id`, `duration_s`), cut at
        `max_dialogues`."""
        parts = []
        for path in self.paths:
            try:
                parts.append(pq.read_table(path, columns=[name]).column(name))
            except Exception as error:
                raise unreadable_shard(path, error) from None
        chunks = [c for part in parts for c in part.chunks]
        return pa.chunked_array(chunks, type=parts[0].type if parts else pa.string()).slice(0, self.n_items)


class SplitItems:
    """Several lazy splits, then plain items (released episodes), as one indexable sequence."""

    def __init__(self, splits: list[LazySplit], extra: list | None = None):
        self.splits = splits
        self.extra = extra or []
        self.starts = np.cumsum([0] + [len(s) for s in splits])

    @property
    def corpus_items(self) -> int:
        return int(self.starts[-1])

    def __len__(self) -> int:
        return self.corpus_items + len(self.extra)

    def __getitem__(self, index: int):
        if index >= self.corpus_items:
            return self.extra[index - self.corpus_items]
        s = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.splits[s][index - int(self.starts[s])]

    def drop_cache(self) -> None:
        for split in self.splits:
            split.drop_cache()

    def block_sizes(self) -> list[int]:
        """Row-group blocks of the corpus items, which come first (the extra items are not blocked)."""
        return [size for split in self.splits for size in split.block_sizes()]
