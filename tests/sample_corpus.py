"""Builds a small corpus folder (shards + index.json, the flow's layout) from the sample videos,
for the trainer's tests until (and besides) the corpus flow."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from curation.hashing import sha256_file
from curation.skips import Skip
from curation.video.probe import probe_video as curation_probe
from schemas import Dialogue, Video, to_table, write_parquet

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def probe_video(video_id: str, path: Path, rel: str) -> Video:
    """The video row the flow would write, from the flow's own probe and checksum."""
    probe = curation_probe(path)
    assert not isinstance(probe, Skip), probe
    return Video(video_id=video_id, source="sample", uri=str(path), path=rel, sha256=sha256_file(path),
                 bytes=path.stat().st_size, duration_s=probe.duration_s, fps=probe.fps, width=probe.width,
                 height=probe.height, codec=probe.codec, has_audio=probe.has_audio)


def write_shard(root: Path, table: str, split: str, records, cls) -> dict:
    rel = f"data/{table}/{split}-00000.parquet"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(to_table(records, cls), path)
    data = path.read_bytes()
    return {"table": table, "split": split, "path": rel, "rows": len(records),
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def build_corpus(root: Path, dialogues: dict[str, list[dict]], video_ids: list[str]) -> Path:
    """`dialogues` maps split -> dialogue rows; `video_ids` are copied from samples/videos."""
    root.mkdir(parents=True, exist_ok=True)
    videos = []
    for video_id in video_ids:
        rel = f"videos/{video_id}.mp4"
        (root / "videos").mkdir(exist_ok=True)
        shutil.copyfile(SAMPLES / "videos" / f"{video_id}.mp4", root / rel)
        videos.append(probe_video(video_id, root / rel, rel))
    shards = [write_shard(root, "videos", "all", videos, Video)]
    for split, rows in dialogues.items():
        records = [Dialogue.model_validate(r) for r in rows]
        shards.append(write_shard(root, "dialogues", split, records, Dialogue))
    (root / "index.json").write_text(json.dumps({"schema_version": "1.0", "shards": shards}))
    return root
