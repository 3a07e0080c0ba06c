"""The frame cache: each video's timeline frames at the trainer's pixel budget, decoded once.

Issue 17: decoding was 89% of the loader's time (3.97 s per episode on a 93 s 720p clip). The
MMDuet2 release trains from pre-extracted JPEG folders; this is the same idea made exact and keyed:

- Layout: `<corpus>/cache/frames/<key>/<xx>/<video_id>.npy`, `xx` = the first two hex digits of
  sha256(video_id) (at most ~200 files per folder at 52k videos). One uint8 array (N, H, W, 3) per
  video: frame i is the frame `decode_frames` picks at time i x seconds_per_frame. Every timeline
  is a prefix of 0, spf, 2 spf, ... (`frame_timeline`), so one file serves every dialogue of the
  video, whatever its duration; an episode wanting a frame past N is a miss and is decoded.
- Key: `spf<s>-cap<n>-px<p>-<decoder>`: the interval, the frame cap, the pixel budget and
  `DECODER_VERSION`; a change of any of them names another folder, so it is rebuilt, never mixed.
- Lossless (.npy, read through a memory map): training from the cache gives the very arrays
  decoding gives, so the encoded episodes are identical (tests/test_lazy_loader.py). The price is
  disk: H x W x 3 bytes per frame, ~301 KB at the default 128 tokens (100,352 px), so 27 MB for a
  90-frame (180 s) video, ~9 MB for a 60 s clip at 2 s per frame. JPEG (the release's choice, ~10x
  smaller) would make training differ from decoding; it is not offered.
- Written atomically (tmp + rename); `prepare` skips a video whose file is already there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

DECODER_VERSION = "d2"  # bump when decode_frames picks or resizes differently (d2: stream time)
CACHE_DIR = Path("cache") / "frames"
TMP_PREFIX = ".tmp-"


def cache_key(seconds_per_frame: float, frame_cap: int, max_pixels: int) -> str:
    return f"spf{seconds_per_frame:g}-cap{frame_cap}-px{max_pixels}-{DECODER_VERSION}"


class FrameCache:
    """One key's folder of a corpus's frame cache."""

    def __init__(self, corpus_root: str | Path, seconds_per_frame: float, frame_cap: int, max_pixels: int):
        self.seconds_per_frame = seconds_per_frame
        self.frame_cap = frame_cap
        self.max_pixels = max_pixels
        self.folder = Path(corpus_root) / CACHE_DIR / cache_key(seconds_per_frame, frame_cap, max_pixels)

    def exists(self) -> bool:
        return self.folder.is_dir()

    def path_of(self, video_id: str) -> Path:
        bucket = hashlib.sha256(video_id.encode()).hexdigest()[:2]
        return self.folder / bucket / f"{video_id}.npy"

    def _stored(self, video_id: str) -> np.ndarray | None:
        """The video's frames as a memory map, None when absent, unreadable or not what `write`
        stores ((N, H, W, 3) uint8): the cache is read as untrusted as any other file."""
        try:
            stored = np.load(self.path_of(video_id), mmap_mode="r")
        except (OSError, ValueError):
            return None
        if stored.dtype != np.uint8 or stored.ndim != 4 or stored.shape[3] != 3:
            return None
        return stored

    def frame_count(self, video_id: str) -> int | None:
        """Frames stored for the video (from the .npy header only), None when there is no usable file."""
        stored = self._stored(video_id)
        return None if stored is None else int(stored.shape[0])

    def load(self, video_id: str, times_s: list[float]) -> list[np.ndarray] | None:
        """The frames at `times_s` (each on the timeline), or None on a miss: no file, a damaged
        one, or a time past the stored frames or off the timeline. The caller then decodes."""
        stored = self._stored(video_id)
        if stored is None:
            return None
        picks = []
        for t in times_s:
            i = round(t / self.seconds_per_frame)
            if abs(i * self.seconds_per_frame - t) > 1e-3 or not 0 <= i < stored.shape[0]:
                return None
            picks.append(i)
        return [np.array(stored[i]) for i in picks]  # copies: the memory map is closed with `stored`

    def write(self, video_id: str, frames: list[np.ndarray]) -> Path:
        """The video's timeline frames, atomically: a reader sees the whole file or none."""
        path = self.path_of(video_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
        try:
            with open(tmp, "wb") as f:
                np.save(f, np.stack(frames).astype(np.uint8, copy=False))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def find_cache(corpus_root: str | Path, mode: str, seconds_per_frame: float, frame_cap: int,
               max_pixels: int) -> FrameCache | None:
    """The corpus's cache for this run's key when `mode` is "auto" and it was prepared, else None
    (the trainer then decodes; a partly prepared cache serves what it has)."""
    cache = FrameCache(corpus_root, seconds_per_frame, frame_cap, max_pixels)
    return cache if mode == "auto" and cache.exists() else None

