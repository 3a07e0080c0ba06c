"""Frames decoded again from a video's packets kept in memory, with no second read of the file.

One demux pass keeps the compressed packets (`PacketLog`, a fraction of the decoded size). Any
frame can then be decoded later by a fresh decoder that starts at the keyframe before it and
decodes only reference frames (FFmpeg's own `skip_frame="NONREF"`) until the frames wanted.
Reference frames do not depend on the frames skipped, and H.264/HEVC decoding is exact, so a frame
decoded this way is bit-identical to the one a full decode of the file gives.

`ref_change` is the cheap scan's test: ContentDetector's frame score (mean of |dH|, |dS|, |dV|
with its default weights) between two neighbouring reference frames.

`decode_anchors` is the "gops" scan's look inside one GOP: its I and P frames only, with the
deblocking filter skipped (`skip_loop_filter`, about 13% of the decode). Those frames need not be
bit-exact, which is why they only choose candidates; the detector is fed exact frames (`decode_at`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import av
import cv2
import numpy as np


class PacketLog:
    """The video stream's packets in decode order, up to `max_bytes`; `usable` says whether every
    packet so far is kept and has a timestamp (a frame is then found by its pts)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.packets: list[av.Packet] = []
        self.bytes = 0
        self.usable = True
        self._order: list[int] | None = None

    def add(self, packet: av.Packet) -> None:
        if not self.usable or packet.size == 0:
            return
        if packet.pts is None or self.bytes + packet.size > self.max_bytes:
            self.usable, self.packets, self.bytes = False, [], 0  # frees the memory at once
            return
        self.packets.append(packet)
        self.bytes += packet.size
        self._order = None

    def display_pts(self) -> list[int]:
        """Every frame's pts in presentation order."""
        if self._order is None:
            self._order = sorted({p.pts for p in self.packets})
        return self._order


def decode_at(log: PacketLog, stream: av.video.stream.VideoStream, wanted_pts: Iterable[int],
              reuse_stream_decoder: bool = False) -> dict[int, av.VideoFrame]:
    """The frames with these pts, decoded from the logged packets; a frame that does not decode
    (damaged packet, unknown pts) is simply absent.

    `reuse_stream_decoder`: decode with the stream's own (single-threaded, idle) decoder, flushed
    before each run, instead of a fresh one. Its frames carry what the container adds to the
    codec parameters (a WebM's chroma siting, which a fresh decoder does not know and which
    changes swscale's output), so they convert exactly as `decode_frames`' and the scan's do."""
    index = {p.pts: i for i, p in enumerate(log.packets)}
    keys = [i for i, p in enumerate(log.packets) if p.is_keyframe]
    wanted = {pts for pts in wanted_pts if pts in index}
    if not wanted or not keys:
        return {}
    # Group by the keyframe each wanted frame is decoded from. A leading frame of an open GOP
    # (shown before its keyframe) references the GOP before, so it starts one keyframe earlier.
    runs: dict[int, int] = {}  # keyframe index -> last packet index to feed
    for pts in wanted:
        at = index[pts]
        k = bisect.bisect_right(keys, at) - 1
        if k < 0:
            continue  # before the first keyframe: nothing to decode it from
        if k > 0 and pts < log.packets[keys[k]].pts:
            k -= 1
        runs[keys[k]] = max(runs.get(keys[k], -1), at)
    out: dict[int, av.VideoFrame] = {}
    for start, stop in sorted(runs.items()):
        out.update(_decode_run(log.packets[start:stop + 1], stream, wanted, reuse_stream_decoder))
    return out


def _decode_run(packets: list[av.Packet], stream, wanted: set[int], reuse: bool) -> dict[int, av.VideoFrame]:
    # A single-threaded decoder with no state per run: skip_frame then applies to exactly the
    # packet sent next (frame threads would read it late), and an IDR keyframe needs no earlier state.
    if reuse:
        ctx = stream.codec_context
        if ctx.is_open:
            ctx.flush_buffers()
    else:
        ctx = av.CodecContext.create(stream.codec_context.name, "r")
        ctx.extradata = stream.codec_context.extradata
    if not ctx.is_open:
        ctx.thread_count = 1
    out: dict[int, av.VideoFrame] = {}
    try:
        for packet in packets:
            ctx.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
            out.update((f.pts, f) for f in ctx.decode(packet) if f.pts in wanted)
        out.update((f.pts, f) for f in ctx.decode(None) if f.pts in wanted)
    except (av.error.FFmpegError, ValueError):
        pass  # what decoded before the damage is kept; the rest is reported absent
    return out


def decode_keyframe(packet: av.Packet, stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    """One keyframe decoded on its own (a fresh decoder, drained at once), deblocking skipped."""
    frames, _ = decode_anchors([packet], stream, "NONKEY")
    return frames[0] if frames else None


def decode_anchors(packets: list[av.Packet], stream: av.video.stream.VideoStream, skip_frame: str = "BIDIR"
                   ) -> tuple[list[av.VideoFrame], list[int]]:
    """The I and P frames these packets (a keyframe first) decode to, deblocking skipped, and the
    pts of the packets the decoder took without an error (a damaged one loses its own frame, as in
    the scan's own decode)."""
    ctx = av.CodecContext.create(stream.codec_context.name, "r")
    ctx.extradata = stream.codec_context.extradata
    ctx.thread_count = 1
    # The detector looks at a 256-px copy: deblocking changes it by ~0.1 of 255 per channel, far
    # below any threshold these frames are tested against.
    ctx.options = {"skip_loop_filter": "all"}
    # "BIDIR": all B-frames, the reference ones of a B-pyramid too: I/P frames are ~1/3 of an x264
    # stream and P-frames there reference only I/P frames (bit-exact on the bench clips). Where a
    # P-frame does reference a skipped B-frame, FFmpeg conceals the missing block from another
    # reference; a cut still shows, as the blocks of a new shot are mostly intra-coded.
    ctx.skip_frame = skip_frame
    out: list[av.VideoFrame] = []
    taken: list[int] = []
    for packet in [*packets, None]:
        try:
            out += ctx.decode(packet)
        except (av.error.FFmpegError, ValueError):
            continue
        if packet is not None:
            taken.append(packet.pts)
    return out, taken


def hsv(image_bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)


def ref_change(a_hsv: np.ndarray, b_hsv: np.ndarray) -> float:
    """ContentDetector's frame score between two frames, default weights, no edges: the mean of
    |dH|, |dS|, |dV| (cv2 on uint8 gives the exact |a - b| at a fraction of numpy's int16 cost)."""
    return sum(cv2.mean(cv2.absdiff(a_hsv, b_hsv))[:3]) / 3
