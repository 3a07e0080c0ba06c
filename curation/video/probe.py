"""Probe a video with PyAV (duration, fps, size, codec, audio) and admit it by per-source rules.

The probe also decodes the first frame and one frame near the end: a truncated MP4 whose header
(moov) is intact opens and even decodes its first frames, and is only caught at the tail.

`python -m curation.video.probe VIDEO` prints the probe record as JSON; exit 1 with the skip if it is one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
from pydantic import BaseModel, ConfigDict, Field

from curation.skips import Skip, declare_reasons
from curation.video.frames import Seeker, iter_frames
from curation.video.stream_time import stream_clock, video_duration_s
from schemas.cli import ArgumentParser

STAGE = "probe"
ADMIT_STAGE = "admit"
declare_reasons(final=("not_found", "empty_file", "not_video", "undecodable", "no_video_stream",
                       "unknown_duration", "truncated", "zero_duration", "too_short", "too_long",
                       "resolution_too_low", "resolution_too_high"))
TAIL_CHECK_S = 1.0  # how far before the end the tail frame is looked for
TRUNCATION_SLACK_S = 0.5  # frames may stop this much short of the tail check without counting as cut


class VideoProbe(BaseModel):
    model_config = ConfigDict(frozen=True)

    duration_s: float = Field(ge=0.0, allow_inf_nan=False)
    fps: float = Field(gt=0.0, allow_inf_nan=False)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    codec: str
    has_audio: bool
    container: str
    frames: int | None = Field(None, description="frame count from the header, when it has one")


class AdmissionRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_duration_s: float = Field(30.0, ge=0)  # LiveCC web-video filter: 30 s .. 10 min (FACTS.md)
    max_duration_s: float = Field(600.0, gt=0)  # LiveCC web-video filter: 30 s .. 10 min (FACTS.md)
    min_height: int = Field(480, ge=0, description="on the short side, so portrait 480p passes")  # LiveCC: >= 480p
    max_long_side_px: int = Field(4096, gt=0)  # our choice: DCI 4K; larger costs decode time for no gain
    max_short_side_px: int = Field(2160, gt=0)  # our choice: 4K UHD height


class AdmissionConfig(AdmissionRules):
    """The default rules, and per-source overrides that change only the fields they name."""

    per_source: dict[str, AdmissionRules] = Field(default_factory=dict)

    def rules_for(self, source: str) -> AdmissionRules:
        base = AdmissionRules(**self.model_dump(exclude={"per_source"}))
        override = self.per_source.get(source)
        if override is None:
            return base
        return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


def _decodes_a_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> bool:
    for _ in iter_frames(container, stream):
        return True
    return False


def _frames_end_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  from_s: float) -> float | None:
    """Where the frames stop being shown (stream time), decoding forward from the keyframe before
    `from_s` until a frame reaches it or the stream ends; None if none decodes.

    Not "does a frame decode after a seek": a backward seek into a file that holds far less than its
    header claims lands on its last keyframe and decodes fine, so the frame's time is what counts.
    """
    clock = stream_clock(stream)
    _, frames = Seeker(container, stream, clock).frames_from(from_s)
    end_s = None
    for frame in frames:
        if frame.pts is None:
            continue
        shown_s = float((frame.duration or 0) * (frame.time_base or 0))
        end_s = max(end_s or 0.0, clock.seconds(frame.pts) + max(shown_s, 0.0))
        if end_s >= from_s:
            break
    return end_s


def probe_video(path: str | Path) -> VideoProbe | Skip:
    """What the pipeline needs to know about a video file, or a Skip naming why it is not usable."""
    path = Path(path)
    if not path.is_file():
        return Skip(STAGE, "not_found", f"no such file: {path}")
    if path.stat().st_size == 0:
        return Skip(STAGE, "empty_file", f"{path.name} has zero bytes")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as error:
        return Skip(STAGE, "not_video", f"{path.name}: no known container ({error})")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        return Skip(STAGE, "undecodable", f"{path.name}: {type(error).__name__}: {error}")
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            return Skip(STAGE, "no_video_stream", f"{path.name} has streams: {', '.join(kinds)}")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        # average_rate is the mean over the file, right for variable frame rate; base/r_frame_rate
        # is the timebase-ish lowest common rate and can read 90000 for VFR phone videos.
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = int(stream.frames) if stream.frames else None
        duration_s = video_duration_s(container, stream)
        fps = float(rate) if rate else None
        if duration_s is None and frames and fps:
            duration_s = frames / fps
        if fps is None and frames and duration_s:
            fps = frames / duration_s
        if duration_s is None:
            return Skip(STAGE, "unknown_duration", f"{path.name}: no duration in container or stream")
        if not fps or width <= 0 or height <= 0:
            return Skip(STAGE, "undecodable", f"{path.name}: fps={fps} size={width}x{height}")
        try:
            if not _decodes_a_frame(container, stream):
                return Skip(STAGE, "undecodable", f"{path.name}: no frame decodes")
        except (av.error.FFmpegError, ValueError) as error:
            return Skip(STAGE, "undecodable", f"{path.name}: first frame: {type(error).__name__}: {error}")
        if duration_s > 2 * TAIL_CHECK_S and stream.time_base is not None:
            try:
                end_s = _frames_end_s(container, stream, duration_s - TAIL_CHECK_S)
            except (av.error.FFmpegError, ValueError) as error:
                return Skip(STAGE, "truncated", f"{path.name}: near the end: {type(error).__name__}: {error}")
            if end_s is None or end_s < duration_s - TAIL_CHECK_S - TRUNCATION_SLACK_S:
                where = "no frame decodes" if end_s is None else f"frames stop at {end_s:.2f} s"
                return Skip(STAGE, "truncated", f"{path.name}: {where} of a stated {duration_s:g} s; "
                            "the file is probably cut short")
        return VideoProbe(duration_s=max(0.0, duration_s), fps=fps, width=width, height=height,
                          codec=ctx.name, has_audio=bool(container.streams.audio),
                          container=container.format.name, frames=frames)


def admit(probe: VideoProbe, source: str, cfg: AdmissionConfig | None = None) -> Skip | None:
    """None when the video passes its source's rules, else the first rule it breaks."""
    rules = (cfg or AdmissionConfig()).rules_for(source)
    short_px, long_px = sorted((probe.width, probe.height))
    if probe.duration_s <= 0:
        return Skip(ADMIT_STAGE, "zero_duration", "the container reports a duration of 0 s")
    if probe.duration_s < rules.min_duration_s:
        return Skip(ADMIT_STAGE, "too_short", f"{probe.duration_s:.1f} s < {rules.min_duration_s:g} s for {source} "
                    f"(admission.per_source.{source}.min_duration_s in the config lowers it)")
    if probe.duration_s > rules.max_duration_s:
        return Skip(ADMIT_STAGE, "too_long", f"{probe.duration_s:.1f} s > {rules.max_duration_s:g} s for {source}")
    if short_px < rules.min_height:
        return Skip(ADMIT_STAGE, "resolution_too_low", f"{probe.width}x{probe.height} is under {rules.min_height}p")
    if long_px > rules.max_long_side_px or short_px > rules.max_short_side_px:
        return Skip(ADMIT_STAGE, "resolution_too_high",
                    f"{probe.width}x{probe.height} is over {rules.max_long_side_px}x{rules.max_short_side_px}")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m curation.video.probe",
                            description="The probe record of one video as JSON; a video the probe refuses "
                                        "prints its skip (stage, reason, detail) and exits 1.")
    parser.add_argument("video", help="a local video file")
    args = parser.parse_args(argv)
    result = probe_video(args.video)
    if isinstance(result, Skip):
        print(json.dumps({"stage": result.stage, "reason": result.reason, "detail": result.detail}))
        return 1
    print(result.model_dump_json(indent=2))
    return 0

if __name__ == "__main__":
    sys.exit(main())
