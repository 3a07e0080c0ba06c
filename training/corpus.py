"""Reading a corpus through its `index.json`: dialogues of one split and the videos they need.

`<corpus>/index.json` lists every shard: `{"schema_version", "shards": [{"table", "split", "path",
"rows", "sha256", "bytes"}]}` with paths relative to the corpus root (written atomically by the
corpus flow). A missing or unreadable shard is an error that names the file; a shard of an
unknown schema major version is refused by `schemas.read_parquet`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from schemas import Dialogue, SchemaVersionError, Video, from_table, read_parquet


class CorpusError(ValueError):
    pass


@dataclass(frozen=True)
class CorpusSplit:
    root: Path
    dialogues: list[Dialogue]
    videos: dict[str, Video]

    def video_path(self, video_id: str) -> Path | None:
        video = self.videos.get(video_id)
        if video is None or video.path is None:
            return None
        return self.root / video.path


def read_index(root: str | Path) -> dict:
    path = Path(root) / "index.json"
    if not path.is_file():
        raise CorpusError(f"{path}: no corpus index (build the corpus first, or check the path)")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorpusError(f"{path}: unreadable corpus index: {error}") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise CorpusError(f"{path}: not a corpus index (no 'shards' list)")
    return index


def shard_paths(root: str | Path, table: str, split: str | None = None) -> list[Path]:
    """Shards of one table (and split), in index order, each checked to exist."""
    root = Path(root)
    found = []
    for entry in read_index(root)["shards"]:
        if entry.get("table") != table or (split is not None and entry.get("split") != split):
            continue
        rel = str(entry.get("path", ""))
        path = (root / rel).resolve()
        if not rel or root.resolve() not in path.parents:
            raise CorpusError(f"{root / 'index.json'}: shard path {rel!r} is outside the corpus")
        if not path.is_file():
            raise CorpusError(f"{path}: shard listed in index.json is missing")
        found.append(path)
    return found


def read_records(path: Path, record_cls):
    try:
        return from_table(read_parquet(path), record_cls)
    except SchemaVersionError:
        raise
    except Exception as error:  # a damaged file: name it, whatever pyarrow raised
        raise CorpusError(f"{path}: unreadable shard: {type(error).__name__}: {error}") from None


def read_split(root: str | Path, split: str = "train", max_dialogues: int | None = None) -> CorpusSplit:
    """The dialogues of `split` and every video row (videos are few and small; any split)."""
    root = Path(root)
    dialogues = [d for p in shard_paths(root, "dialogues", split) for d in read_records(p, Dialogue)]
    if max_dialogues is not None:
        dialogues = dialogues[:max_dialogues]
    videos = {v.video_id: v for p in shard_paths(root, "videos") for v in read_records(p, Video)}
    return CorpusSplit(root=root, dialogues=dialogues, videos=videos)


def splits_of(root: str | Path) -> set[str]:
    return {str(e.get("split")) for e in read_index(root)["shards"] if e.get("table") == "dialogues"}
