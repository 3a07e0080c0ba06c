"""The frame timeline the trainer feeds, and the one decoder that turns it into RGB arrays.

Captioning (curation.text.descriptions), the flow's frame check and the trainer (training.data.episodes) all
decode through `decode_frames`, so a frame the model trains on is the frame the captioner saw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.video.stream_time import StreamClock, stream_clock
from curation.watchdog import checkpoint

PATCH_FACTOR = 28  # Qwen2.5-VL: 14 px patches merged 2x2
MIN_PIXELS = 56 * 56  # Qwen2.5-VL image processor's floor
SEEK_AHEAD_S = 4.0
END_SLACK_S = 1.0  # farther than this to the next wanted frame: seek instead of decoding through


class FrameConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds_per_frame: float = Field(2.0, gt=0, description="FACTS.md: frames every 2 s (default) or 1 s")
    max_frames: int = Field(90, ge=1, description="FACTS.md: 90 frames at 2 s/frame, 180 at 1 s/frame")
    max_pixels: int = Field(128 * 28 * 28, ge=MIN_PIXELS, description="FACTS.md: 128 visual tokens per frame")


class FrameDecodeError(ValueError):
    pass


def frame_timeline(duration_s: float, seconds_per_frame: float = 2.0, max_frames: int = 90) -> list[float]:
    """Timestamps t = 0, spf, 2*spf, ... strictly inside the video, at most `max_frames` of them.

    The cap truncates rather than thins: a turn then still covers `seconds_per_frame` of video, as in
    training, and anything after the cap is not part of the episode.
    """
    if not duration_s > 0 or not math.isfinite(duration_s):
        return []
    count = min(max_frames, math.ceil(duration_s / seconds_per_frame - 1e-9))
    return [round(i * seconds_per_frame, 3) for i in range(count)]


def smart_resize(height: int, width: int, max_pixels: int, factor: int = PATCH_FACTOR,
                 min_pixels: int = MIN_PIXELS) -> tuple[int, int]:
    """Qwen2.5-VL's resize rule: sides multiples of `factor`, area within [min_pixels, max_pixels],
    aspect ratio kept as closely as that allows."""
    if height <= 0 or width <= 0:
        raise FrameDecodeError(f"bad frame size {width}x{height}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def iter_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream
                ) -> Iterator[av.VideoFrame]:
    """The stream's frames, with a watchdog checkpoint per packet: a run of packets that yields no
    frame still counts against the stage's budget (and a stop request ends it)."""
    for packet in container.demux(stream):
        checkpoint()
        yield from packet.decode()


class Seeker:
    """Seeks that land at or before the stream time asked for.

    A backward seek lands on the keyframe at or before its target in an indexed container (MP4,
    Matroska), but an MPEG-TS file has no index: FFmpeg bisects by timestamp and can stop on a
    packet past the keyframe, so decoding starts at the next keyframe, later than asked (1-2 s on a
    2 s GOP; seeking to the stream's start time itself can miss its first keyframe). A landing
    after the target is retried from 1, 2, 4, ... s earlier, until the target lies before the
    stream's start (where every file tried lands on the first frame); the margin that worked is
    kept for the file's next seek.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 clock: StreamClock):
        self.container, self.stream, self.clock = container, stream, clock
        self.margin_s = 0.0

    def frames_from(self, at_s: float) -> tuple[float | None, Iterator[av.VideoFrame]]:
        """(stream time of the first frame after the landing, or None if none decodes; the
        frames from there on, that one first)."""
        while True:
            target_s = at_s - self.margin_s
            self.container.seek(self.clock.pts(target_s), stream=self.stream, backward=True)
            frames = iter_frames(self.container, self.stream)
            first = next((f for f in frames if f.pts is not None), None)
            landed_s = None if first is None else self.clock.seconds(first.pts)
            if (landed_s is not None and landed_s <= at_s + 1e-6) or target_s < 0:
                return landed_s, (chain([first], frames) if first is not None else iter(()))
            self.margin_s = max(1.0, 2 * self.margin_s)


def decode_frames(path: str | Path, times_s: Sequence[float], max_pixels: int) -> list[np.ndarray]:
    """One RGB uint8 array (H, W, 3) per timestamp, in the order given, resized by `smart_resize`.

    Times are stream times (`curation.video.stream_time`: seconds from the video stream's start).
    Each timestamp gets the first frame shown at or after it (the last frame for times past the
    end, within a second of where it stops being shown). Decoding runs forward through the file and
    seeks only across long gaps, so sparse timelines over long videos stay cheap. Raises
    FrameDecodeError for an unreadable file.

    Every seek makes progress: it is made at most once per wanted time, and once a seek lands no
    later than where decoding already was (a keyframe interval longer than the gap: long-GOP web
    encodes, one-keyframe VFR files), the rest of the file is decoded forward instead. So the work
    is at most one forward pass plus a few keyframe intervals per wanted time (`Seeker`), whatever
    the file.
    """
    if not times_s:
        return []
    wanted = sorted(set(float(t) for t in times_s))
    picked: dict[float, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FrameDecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            clock = stream_clock(stream)
            seeker = Seeker(container, stream, clock)
            half_frame_s = 0.5 / float(stream.average_rate or 25)
            size, last, last_s, i = None, None, 0.0, 0
            frames = iter_frames(container, stream)
            seeked_for = -1  # index into `wanted` of the last seek's target
            seeks_help = True
            while i < len(wanted):
                frame = next(frames, None)
                if frame is None:
                    break
                if frame.pts is None:
                    continue
                size = size or smart_resize(frame.height, frame.width, max_pixels)
                last, last_s = frame, clock.seconds(frame.pts)
                while i < len(wanted) and last_s + half_frame_s >= wanted[i]:
                    picked[wanted[i]] = _rgb(frame, size)
                    i += 1
                if i < len(wanted) and wanted[i] - last_s > SEEK_AHEAD_S and seeks_help and seeked_for != i:
                    # Long gap: jump to the keyframe before the next wanted time.
                    seeked_for = i
                    landed_s, frames = seeker.frames_from(wanted[i])
                    seeks_help = landed_s is not None and landed_s > last_s
            if last is None:
                raise FrameDecodeError(f"{path}: no decodable video frame")
            # The last frame is shown for its own duration (a held final frame can last seconds).
            shown_until_s = last_s + max(0.0, float((last.duration or 0) * (last.time_base or 0)))
            for t in wanted[i:]:
                # A timestamp just past the last frame gets it; one far past means a cut-short file.
                if t > shown_until_s + END_SLACK_S:
                    raise FrameDecodeError(f"{path}: frames end at {last_s:.2f} s, {t:.2f} s wanted "
                                           "(truncated or damaged file?)")
                picked[t] = _rgb(last, size)
    except FrameDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError, MemoryError) as error:
        raise FrameDecodeError(f"{path}: {type(error).__name__}: {error}") from None
    return [picked[float(t)] for t in times_s]


def _rgb(frame, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return frame.to_ndarray(format="rgb24", width=w, height=h)
