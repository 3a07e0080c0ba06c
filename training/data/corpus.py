"""Reading a corpus through its `index.json`: dialogues of one split and the videos they need.

`<corpus>/index.json` lists every shard (`curation.corpus.shards` writes it and owns its reader,
`shard_paths`). A missing or unreadable shard is an error that names the file; a shard of an
unknown schema major version is refused by `schemas.read_parquet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.corpus.shards import CorpusError, read_index, shard_paths
from schemas import Dialogue, SchemaVersionError, Video, from_table, read_parquet


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


def unreadable_shard(path: Path, error: Exception) -> CorpusError:
    """The error for a damaged shard file: it names the file, whatever pyarrow raised."""
    return CorpusError(f"{path}: unreadable shard: {type(error).__name__}: {error}")


def read_records(path: Path, record_cls):
    try:
        return from_table(read_parquet(path), record_cls)
    except SchemaVersionError:
        raise
    except Exception as error:
        raise unreadable_shard(path, error) from None


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
