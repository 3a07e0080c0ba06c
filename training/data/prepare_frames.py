"""Filling the frame cache (training.data.frame_cache): every video with a dialogue in the chosen
splits, decoded once by the one frame decoder at the cache's key, in a pool of processes.

`python -m training.run prepare` drives it. Every video is untrusted input: a missing or
undecodable one is a `Skip` counted by reason, never a crash, and gets no file (the trainer then
skips it as it always did). Resumable: a video whose file holds enough frames is not decoded again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curation.skips import Skip
from training.data.frame_cache import FrameCache
from training.data.lazy_split import LazySplit, VideoPaths

STAGE = "frame_cache"


@dataclass
class PrepareCounts:
    written: int = 0
    present: int = 0  # already cached with enough frames: a re-run does nothing for them
    skipped: dict[str, int] = field(default_factory=dict)

    def add_skip(self, skip: Skip) -> None:
        self.skipped[skip.reason] = self.skipped.get(skip.reason, 0) + 1


def videos_to_cache(corpus_root: str | Path, splits: list[str]) -> list[tuple[str, float]]:
    """(video_id, longest dialogue duration) of every video with a dialogue in `splits`, sorted;
    read from the `video_id` and `duration_s` columns alone (no dialogue is built)."""
    import pyarrow as pa

    parts = []
    for split in splits:
        lazy = LazySplit(corpus_root, split)
        if len(lazy):
            parts.append(pa.table({"video_id": lazy.column("video_id"), "duration_s": lazy.column("duration_s")}))
    if not parts:
        return []
    longest = pa.concat_tables(parts).group_by("video_id").aggregate([("duration_s", "max")])
    return sorted(zip(longest.column("video_id").to_pylist(), longest.column("duration_s_max").to_pylist(), strict=True))


def cache_one(cache: FrameCache, video_id: str, video_path: Path | None, duration_s: float) -> str | Skip:
    """Decode and write one video's timeline: "written", "present", or a Skip (never raises on
    a bad file: every video is untrusted input)."""
    from curation.video.frames import decode_frames, frame_timeline

    times = frame_timeline(duration_s, cache.seconds_per_frame, cache.frame_cap)
    if (cache.frame_count(video_id) or 0) >= len(times):
        return "present"
    if video_path is None or not video_path.is_file():
        return Skip(STAGE, "video_missing", f"{video_id}: no video file")
    try:
        frames = decode_frames(video_path, times, cache.max_pixels)
    except Exception as error:  # any decoder failure on an untrusted file is a counted skip
        return Skip(STAGE, "video_undecodable", f"{video_id}: {type(error).__name__}: {error}")
    if len(frames) != len(times) or not frames:
        return Skip(STAGE, "frames_missing", f"{video_id}: decoded {len(frames)} of {len(times)} frames")
    cache.write(video_id, frames)
    return "written"


def _cache_task(args) -> str | Skip:
    return cache_one(*args)


def prepare_cache(corpus_root: str | Path, splits: list[str], cache: FrameCache, workers: int = 1,
                  progress: bool = True) -> PrepareCounts:
    """Fill `cache` for every video of `splits`; resumable (cached videos are not decoded again)."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    videos = VideoPaths(Path(corpus_root))
    tasks = [(cache, vid, None if (rel := videos.get(vid)) is None else Path(corpus_root) / rel, dur)
             for vid, dur in videos_to_cache(corpus_root, splits)]
    counts = PrepareCounts()
    bar = tqdm(total=len(tasks), desc="frame cache", unit="video", disable=not progress, dynamic_ncols=True)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_cache_task, tasks, chunksize=4)
            for result in results:
                _count(counts, result)
                bar.update(1)
    else:
        for task in tasks:
            _count(counts, _cache_task(task))
            bar.update(1)
    bar.close()
    return counts


def _count(counts: PrepareCounts, result: str | Skip) -> None:
    if isinstance(result, Skip):
        counts.add_skip(result)
    elif result == "written":
        counts.written += 1
    else:
        counts.present += 1
