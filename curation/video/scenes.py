"""Scene boundaries from PySceneDetect detectors fed by a downscaled, threaded PyAV decode.

Frames are scaled down inside the decoder's swscale call and handed one at a time to the
detector object, so memory does not grow with the video's length. Scenes longer than
`max_scene_s` are split evenly. The scene list always covers [0, duration] without gaps.

`python -m curation.video.scenes VIDEO [--json]` prints the scenes as `[start_s, end_s]` pairs.
"""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from pydantic import BaseModel, ConfigDict, Field
from scenedetect import FrameTimecode
from scenedetect.common import Timecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector

from curation.skips import Skip, declare_reasons
from curation.video.frames import Seeker, iter_frames
from curation.video.stream_time import StreamClock, stream_clock, video_duration_s
from schemas.cli import ArgumentParser
from schemas.records import Scene

STAGE = "scenes"
declare_reasons(final=("not_found", "empty_file", "not_video", "undecodable", "no_video_stream", "truncated",
                       "zero_duration"))
# A decode that stops this far before the container's stated end is a truncated file.
TRUNCATION_TOLERANCE_S = 1.0
EDGE_S = 1e-3  # a cut this close to either end would make an empty scene


class SceneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detector: Literal["adaptive", "content"] = "adaptive"  # FACTS.md: AdaptiveDetector best hard-cut F1
    adaptive_threshold: float = Field(3.0, gt=0)  # PySceneDetect 0.7 AdaptiveDetector default
    adaptive_window_width: int = Field(2, ge=1)  # PySceneDetect 0.7 AdaptiveDetector default
    adaptive_min_content_val: float = Field(15.0, ge=0)  # PySceneDetect 0.7 AdaptiveDetector default
    content_threshold: float = Field(27.0, gt=0)  # PySceneDetect 0.7 ContentDetector default
    min_scene_s: float = Field(0.6, ge=0)  # FACTS.md: tuned min_scene_len="0.6s" (= 15 frames at 25 fps)
    max_scene_s: float = Field(20.0, gt=0)  # issue 3: dialogues anchor answers to ~20 s segments
    # PySceneDetect's auto-downscale target width (scene_manager.DEFAULT_MIN_WIDTH), so the
    # detector sees what the CLI sees and finds the same cuts.
    downscale_width: int = Field(256, ge=16)
    # "full" feeds every frame to the detector. "keyframes" first decodes only keyframes and then
    # fully decodes just the keyframe-to-keyframe spans whose ends differ by at least
    # `keyframe_change` (ContentDetector score units): far fewer frames on calm footage, but a cut
    # and cut-back inside one GOP to a look-alike shot is missed.
    # "refs" (curation.video.single_pass, issue 22): decode reference frames only and fully decode
    # just the frames around neighbouring reference frames that differ by `ref_change` or more.
    # "gops" (issue 22, the default): keyframes only on the way through; a GOP whose two keyframes
    # differ by `keyframe_change` or more is looked into through its I/P frames (deblocking
    # skipped), and only the frames around neighbouring ones that differ by `ref_change` are
    # decoded fully. `detect_scenes` itself runs "refs" and "gops" as "full"; the flow's single
    # pass runs them.
    scan: Literal["full", "keyframes", "refs", "gops"] = "gops"  # same cuts as "full" on tests/test_single_pass.py
    # Our choice, checked against full scans in bench/scenes.py and bench/single_pass.py. A cut
    # inside a GOP scores >= adaptive_min_content_val (15) between its two frames, so its
    # keyframes differ by at least 15 minus how far each shot drifts from its keyframe: 4 lets
    # the two shots drift by 11 together within one GOP.
    keyframe_change: float = Field(4.0, ge=0)
    # = adaptive_min_content_val: a cut scores at least that, and so do the two shots around it.
    ref_change: float = Field(15.0, ge=0)


def make_detector(cfg: SceneConfig, min_scene_s: float | None = None) -> AdaptiveDetector | ContentDetector:
    min_scene_s = cfg.min_scene_s if min_scene_s is None else min_scene_s
    if cfg.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_scene_len=min_scene_s,
                                window_width=cfg.adaptive_window_width,
                                min_content_val=cfg.adaptive_min_content_val)
    return ContentDetector(threshold=cfg.content_threshold, min_scene_len=min_scene_s)


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Width and height (both even, aspect kept) of the frames the detector sees."""
    if width <= target_width:
        return width, height
    scaled_height = max(2, round(height * target_width / width / 2) * 2)
    return target_width, scaled_height


def _open(path: Path) -> av.container.InputContainer | Skip:
    if not path.is_file():
        return Skip(STAGE, "not_found", f"no such file: {path}")
    if path.stat().st_size == 0:
        return Skip(STAGE, "empty_file", f"{path.name} has zero bytes")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as error:
        return Skip(STAGE, "not_video", f"{path.name}: no known container ({error})")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        return Skip(STAGE, "undecodable", f"{path.name}: {type(error).__name__}: {error}")


class _Shown:
    """Where the last decoded frame stops being shown (pts); written by `_frames`."""

    last_end_pts: int | None = None


def _frames(frames: Iterable[av.VideoFrame], target_width: int, shown: _Shown | None = None
            ) -> Iterator[tuple[int, np.ndarray]]:
    """(pts, downscaled BGR frame) in presentation order; pts falls back to a frame count."""
    shown = shown or _Shown()
    size: tuple[int, int] | None = None
    # One reformatter for the whole video: it keeps its swscale context, which a per-frame
    # `to_ndarray(width=...)` rebuilds at several times the cost of the scaling itself.
    reformatter = VideoReformatter()
    for index, frame in enumerate(frames):
        if size is None:
            size = scaled_size(frame.width, frame.height, target_width)
        # BGR because the detectors convert with cv2.COLOR_BGR2HSV; FAST_BILINEAR is the cheapest
        # swscale filter and, like the CLI's cv2.INTER_LINEAR resize, is not anti-aliased.
        small = reformatter.reformat(frame, width=size[0], height=size[1], format="bgr24",
                                     interpolation="FAST_BILINEAR")
        pts = frame.pts if frame.pts is not None else index
        # How long this frame is shown, for the truncation check (a held last frame is not a cut).
        shown.last_end_pts = pts + max(int(frame.duration or 0), 0)
        yield pts, small.to_ndarray()


@dataclass(frozen=True)
class _Clock(StreamClock):
    """The stream's clock (`curation.video.stream_time`) with the frame rate the detectors count in."""

    rate: Fraction

    def timecode(self, pts: int) -> FrameTimecode:
        return FrameTimecode(Timecode(pts=pts - self.start_pts, time_base=self.time_base), fps=self.rate)


def detector_clock(stream: av.video.stream.VideoStream) -> _Clock:
    clock = stream_clock(stream)
    return _Clock(clock.time_base, clock.start_pts, Fraction(stream.average_rate or stream.guessed_rate or 25))


Cut = tuple[int, float | None]  # (pts, detector frame score there)


def _feed(frames: Iterator[tuple[int, np.ndarray]], detector, clock: _Clock,
          stop_pts: int | None = None, lead_in: int = 0) -> tuple[list[Cut], int | None]:
    """Run one detector over frames up to stop_pts (or the end); its cuts and the last pts seen.

    `lead_in` copies of the first frame go before it, one frame apart, so that a detector started
    mid-video can judge a cut on the second frame (AdaptiveDetector needs window_width frames before).
    """
    # Scores of the last frames, to label the cut a detector reports a few frames late.
    recent: deque[tuple[int, float | None]] = deque(maxlen=max(8, detector.event_buffer_length + 2))
    cuts: list[Cut] = []
    last_pts = None
    frame_pts = max(1, round(1 / (clock.rate * clock.time_base)))
    for index, (pts, image) in enumerate(frames):
        if index == 0:
            for back in range(lead_in, 0, -1):
                detector.process_frame(clock.timecode(max(pts - back * frame_pts, clock.start_pts)), image)
        timecode = clock.timecode(pts)
        found = detector.process_frame(timecode, image)
        recent.append((pts, detector._frame_score))
        cuts += [(tc.pts + clock.start_pts, dict(recent).get(tc.pts + clock.start_pts)) for tc in found]
        last_pts = pts
        if stop_pts is not None and pts >= stop_pts:
            break
    if last_pts is not None:
        cuts += [(tc.pts + clock.start_pts, None) for tc in detector.post_process(clock.timecode(last_pts))]
    return cuts, last_pts


def _keyframe_spans(container, stream, cfg: SceneConfig, start_pts: int) -> list[tuple[int, int | None]]:
    """[keyframe, next keyframe] spans whose two keyframes differ: the only places a cut can hide.

    Neighbouring candidate spans are merged; the span after the last keyframe always counts, and
    so does the one before the first keyframe that decodes, when frames are shown before it (an
    MP4 edit list that starts inside a GOP, whose keyframe the decoder discards).
    """
    stream.codec_context.skip_frame = "NONKEY"
    spans: list[tuple[int, int | None]] = []
    previous: tuple[int, np.ndarray] | None = None
    first_pts: int | None = None
    for pts, image in _frames(iter_frames(container, stream), cfg.downscale_width):
        first_pts = pts if first_pts is None else first_pts
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int16)
        # Mean of |dH|, |dS|, |dV|: ContentDetector's frame score with its default weights.
        if previous is not None and float(np.abs(hsv - previous[1]).mean()) >= cfg.keyframe_change:
            if spans and spans[-1][1] == previous[0]:
                spans[-1] = (spans[-1][0], pts)
            else:
                spans.append((previous[0], pts))
        previous = (pts, hsv)
    if previous is not None:
        if spans and spans[-1][1] == previous[0]:
            spans[-1] = (spans[-1][0], None)
        else:
            spans.append((previous[0], None))
    if first_pts is not None and first_pts > start_pts:
        if spans and spans[0][0] == first_pts:
            spans[0] = (start_pts, spans[0][1])
        else:
            spans.insert(0, (start_pts, first_pts))
    return spans


def _enforce_min_gap(cuts: list[Cut], clock: _Clock, min_scene_s: float) -> list[Cut]:
    kept: list[Cut] = []
    last_s = 0.0
    for pts, score in sorted(set(cuts)):
        at_s = clock.seconds(pts)
        if at_s - last_s >= min_scene_s - 1e-9:
            kept.append((pts, score))
            last_s = at_s
    return kept


def _scan_keyframe_spans(path: Path, clock: _Clock, cfg: SceneConfig) -> tuple[list[Cut], int | None]:
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        spans = _keyframe_spans(container, stream, cfg, clock.start_pts)
    # Enough frames past a span's end for the detector to judge a cut on its closing keyframe.
    margin_pts = math.ceil((cfg.adaptive_window_width + 2) / clock.rate / clock.time_base)
    cuts: list[Cut] = []
    last_pts = None
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        seeker = Seeker(container, stream, clock)
        for start_pts, stop_pts in spans:
            _, frames = seeker.frames_from(clock.seconds(start_pts))
            span = (f for f in frames if f.pts is None or f.pts >= start_pts)  # a seek may land earlier
            # A detector counts its minimum scene length from its first frame, not from the last
            # cut: the spans' detectors get none, and the gap is enforced over all cuts below.
            found, last_pts = _feed(_frames(span, cfg.downscale_width), make_detector(cfg, 0.0), clock,
                                    None if stop_pts is None else stop_pts + margin_pts,
                                    lead_in=cfg.adaptive_window_width if start_pts > clock.start_pts else 0)
            cuts += [cut for cut in found if stop_pts is None or cut[0] <= stop_pts]
    return _enforce_min_gap(cuts, clock, cfg.min_scene_s), last_pts


def detect_cuts(path: str | Path, cfg: SceneConfig) -> tuple[list[tuple[float, float | None]], float] | Skip:
    """Cut times in seconds (each with the detector's frame score there) and the video's length."""
    path = Path(path)
    opened = _open(path)
    if isinstance(opened, Skip):
        return opened
    with opened as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            return Skip(STAGE, "no_video_stream", f"{path.name} has streams: {', '.join(kinds)}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: decode is the stage's floor
        clock = detector_clock(stream)
        stated_s = video_duration_s(container, stream)
        shown = _Shown()
        try:
            if cfg.scan == "keyframes":
                cuts, last_pts = _scan_keyframe_spans(path, clock, cfg)
            else:
                cuts, last_pts = _feed(_frames(iter_frames(container, stream), cfg.downscale_width, shown),
                                       make_detector(cfg), clock)
        except (av.error.FFmpegError, ValueError, MemoryError) as error:
            return Skip(STAGE, "undecodable", f"{path.name}: {type(error).__name__}: {error}")
    if last_pts is None:
        return Skip(STAGE, "undecodable", f"{path.name}: no frame decodes")
    end_pts = max(last_pts + 1 / (clock.rate * clock.time_base), shown.last_end_pts or 0)
    decoded_s = clock.seconds(end_pts)
    if stated_s is not None and decoded_s < stated_s - TRUNCATION_TOLERANCE_S:
        return Skip(STAGE, "truncated", f"{path.name}: frames stop at {decoded_s:.2f} s of a stated {stated_s:.2f} s")
    seconds = [(clock.seconds(pts), score) for pts, score in sorted(set(cuts))]
    return seconds, (stated_s if stated_s is not None else decoded_s)


def split_span(start_s: float, end_s: float, max_scene_s: float) -> list[tuple[float, float]]:
    """[start, end) split into ceil(length / max) equal parts."""
    parts = max(1, math.ceil((end_s - start_s) / max_scene_s - 1e-9))
    step = (end_s - start_s) / parts
    edges = [start_s + i * step for i in range(parts)] + [end_s]
    return list(zip(edges[:-1], edges[1:], strict=True))


def build_scenes(video_id: str, cuts: list[tuple[float, float | None]], duration_s: float,
                 cfg: SceneConfig) -> list[Scene]:
    """Scenes covering [0, duration_s]: one per cut interval, long ones split evenly."""
    # The detector keeps cuts min_scene_s apart; a short last shot is real and kept, as the CLI does.
    kept = [(t, score) for t, score in cuts if EDGE_S < t < duration_s - EDGE_S]
    bounds = [(0.0, None), *kept]
    scenes: list[Scene] = []
    for i, (start_s, score) in enumerate(bounds):
        end_s = bounds[i + 1][0] if i + 1 < len(bounds) else duration_s
        for j, (a, b) in enumerate(split_span(start_s, end_s, cfg.max_scene_s)):
            scenes.append(Scene(video_id=video_id, scene_id=len(scenes), start_s=round(a, 6), end_s=round(b, 6),
                                detector=cfg.detector if j == 0 else "split-long",
                                score=score if j == 0 else None))
    return scenes


def detect_scenes(path: str | Path, video_id: str, cfg: SceneConfig | None = None,
                  duration_s: float | None = None) -> list[Scene] | Skip:
    """The video's scenes, in order, covering [0, duration] without gaps; or a Skip saying why not.

    `duration_s` (from the probe) overrides the container's stated duration as the end of the last scene.
    """
    cfg = cfg or SceneConfig()
    found = detect_cuts(path, cfg)
    if isinstance(found, Skip):
        return found
    cuts, stated_s = found
    end_s = duration_s if duration_s is not None else stated_s
    if not end_s > 0:
        return Skip(STAGE, "zero_duration", f"{Path(path).name}: duration {end_s} s")
    return build_scenes(video_id, cuts, end_s, cfg)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m curation.video.scenes",
                            description="The detected scenes of one video as [start_s, end_s] pairs.")
    parser.add_argument("video", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON list of [start_s, end_s] pairs")
    parser.add_argument("--detector", choices=["adaptive", "content"], default="adaptive")
    args = parser.parse_args(argv)
    result = detect_scenes(args.video, "cli", SceneConfig(detector=args.detector))
    if isinstance(result, Skip):
        print(str(result), file=sys.stderr)
        return 1
    pairs = [[round(s.start_s, 3), round(s.end_s, 3)] for s in result]
    if args.json:
        print(json.dumps(pairs))
    else:
        for start_s, end_s in pairs:
            print(f"[{start_s:.3f}, {end_s:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
