"""Timestamped descriptions of a video as `Segment` records: the text dialogues are written from.

When the source ships timestamped text (ASR sentences, narrations) those segments are used as
they are (FACTS.md: the paper's "scenes" are the source's own segments). Otherwise each detected
scene is captioned by a vision LLM from a few of its frames, through the one LLM client and the
one frame decoder. A scene whose frames do not decode or whose caption fails loses its segment
(counted in `Captions.failed`), and so does a caption the whole-text filter refuses
(`forbidden_text`: a timestamp, a segment id, a control character); a video with no caption at
all is a Skip.

Segment ids are `<video_id>-sNNNN` in time order; each segment carries the id of the scene it
overlaps most.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from curation.llm.client import LLMClient, LLMRequest, LLMResponse
from curation.skips import Skip, declare_reasons
from curation.text.prompts import load_prompt
from curation.text.text_filter import forbidden_text_problems
from curation.video.frames import FrameDecodeError, decode_frames
from schemas.records import Scene, Segment, Video

STAGE = "descriptions"
# A video whose every caption failed for one cause is quarantined with that cause (an LLM reason
# declared by curation.llm, or one of these); mixed causes are `no_captions`, retried.
declare_reasons(final=("no_scenes", "undecodable_frames", "forbidden_text"),
                retryable=("llm_empty", "no_captions"))


class DescriptionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frames_per_scene: int = Field(3, ge=1, le=16)  # issue 3: "a few of the scene's frames"; our choice
    caption_max_pixels: int = Field(448 * 448, ge=56 * 56)  # our choice: ~256 visual tokens per frame
    jpeg_quality: int = Field(85, ge=30, le=100)
    prompt_version: int | None = Field(None, description="scene_caption prompt file version; None = newest")
    temperature: float | None = None  # None: the LLM config's
    max_tokens: int | None = Field(256, ge=1)


@dataclass(frozen=True)
class Captions:
    segments: list[Segment]
    failed: dict[int, str] = field(default_factory=dict)  # scene id -> reason code


def renumber(segments: list[Segment], video_id: str, scenes: list[Scene]) -> list[Segment]:
    """Segments in time order with ids `<video_id>-sNNNN` and the scene each overlaps most."""
    ordered = sorted(segments, key=lambda s: (s.start_s, s.end_s))
    return [s.model_copy(update={"segment_id": f"{video_id}-s{i:04d}", "video_id": video_id,
                                 "scene_id": scene_of(s.start_s, s.end_s, scenes)})
            for i, s in enumerate(ordered)]


def scene_of(start_s: float, end_s: float, scenes: list[Scene]) -> int | None:
    best, best_overlap = None, 0.0
    for scene in scenes:
        overlap = min(end_s, scene.end_s) - max(start_s, scene.start_s)
        if overlap > best_overlap:
            best, best_overlap = scene.scene_id, overlap
    return best


def scene_frame_times(scene: Scene, count: int) -> list[float]:
    """`count` times spread evenly inside the scene (centres of equal slices, never its edges,
    where a cut's neighbour frame could show)."""
    length = scene.end_s - scene.start_s
    return [round(scene.start_s + (k + 0.5) * length / count, 3) for k in range(count)]


def jpeg_data_url(frame: np.ndarray, quality: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def caption_request(video: Video, scene: Scene, times_s: list[float], frames: list[np.ndarray],
                    cfg: DescriptionConfig) -> LLMRequest:
    prompt = load_prompt("scene_caption", cfg.prompt_version)
    text = prompt.render_user(frame_times_s=", ".join(f"{t:.1f} s" for t in times_s), scene_id=scene.scene_id,
                              start_s=f"{scene.start_s:.1f}", end_s=f"{scene.end_s:.1f}",
                              duration_s=f"{video.duration_s:.1f}")
    # Frames first, text after them: the order the trainer feeds (FACTS.md).
    parts = [{"type": "image_url", "image_url": {"url": jpeg_data_url(f, cfg.jpeg_quality)}} for f in frames]
    messages = [{"role": "system", "content": prompt.system},
                {"role": "user", "content": [*parts, {"type": "text", "text": text}]}]
    return LLMRequest(messages=messages, schema_name="scene_caption", prompt_version=prompt.prompt_version,
                      temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                      tag=f"caption/{video.video_id}/{scene.scene_id}")


def caption_frame_times(scenes: list[Scene], cfg: DescriptionConfig) -> dict[int, list[float]]:
    """Each scene's caption frame times: what the flow's single decode pass keeps for captions."""
    return {sc.scene_id: scene_frame_times(sc, cfg.frames_per_scene) for sc in scenes}


def decode_scene_frames(path: str | Path, scenes: list[Scene], cfg: DescriptionConfig
                        ) -> dict[int, tuple[list[float], list[np.ndarray]] | str]:
    """Each scene's frame times and frames, or the reason code they could not be had. One pass
    over the file when it decodes; scene by scene when it does not, so one bad stretch costs only
    its own scenes."""
    times = caption_frame_times(scenes, cfg)
    flat = [t for sc in scenes for t in times[sc.scene_id]]
    try:
        frames = decode_frames(path, flat, cfg.caption_max_pixels)
        by_time = dict(zip(flat, frames, strict=True))
        return {sid: (ts, [by_time[t] for t in ts]) for sid, ts in times.items()}
    except FrameDecodeError:
        pass
    out: dict[int, tuple[list[float], list[np.ndarray]] | str] = {}
    for sid, ts in times.items():
        try:
            out[sid] = (ts, decode_frames(path, ts, cfg.caption_max_pixels))
        except FrameDecodeError:
            out[sid] = "undecodable_frames"
    return out


def caption_scenes(video: Video, path: str | Path, scenes: list[Scene], client: LLMClient,
                   cfg: DescriptionConfig, decoded: dict | None = None) -> Captions:
    """One caption segment per scene that decodes and whose caption comes back; the rest counted.
    `decoded`: the frames the flow's single decode pass already has (as `decode_scene_frames`
    gives them); the file is read only when they are not given."""
    decoded = decoded if decoded is not None else decode_scene_frames(path, scenes, cfg)
    failed: dict[int, str] = {sid: why for sid, why in decoded.items() if isinstance(why, str)}
    todo = [sc for sc in scenes if sc.scene_id not in failed]
    requests = [caption_request(video, sc, *decoded[sc.scene_id], cfg) for sc in todo]
    segments = []
    for scene, reply in zip(todo, client.complete_many(requests), strict=True):
        caption = reply.data.get("caption", "") if isinstance(reply, LLMResponse) and reply.data else ""
        caption = caption if isinstance(caption, str) else ""
        if not isinstance(reply, LLMResponse):
            failed[scene.scene_id] = reply.reason
        elif not caption.strip():
            failed[scene.scene_id] = "llm_empty"
        elif forbidden_text_problems("caption", caption):  # the prompt forbids timestamps too
            failed[scene.scene_id] = "forbidden_text"
        else:
            segments.append(Segment(segment_id=f"{video.video_id}-s0000", video_id=video.video_id,
                                    start_s=scene.start_s, end_s=scene.end_s, text=" ".join(caption.split()),
                                    origin="caption", scene_id=scene.scene_id))
    return Captions(renumber(segments, video.video_id, scenes), failed)


def describe_video(video: Video, path: str | Path, scenes: list[Scene], source_segments: list[Segment],
                   client: LLMClient, cfg: DescriptionConfig, counts: Counter | None = None,
                   decoded: dict | None = None) -> list[Segment] | Skip:
    """The video's timestamped descriptions: the source's own segments when it has them, else one
    caption per scene; a Skip when there is nothing to describe or every caption failed. `counts`
    (when given) gets `captions_<reason>` per failed scene caption."""
    if source_segments:
        return renumber(source_segments, video.video_id, scenes)
    if not scenes:
        return Skip(STAGE, "no_scenes", "no source text and no scene to caption")
    captions = caption_scenes(video, path, scenes, client, cfg, decoded)
    if counts is not None:
        counts.update(f"captions_{reason}" for reason in captions.failed.values())
    if not captions.segments:
        counts = Counter(captions.failed.values())
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        # One cause for every scene (the server down, the replay file without these answers) is
        # reported as that cause, so the flow can tell a retryable outage from a bad video.
        reason = next(iter(counts)) if len(counts) == 1 else "no_captions"
        return Skip(STAGE, reason, f"all {len(scenes)} scene captions failed ({detail})")
    return captions.segments
