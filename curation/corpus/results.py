"""The per-video result store: one JSON file per video, the unit of resume.

A video's stages end in one `VideoResult` written atomically (temp file in the same folder, fsync,
`os.replace`), so a file is either absent or whole. Reading never raises: a damaged, half-written or
invalid file reads as absent and the video is simply redone. Files live under
`<results_dir>/<first 2 hex of sha1(video_id)>/<video_id>.json` so no folder holds more than a few
hundred files at 52k videos (the Hub and most filesystems dislike huge folders, FACTS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from curation.speech.route import TextRoute
from schemas.records import Dialogue, Quarantine, Scene, Segment, Video, check_safe_id

SUFFIX = ".json"
TMP_PREFIX = ".tmp-"  # leftovers of a crashed write start with this and are never read


class VideoResult(BaseModel):
    """Everything one video produced; `video_id` is a SafeId, or `manifest-<hash>` for a bad manifest row."""

    model_config = ConfigDict(extra="forbid")
    video_id: str
    config_fingerprint: str
    video: Video | None = None
    text_route: TextRoute | None = None  # source text, ASR or captions, and why (curation.speech.route)
    segments: list[Segment] = []
    scenes: list[Scene] = []
    dialogues: list[Dialogue] = []
    quarantine: list[Quarantine] = []
    stage_durations_s: dict[str, float] = {}  # wall time, waiting for a pool slot included
    stage_wait_s: dict[str, float] = {}  # of which waiting for a pool slot
    stage_cpu_s: dict[str, float] = {}  # CPU time of the stage's own thread
    llm_usage: dict[str, int] = {}
    counts: dict[str, int] = {}  # e.g. what the text filter caught; summed in summary.json


def result_folder_name(video_id: str) -> str:
    return hashlib.sha1(video_id.encode()).hexdigest()[:2]


def result_path(results_dir: str | Path, video_id: str) -> Path:
    """Where a video's result lives; refuses ids that could name a file outside `results_dir`."""
    check_safe_id(video_id)
    root = Path(results_dir).resolve()
    path = (root / result_folder_name(video_id) / f"{video_id}{SUFFIX}").resolve()
    if root not in path.parents:
        raise ValueError(f"result path for {video_id!r} escapes {root}")
    return path


def fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened, so best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_result(results_dir: str | Path, result: VideoResult) -> Path:
    """Write atomically: readers see the old file or the new one, never a torn one."""
    path = result_path(results_dir, result.video_id)
    _write_atomic(path, result.model_dump_json().encode(), result.video_id)
    return path


# The raw replies of failed LLM requests, one JSON file per dialogue, next to the results: a
# quarantine row names its file (`Quarantine.raw_replies`), the viewer shows it.
RAW_REPLIES_DIR = "work/llm_replies"


def write_raw_replies(corpus_root: str | Path, video_id: str, dialogue_id: str, replies: list[dict]) -> str:
    """Write one dialogue's raw replies atomically; returns the path relative to the corpus root."""
    check_safe_id(dialogue_id)
    relative = f"{RAW_REPLIES_DIR}/{result_folder_name(video_id)}/{dialogue_id}.json"
    data = json.dumps({"video_id": video_id, "dialogue_id": dialogue_id, "replies": replies},
                      ensure_ascii=False, indent=1).encode()
    _write_atomic(Path(corpus_root) / relative, data, dialogue_id)
    return relative


def _write_atomic(path: Path, data: bytes, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def parse_result(data: bytes, video_id: str) -> VideoResult | None:
    """A result file's bytes as the result of `video_id`, or None when they cannot be trusted."""
    try:
        result = VideoResult.model_validate_json(data)
    except (ValueError, ValidationError):  # truncated, not JSON, not a result
        return None
    # A file renamed by hand (or a hash-shard mix-up) must not stand in for another video.
    return result if result.video_id == video_id else None


def read_result_bytes(results_dir: str | Path, video_id: str) -> tuple[VideoResult, bytes] | None:
    """The stored result and the exact bytes it was read from (their hash names the content)."""
    try:
        data = result_path(results_dir, video_id).read_bytes()
    except (ValueError, OSError):  # unsafe id, absent, unreadable
        return None
    result = parse_result(data, video_id)
    return None if result is None else (result, data)


def read_result(results_dir: str | Path, video_id: str) -> VideoResult | None:
    """The stored result, or None when there is none or it cannot be trusted (then: redo the video)."""
    found = read_result_bytes(results_dir, video_id)
    return None if found is None else found[0]


def _stored_ids(results_dir: Path) -> list[str]:
    """Ids with a result file, sorted; names only, so listing 52k results stays cheap."""
    if not results_dir.is_dir():
        return []
    ids = []
    for shard in results_dir.iterdir():
        if not shard.is_dir():
            continue
        for entry in shard.iterdir():
            name = entry.name
            if name.endswith(SUFFIX) and not name.startswith(TMP_PREFIX):
                ids.append(name[: -len(SUFFIX)])
    return sorted(set(ids))


def stored_ids(results_dir: str | Path) -> list[str]:
    """Ids with a result file (readable or not), sorted; cheap: file names only."""
    return _stored_ids(Path(results_dir))


def iter_results(results_dir: str | Path) -> Iterator[VideoResult]:
    """Every readable result, one at a time, sorted by video id (the shards' row order)."""
    root = Path(results_dir)
    for video_id in _stored_ids(root):
        result = read_result(root, video_id)
        if result is not None:
            yield result


def finished_ids(results_dir: str | Path) -> set[str]:
    """Ids whose result file is readable (what a damaged file would be is redone, so not counted)."""
    return {r.video_id for r in iter_results(results_dir)}
