"""One decode per video: scene cuts, the frame-timeline check and caption frames from one pass.

The file is opened and demuxed once, forward, with no seek. While the decoder feeds the scene
detector (downscaled frames), the compressed packets are kept in memory (`scan.PacketLog`). Once
the cuts are known, the frames the later stages want (the timeline's first and last frame for the
frames check; each scene's caption frames) are decoded from those packets by `scan.decode_at`,
so no stage opens the file again. The frames and scenes are the ones the separate stages give
(`scenes.detect_scenes`, `frames.decode_frames`): same decoder, same pick rule, same resize.

Scans (`SceneConfig.scan`):
- "full": every frame goes through the detector, as `detect_scenes` does.
- "refs": the decoder skips non-reference frames (`skip_frame="NONREF"`, about half of an H.264
  stream with B-frames); two neighbouring reference frames whose ContentDetector score reaches
  `ref_change` mark a candidate, and only the frames around candidates are decoded fully (from the
  packets) and fed to a detector. A cut needs a frame score of at least `adaptive_min_content_val`
  between two frames of different shots, and the reference frames on either side of it belong
  to those shots, so their score is about as high; a cut and cut-back between two reference
  frames (at most a few frames apart) is missed, as the full scan's minimum scene length would
  drop one of the pair anyway. Checked against "full" in tests/test_single_pass.py and bench/.
- "gops" (the default): the decoder decodes keyframes only (`skip_frame="NONKEY"`, ~5% of the
  decode). A GOP whose two keyframes differ by `keyframe_change` or more, and the last GOP, is
  then decoded from the packets through its I and P frames only, deblocking skipped
  (`scan.decode_anchors`), and neighbouring ones that differ by `ref_change` mark candidates, as
  in "refs"; the frames around candidates are decoded exactly from the packets and fed to a
  detector. Frames shown before the first keyframe that decodes (an MP4 edit list that starts
  inside a GOP, whose keyframe the decoder discards) are a candidate of their own. A calm GOP
  (testsrc2-like, a talking head, a slide) costs one keyframe decode. What
  it would miss beyond "refs": a cut inside a GOP whose two shots drift from their keyframes by
  more than `ref_change - keyframe_change` together (11 score points within one GOP).
  Exact frames are decoded by the stream's own decoder once the file is read (`decode_at`'s
  `reuse_stream_decoder`): a fresh decoder lacks what the container adds to the codec
  parameters (a WebM's chroma siting), and swscale's output depends on it. "refs" decodes its
  stretches mid-scan with fresh decoders, so on such a container its scores can differ slightly.
- "keyframes": the opt-in scan of `scenes.py`; it reads the file itself, and the frames are then
  decoded from the packets as above.

A log that outgrows `max_packet_bytes` (or a stream without timestamps) is dropped; the pass then
falls back to the separate decoders (`decoded.decodes` counts the file reads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from curation.skips import Skip
from curation.video import scenes as scene_stage
from curation.video.frames import (
    END_SLACK_S,
    FrameConfig,
    FrameDecodeError,
    decode_frames,
    frame_timeline,
    smart_resize,
)
from curation.video.scan import (
    PacketLog,
    decode_anchors,
    decode_at,
    decode_keyframe,
    hsv,
    ref_change,
)
from curation.video.scenes import SceneConfig, build_scenes, make_detector, scaled_size
from curation.video.stream_time import StreamClock, video_duration_s
from curation.watchdog import checkpoint
from schemas.records import Scene

STAGE = scene_stage.STAGE
FRAMES_STAGE = "frames"
CHECK_MAX_PIXELS = 28 * 28 * 4  # the frames check only proves decodability: smallest useful size
MAX_PACKET_BYTES = 1 << 30  # our choice: a 10-minute 720p web video is 100-300 MB of packets
DEADLINE_EVERY = 64  # packets between deadline checks
# The "gops" scan's candidate test compares I/P frames at most this many frames apart: x264's
# default runs of up to 3 B-frames (our choice; wider pairs are decoded exactly, see _scan_gop).
ANCHOR_GAP_FRAMES = 4

# scene list -> {key: frame times}: the caption frames wanted once the scenes are known.
TimesForScenes = Callable[[list[Scene]], dict[int, list[float]]]


@dataclass
class DecodedVideo:
    scenes: list[Scene]
    timeline: list[float] | Skip  # the frames stage's answer: the trainer's timeline, or why not
    captions: dict[int, tuple[list[float], list[np.ndarray]] | str] | None  # None: not asked
    decodes: int = 1  # times the file was read to decode; 1 unless a fallback ran
    frames_decoded: int = 0  # by the scan
    frames_redecoded: int = 0  # from the packets: candidates, checks, captions
    timings_s: dict[str, float] = field(default_factory=dict)


class _Deadline(Exception):
    pass


def decode_video(path: str | Path, video_id: str, duration_s: float | None, scene_cfg: SceneConfig | None = None,
                 frame_cfg: FrameConfig | None = None, caption_times: TimesForScenes | None = None,
                 caption_max_pixels: int = 448 * 448, *, threads: int = 1,
                 max_packet_bytes: int = MAX_PACKET_BYTES, deadline: float | None = None) -> DecodedVideo | Skip:
    """Scenes (as `detect_scenes`), the frames check (as the flow's) and, when `caption_times` is
    given, each scene's caption frames (as `decode_scene_frames`), from one read of the file.

    `threads`: decoder threads for the scan (1: the pipeline runs videos side by side, and frame
    threads cost CPU); `deadline`: a `time.monotonic()` value after which the pass stops with a Skip.
    """
    path = Path(path)
    cfg = scene_cfg or SceneConfig()
    frame_cfg = frame_cfg or FrameConfig()
    opened = scene_stage._open(path)
    if isinstance(opened, Skip):
        return opened
    started = time.perf_counter()
    with opened as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            return Skip(STAGE, "no_video_stream", f"{path.name} has streams: {', '.join(kinds)}")
        stream = container.streams.video[0]
        # "gops" decodes with single-threaded decoders of its own and the stream's, fed packet by packet.
        threads = 1 if cfg.scan == "gops" else threads
        if threads != 1:
            stream.thread_type = "AUTO"
        stream.thread_count = max(0, threads)
        clock = scene_stage.detector_clock(stream)
        stated_s = video_duration_s(container, stream)  # the video stream's own, as the scene pass reads it
        log = PacketLog(max_packet_bytes)
        scan = _Scan(cfg, clock)
        try:
            scan.run(container, stream, log, deadline)
            cuts = scan.cuts(log, stream, path)
            if isinstance(cuts, Skip):
                return cuts
        except _Deadline:
            return Skip(STAGE, "deadline", f"{path.name}: the decode ran past its deadline")
        except (av.error.FFmpegError, ValueError, MemoryError) as error:
            return Skip(STAGE, "undecodable", f"{path.name}: {type(error).__name__}: {error}")
        if scan.last_pts is None:
            return Skip(STAGE, "undecodable", f"{path.name}: no frame decodes")
        decoded_s = clock.seconds(scan.last_pts) + float(1 / clock.rate)
        if stated_s is not None and decoded_s < stated_s - scene_stage.TRUNCATION_TOLERANCE_S:
            return Skip(STAGE, "truncated", f"{path.name}: frames stop at {decoded_s:.2f} s of a stated {stated_s:.2f} s")
        end_s = duration_s if duration_s is not None else (stated_s if stated_s is not None else decoded_s)
        if not end_s > 0:
            return Skip(STAGE, "zero_duration", f"{path.name}: duration {end_s} s")
        seconds = [(clock.seconds(pts), score) for pts, score in sorted(set(cuts))]
        scenes = build_scenes(video_id, seconds, end_s, cfg)
        scanned_s = time.perf_counter() - started
        out = DecodedVideo(scenes, [], None, decodes=scan.decodes, frames_decoded=scan.frames,
                           frames_redecoded=scan.redecoded, timings_s={"scan": scanned_s})
        times = frame_timeline(end_s, frame_cfg.seconds_per_frame, frame_cfg.max_frames)
        wanted = {"check": [times[0], times[-1]]} if times else {}
        captions = caption_times(scenes) if caption_times is not None else {}
        if log.usable:
            picker = _Picker(log, stream, clock, scan.first_size, reuse_stream_decoder=threads == 1)
            check = picker.frames(wanted.get("check", []), CHECK_MAX_PIXELS)
            frames = {sid: picker.frames(ts, caption_max_pixels) for sid, ts in captions.items()}
            out.frames_redecoded += picker.decoded
        else:  # the packets were not kept: read the file again, as the separate stages do
            out.decodes += 1
            check = _read_frames(path, wanted.get("check", []), CHECK_MAX_PIXELS)
            frames = {sid: _read_frames(path, ts, caption_max_pixels) for sid, ts in captions.items()}
    if not times:
        out.timeline = Skip(FRAMES_STAGE, "no_frames", f"no frame timestamps for a {end_s:g} s video")
    elif isinstance(check, str):
        out.timeline = Skip(FRAMES_STAGE, "undecodable_frames", check)
    else:
        out.timeline = times
    if caption_times is not None:
        out.captions = {sid: (captions[sid], got) if not isinstance(got, str) else "undecodable_frames"
                        for sid, got in frames.items()}
    out.timings_s["frames"] = time.perf_counter() - started - scanned_s
    return out


def _read_frames(path: Path, times_s: list[float], max_pixels: int) -> list[np.ndarray] | str:
    try:
        return decode_frames(path, times_s, max_pixels)
    except FrameDecodeError as error:
        return f"FrameDecodeError: {error}"


class _Scan:
    """The forward pass: logs packets, decodes, and either feeds the detector every frame ("full")
    or collects candidates and runs a detector over the frames around each ("refs", "gops"); `cuts()` then
    gives the cuts as (pts, score)."""

    RING_FRAMES = 512  # downscaled frames kept for candidate stretches (~2 GOPs; 256 px: ~55 MB at most)

    def __init__(self, cfg: SceneConfig, clock: scene_stage._Clock):
        self.cfg, self.clock = cfg, clock
        self.mode = cfg.scan
        if self.mode in ("refs", "gops") and cfg.detector != "adaptive":
            self.mode = "full"  # the candidate margins below are AdaptiveDetector's window
        self.detector = make_detector(cfg) if self.mode == "full" else None
        self.margin = cfg.adaptive_window_width + 2  # frames a cut's score and window reach back/forward
        self.found: list[scene_stage.Cut] = []
        self.candidates: list[tuple[int, int]] = []  # (pts, pts) of two neighbouring decoded frames
        self.last_pts: int | None = None
        self.first_size: tuple[int, int] | None = None  # (height, width) of the first frame
        self.frames = self.redecoded = 0
        self.decodes = 1
        self._size: tuple[int, int] | None = None
        self._reformatter = VideoReformatter()  # one per video: it keeps its swscale context
        self._previous: tuple[int, np.ndarray] | None = None
        self._recent: dict[int, float | None] = {}
        self._ring: dict[int, np.ndarray] = {}
        self._candidates_in_gop = 0
        self._key: tuple[int, int, np.ndarray] | None = None  # "gops": (pts, packet index, HSV) of the last keyframe
        self.gops_scanned = self.gops_skipped = 0
        self._last_decodable_pts: int | None = None
        self._unkeyed = False  # "gops" found no keyframe it could start a GOP from
        self._first_key_pts: int | None = None  # "gops": the first keyframe that decoded

    def run(self, container, stream, log: PacketLog, deadline: float | None) -> None:
        if self.mode == "gops":
            return self._run_gops(container, stream, log, deadline)
        codec = stream.codec_context
        if self.mode != "full":
            # "keyframes": only the first frame's size and the last pts are needed from this pass.
            codec.skip_frame = "NONREF" if self.mode == "refs" else "NONKEY"
        for n, packet in enumerate(container.demux(stream)):
            checkpoint()  # the stage's watchdog budget and the run's stop flag (curation.watchdog)
            if deadline is not None and n % DEADLINE_EVERY == 0 and time.monotonic() > deadline:
                raise _Deadline
            log.add(packet)
            if self.mode == "keyframes" and packet.size and packet.pts is not None:
                self.last_pts = max(self.last_pts or packet.pts, packet.pts)
            if self.mode == "refs" and packet.is_keyframe:
                # Motion that crossed `ref_change` in the last GOP tends to go on: decode this GOP
                # fully, so that its candidates need no second decode (exact either way: a GOP
                # starts afresh at its keyframe). Needs the single-threaded decoder's per-packet reading.
                codec.skip_frame = "DEFAULT" if self._candidates_in_gop else "NONREF"
                self._candidates_in_gop = 0
                if log.usable:
                    self._run_stretches(log, stream, final=False)
            for frame in _decode(packet):
                if self.first_size is None:
                    self.first_size = (frame.height, frame.width)
                    self._size = scaled_size(frame.width, frame.height, self.cfg.downscale_width)
                self.frames += 1
                if self.mode == "keyframes":
                    continue
                pts = frame.pts if frame.pts is not None else self.frames - 1
                self.last_pts = pts
                self._take(pts, self._small(frame))
        if self.mode == "full" and self.last_pts is not None:
            self.found += [(tc.pts + self.clock.start_pts, None)
                           for tc in self.detector.post_process(self.clock.timecode(self.last_pts))]
        if self.mode == "refs" and log.usable:
            self._run_stretches(log, stream, final=True)

    def _run_gops(self, container, stream, log: PacketLog, deadline: float | None) -> None:
        """Keyframes only on the way through; a GOP whose two keyframes differ by `keyframe_change`
        or more (or the last one) is then looked into by `_scan_gop` from the logged packets."""
        for n, packet in enumerate(container.demux(stream)):
            checkpoint()
            if deadline is not None and n % DEADLINE_EVERY == 0 and time.monotonic() > deadline:
                raise _Deadline
            log.add(packet)
            if packet.pts is not None and packet.size:
                self.last_pts = max(self.last_pts or packet.pts, packet.pts)
            if packet.is_keyframe and log.usable and log.packets and log.packets[-1] is packet:
                self._keyframe(packet, len(log.packets) - 1, log, stream)
        if not log.usable or self._key is None:
            # cuts() reads the file again with the full scan, which says why nothing decodes, if so.
            self._unkeyed = self._key is None
            return
        self._scan_gop(log, stream, self._key, None)
        self.last_pts = self._last_decodable_pts
        # Frames shown before the first keyframe that decodes (an MP4 edit list that starts inside a
        # GOP, whose keyframe the decoder discards) belong to no GOP: decoded exactly and looked at.
        shown = [pts for pts in log.display_pts() if pts >= self.clock.start_pts]
        if shown and shown[0] < self._first_key_pts:
            self.candidates.append((shown[0], self._first_key_pts))
        self._run_stretches(log, stream, final=True)

    def _keyframe(self, packet: av.Packet, at: int, log: PacketLog, stream) -> None:
        # Decoded on its own (`decode_keyframe`), not by the stream's decoder with skip_frame=NONKEY:
        # that one holds keyframes of an open-GOP stream back, and lets some out of order or never.
        frame = decode_keyframe(packet, stream)
        if frame is None or frame.pts is None:
            return  # a damaged keyframe: its GOP joins the one before
        if self.first_size is None:
            self.first_size = (frame.height, frame.width)
            self._size = scaled_size(frame.width, frame.height, self.cfg.downscale_width)
        self.frames += 1
        key = (frame.pts, at, hsv(self._small(frame)))
        self._first_key_pts = frame.pts if self._first_key_pts is None else self._first_key_pts
        if self._key is not None and ref_change(self._key[2], key[2]) >= self.cfg.keyframe_change:
            self._scan_gop(log, stream, self._key, key)
        elif self._key is not None:
            self.gops_skipped += 1
        self._key = key

    def _scan_gop(self, log: PacketLog, stream, start, stop) -> None:
        """Candidates between neighbouring I/P frames of one GOP (`start` to `stop`, two keyframes;
        `stop` None: to the end), tested as in "refs" on inexact frames (`decode_anchors`); the
        frames around them are decoded exactly later. The test holds for frames a few apart: two
        further apart than ANCHOR_GAP_FRAMES (B-frame runs of another encoder) are first looked
        for among all reference frames, and are a candidate, whatever they score, if still apart."""
        self.gops_scanned += 1
        end = stop[1] if stop is not None else len(log.packets)
        gap_pts = ANCHOR_GAP_FRAMES / (self.clock.rate * self.clock.time_base)
        last_pts = stop[0] if stop is not None else log.display_pts()[-1]
        for skip in ("BIDIR", "NONREF"):
            # A GOP of one frame (an intra-only stream) has nothing between its keyframes.
            frames, taken = decode_anchors(log.packets[start[1]:end], stream, skip) if end - start[1] > 1 else ([], [])
            self.frames += len(frames)
            # A leading frame of an open GOP (shown before its keyframe) needs the GOP before: left
            # out; a candidate pair then simply spans it.
            shown = sorted({f.pts for f in frames if f.pts is not None and start[0] < f.pts < last_pts})
            edges = [start[0], *shown, last_pts]
            if all(b - a <= gap_pts for a, b in zip(edges, edges[1:], strict=False)):
                break
        images = {f.pts: f for f in frames}

        def test_pair(a: tuple[int, np.ndarray], b: tuple[int, np.ndarray]) -> None:
            if b[0] - a[0] > gap_pts or ref_change(a[1], b[1]) >= self.cfg.ref_change:
                self.candidates.append((a[0], b[0]))

        previous = (start[0], start[2])
        for pts in shown:
            checkpoint()
            current = (pts, hsv(self._small(images[pts])))
            test_pair(previous, current)
            previous = current
        if stop is not None:
            test_pair(previous, (stop[0], stop[2]))
        else:
            # No frame closes the last GOP: its tail is always decoded exactly and looked at.
            if last_pts > previous[0]:
                self.candidates.append((previous[0], last_pts))
            # The truncation check needs the last frame that decodes, as the full scan sees it.
            self._last_decodable_pts = max([previous[0], *taken])

    def _small(self, frame: av.VideoFrame) -> np.ndarray:
        # BGR, FAST_BILINEAR: what scenes._frames feeds the detector.
        return self._reformatter.reformat(frame, width=self._size[0], height=self._size[1], format="bgr24",
                                          interpolation="FAST_BILINEAR").to_ndarray()

    def _take(self, pts: int, small: np.ndarray) -> None:
        if self.mode == "full":
            # As scenes._feed: the detector reports a cut a few frames late; label it with its score.
            found = self.detector.process_frame(self.clock.timecode(pts), small)
            self._recent[pts] = self.detector._frame_score
            if len(self._recent) > 64:
                self._recent.pop(next(iter(self._recent)))
            self.found += [(tc.pts + self.clock.start_pts, self._recent.get(tc.pts + self.clock.start_pts))
                           for tc in found]
            return
        self._ring[pts] = small
        if len(self._ring) > self.RING_FRAMES:
            self._ring.pop(next(iter(self._ring)))
        image = hsv(small)
        # Between neighbouring frames of a fully decoded GOP this is the detector's own necessary
        # condition (a cut scores >= adaptive_min_content_val); between reference frames, the heuristic.
        if self._previous is not None and ref_change(self._previous[1], image) >= self.cfg.ref_change:
            self.candidates.append((self._previous[0], pts))
            self._candidates_in_gop += 1
        self._previous = (pts, image)

    def _run_stretches(self, log: PacketLog, stream, final: bool) -> None:
        """Run a detector over the frames around each candidate the decoder has moved past: from
        the ring when the scan decoded them, else decoded again from the packets. A cut counts
        when its detector window lies wholly inside the stretch (or reaches an end of the video)."""
        if not self.candidates:
            return
        order = log.display_pts()
        where = {pts: i for i, pts in enumerate(order)}
        stretches: list[list[int]] = []  # [first, last] display indices, merged
        waiting = []
        for before, after in sorted(self.candidates):
            if before not in where or after not in where:
                continue
            lo, hi = max(0, where[before] - self.margin), where[after] + self.margin
            if not final and (hi >= len(order) or order[hi] >= (self.last_pts or 0)):
                waiting.append((before, after))  # its last frames are not decoded yet
                continue
            hi = min(hi, len(order) - 1)
            if stretches and lo <= stretches[-1][1] + 1:
                stretches[-1][1] = max(stretches[-1][1], hi)
            else:
                stretches.append([lo, hi])
        self.candidates = waiting
        missing = [order[i] for lo, hi in stretches for i in range(lo, hi + 1) if order[i] not in self._ring]
        # The stream's decoder is idle once "gops" has read the file; "refs" is still using it.
        again = decode_at(log, stream, missing, reuse_stream_decoder=self.mode == "gops")
        self.redecoded += len(again)
        for lo, hi in stretches:
            images = []
            for pts in order[lo:hi + 1]:
                if pts in self._ring:
                    images.append((pts, self._ring[pts]))
                elif pts in again:
                    images.append((pts, self._small(again[pts])))
            # A frame that does not decode (damage, a file cut short) is left out, as the full
            # scan's decoder loses it; a damaged file is then caught by the truncation check.
            if not images:
                continue
            found, _ = scene_stage._feed(iter(images), make_detector(self.cfg, 0.0), self.clock)
            # A cut at display index j is judged from frames j-3..j+2.
            self.found += [(pts, score) for pts, score in found
                           if pts in where and (lo == 0 or where[pts] >= lo + self.margin - 1)]

    def cuts(self, log: PacketLog, stream, path: Path) -> list[scene_stage.Cut] | Skip:
        if self.mode == "full":
            return self.found
        if self.mode in ("refs", "gops") and log.usable and not self._unkeyed:
            order = log.display_pts()
            if len(order) < 2:
                return []
            # The full scan's detector counts its minimum scene length from its first scored frame.
            return _keep_min_gap(sorted(set(self.found)), self.clock, self.cfg.min_scene_s, order[1])
        # "keyframes", or refs whose packets were not kept: the separate scan reads the file.
        self.decodes += 1
        fallback = self.cfg if self.mode == "keyframes" else self.cfg.model_copy(update={"scan": "full"})
        found = scene_stage.detect_cuts(path, fallback)
        if isinstance(found, Skip):
            return found
        return [(self.clock.pts(t), score) for t, score in found[0]]


def _decode(packet: av.Packet) -> list[av.VideoFrame]:
    # A damaged packet loses its own frame, as under the separate scan's frame-threaded decode
    # (which reports no error for it); a file cut short is then caught by the truncation check.
    try:
        return packet.decode()
    except av.error.InvalidDataError:
        return []


def _keep_min_gap(cuts: list[scene_stage.Cut], clock: scene_stage._Clock, min_scene_s: float,
                  first_scored_pts: int) -> list[scene_stage.Cut]:
    kept: list[scene_stage.Cut] = []
    last_s = clock.seconds(first_scored_pts)
    for pts, score in cuts:
        at_s = clock.seconds(pts)
        if at_s - last_s >= min_scene_s - 1e-9:
            kept.append((pts, score))
            last_s = at_s
    return kept


class _Picker:
    """`decode_frames`' pick rule over the logged packets: each time gets the first frame shown at
    or after it (within half a frame), or the last frame for times less than a second past it."""

    def __init__(self, log: PacketLog, stream, clock: StreamClock, first_size: tuple[int, int] | None,
                 reuse_stream_decoder: bool):
        self.log, self.stream, self.first_size = log, stream, first_size
        self.reuse = reuse_stream_decoder
        self.half_frame_s = 0.5 / float(stream.average_rate or 25)
        self.order = log.display_pts()
        self.times = [clock.seconds(pts) for pts in self.order]
        self.decoded = 0

    def frames(self, times_s: list[float], max_pixels: int) -> list[np.ndarray] | str:
        if not times_s:
            return []
        if not self.order or self.first_size is None:
            return "no decodable video frame"
        picks = []
        for t in times_s:
            i = _first_shown_at(self.times, t, self.half_frame_s)
            if i == len(self.times):
                if t > self.times[-1] + END_SLACK_S:
                    return (f"frames end at {self.times[-1]:.2f} s, {t:.2f} s wanted "
                            "(truncated or damaged file?)")
                i = len(self.times) - 1
            picks.append(self.order[i])
        decoded = decode_at(self.log, self.stream, picks, self.reuse)
        self.decoded += len(decoded)
        if any(pts not in decoded for pts in picks):
            return "a wanted frame does not decode"
        h, w = smart_resize(*self.first_size, max_pixels)
        converted = {pts: decoded[pts].to_ndarray(format="rgb24", width=w, height=h) for pts in set(picks)}
        return [converted[pts] for pts in picks]


def _first_shown_at(times: list[float], t: float, half_frame_s: float) -> int:
    """Index of the first frame with `time + half_frame_s >= t` (decode_frames' own float test)."""
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] + half_frame_s < t:
            lo = mid + 1
        else:
            hi = mid
    return lo
