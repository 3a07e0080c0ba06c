"""Stream time: the one definition of when a frame is, for every stage that picks or checks frames.

A video's time 0 is its video stream's start: a frame at presentation timestamp `pts` is at
`(pts - start_pts) x time_base` seconds (`StreamClock.seconds`). Scene times, the trainer's frame
timeline, caption frame times and the exported frame folders all count from there, so a file
whose timestamps start elsewhere (an MPEG-TS recording starting at 10 hours, a Matroska file cut
from a longer one, an MP4 whose edit list delays or trims its video) is timed like the same
pictures starting at 0. What FFmpeg (libavformat) already does, and this builds on:

- MPEG-TS timestamps are 33 bits at 90 kHz and wrap every ~26.5 hours. libavformat unwraps them
  as it demuxes and seeks: a file whose first timestamp lies shortly before the wrap starts at a
  negative time, one that wraps further in counts on past 2^33; either way the timestamps keep
  rising, and the start subtracted here makes the first frame 0 (tests/test_stream_time.py).
- MP4 edit lists are applied by the demuxer: an initial empty edit (video delayed behind the
  movie's start, e.g. `-itsoffset` or `-output_ts_offset` in MP4) shows as the stream's start; a
  trimmed start (`-ss` with stream copy) gives the kept frames pts from 0 and the ones before it a
  discard flag, and decoders drop those. A player shows the movie timeline (the delayed video's
  first frame at its delay); our 0 is that first frame.
- A stream's start is libavformat's `start_time` (its first presentation timestamp after edit
  lists and wrap correction), the container's earliest start when the stream has none, else 0.

An audio track that starts before or after the picture does not move time 0: it is the video's.
Audio times (the ASR stage) are put on the same clock by adding `start_on_video_clock_s` of
the audio stream to times counted from the audio's first sample; speech before the first frame
then has a negative time.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

# Demuxers whose stated duration counts from the file's own 0, not from its first timestamp
# (Matroska's Segment Duration, NUT's header): libavformat's estimate for every other container
# runs from the earliest stream's start.
DURATION_FROM_ZERO = ("matroska", "webm", "nut")


@dataclass(frozen=True)
class StreamClock:
    """Seconds of stream time for a stream's timestamps, and back."""

    time_base: Fraction
    start_pts: int

    def seconds(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.time_base)

    def pts(self, seconds: float) -> int:
        return self.start_pts + round(Fraction(seconds) / self.time_base)

    @property
    def start_s(self) -> float:
        """Where the stream starts on the container's own timeline (libavformat seconds)."""
        return float(self.start_pts * self.time_base)


def stream_clock(stream: av.stream.Stream) -> StreamClock:
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, av.time_base)
    if stream.start_time is not None:
        start = int(stream.start_time)
    else:
        container_start = getattr(stream.container, "start_time", None)
        start = round(Fraction(container_start, av.time_base) / time_base) if container_start is not None else 0
    return StreamClock(time_base, start)


def start_on_video_clock_s(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """Where `stream` (an audio track, say) starts in the video's stream time: add it to a time
    counted from that stream's first sample to get the time of the same instant in the video.
    Negative when the stream starts before the video's first frame."""
    return stream_clock(stream).start_s - stream_clock(container.streams.video[0]).start_s


def player_start_s(path: str | Path) -> float:
    """What an HTML5 player's clock reads at time 0 here (the video's first frame): the video's
    start on the container's own timeline, which Chromium keeps (an MP4 whose edit list delays the
    video by 3 s shows its first frame at 3 s, a WebM starting at 7 s at 7 s). 0 for a file that
    does not open or has no video: such a player shows nothing to be off from."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return stream_clock(container.streams.video[0]).start_s if container.streams.video else 0.0
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return 0.0


def video_duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream
                     ) -> float | None:
    """The video stream's length in stream time: its own duration when the container records it,
    else where the container says its streams end, less the video's start.

    The container's end is its longest stream's: an audio track that runs on past the picture
    would otherwise read as missing (truncated) video. A Matroska track's DURATION tag is not read
    instead: it is written with the segment's, and a header that claims more than the file holds
    is for the probe's truncation check to catch.
    """
    clock = stream_clock(stream)
    own = float(stream.duration * clock.time_base) if stream.duration is not None else None
    if own is not None and own > 0:
        return own
    end_s = _stated_end_s(container)
    return own if end_s is None else max(0.0, end_s - clock.start_s)


def _stated_end_s(container: av.container.InputContainer) -> float | None:
    if container.duration is None:
        return None
    from_zero = any(name in (container.format.name or "").split(",") for name in DURATION_FROM_ZERO)
    start = 0 if from_zero or container.start_time is None else container.start_time
    return (start + container.duration) / av.time_base
