"""Builds a small corpus folder (shards + index.json, the flow's layout) from the sample videos,
for the trainer's tests until (and besides) the corpus flow."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import av

from schemas import Dialogue, Video, to_table, write_parquet

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def probe_video(video_id: str, path: Path, rel: str) -> Video:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration_s = float(container.duration / 1_000_000) if container.duration else float(
            stream.duration * stream.time_base)
        fps = float(stream.average_rate or 25)
        has_audio = bool(container.streams.audio)
        width, height, codec = stream.codec_context.width, stream.codec_context.height, stream.codec_context.name
    data = path.read_bytes()
    return Video(video_id=video_id, source="sample", uri=str(path), path=rel,
                 sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), duration_s=duration_s,
                 fps=fps, width=width, height=height, codec=codec, has_audio=has_audio)


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
