"""Frame times are stream times (`curation.video.stream_time`): seconds from the video stream's
start, whatever the container's timestamps start at. One H.264 clip with B-frames and three
shots (cuts at 4 s and 7 s, every frame distinct) is copied, packets untouched, into files whose
timestamps start elsewhere: an MPEG-TS at 10 hours, an MPEG-TS whose 33-bit PTS wraps inside it,
a Matroska file starting at 5 s, MP4s whose edit list delays the video, whose video starts after
its audio, that has no edit list at all, and one trimmed by an edit list. Every stage that picks or
checks frames (the frame decoder, the probe, the scene pass, the single pass with its caption
frames, the trainer's frame cache, the exported frame folders, captions in the flow) must give
what it gives on the zero-start original.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from curation.text.descriptions import DescriptionConfig, caption_frame_times
from curation.video.frames import decode_frames, frame_timeline
from curation.video.probe import VideoProbe, probe_video
from curation.video.scenes import SceneConfig, detect_scenes
from curation.video.single_pass import decode_video
from curation.video.stream_time import start_on_video_clock_s, stream_clock
from curation.video.synthetic import ffmpeg_exe
from training.data.frame_cache import FrameCache
from training.data.frame_folders import extract_frame_folder, load_frame_files
from training.data.prepare_frames import cache_one

FPS = 25
PIXELS = 112 * 84
WRAP_S = 2**33 / 90000  # where the MPEG-TS clock (33 bits at 90 kHz) wraps
TRIM_S = 2.32  # -ss 2.3 with stream copy: the edit list starts at the first frame at or after 2.3 s
# name -> ffmpeg arguments that copy the source's packets into a file whose timestamps start elsewhere
VARIANTS = {
    "ts_10h": ["-output_ts_offset", "36000", "-f", "mpegts"],
    # the muxer adds ~1.4 s of delay: the first frame sits ~6.6 s before the wrap
    "ts_wrap": ["-output_ts_offset", f"{WRAP_S - 8:.6f}", "-f", "mpegts"],
    "mkv_5s": ["-output_ts_offset", "5", "-f", "matroska"],
    "mp4_delayed": ["-output_ts_offset", "3", "-f", "mp4"],  # an empty edit before the video
    "mp4_no_editlist": ["-use_editlist", "0", "-f", "mp4"],  # B-frame delay left in the timestamps
}
ALL = [*VARIANTS, "mp4_audio_first"]


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stream-time")
    src = folder / "src.mp4"
    ffmpeg("-t", "4", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={FPS}",
           "-t", "3", "-f", "lavfi", "-i", f"mandelbrot=size=160x120:rate={FPS}",
           "-t", "3", "-f", "lavfi", "-i", f"testsrc=size=160x120:rate={FPS}",
           "-filter_complex", "concat=n=3:v=1:a=0,format=yuv420p", "-c:v", "libx264", "-preset", "veryfast",
           "-g", "50", str(src))
    out = {"src": src}
    for name, args in VARIANTS.items():
        out[name] = folder / f"{name}.{args[-1]}"
        ffmpeg("-i", str(src), "-c", "copy", *args, str(out[name]))
    out["mp4_audio_first"] = folder / "mp4_audio_first.mp4"  # the picture starts 0.5 s after the sound
    ffmpeg("-itsoffset", "0.5", "-i", str(src), "-f", "lavfi", "-t", "10.5", "-i", "sine=frequency=440",
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(out["mp4_audio_first"]))
    out["mp4_trimmed"] = folder / "mp4_trimmed.mp4"
    ffmpeg("-ss", "2.3", "-i", str(src), "-c", "copy", str(out["mp4_trimmed"]))
    return out


def raw_start_s(path: Path) -> float:
    with av.open(str(path)) as container:
        return stream_clock(container.streams.video[0]).start_s


def test_the_files_start_where_the_case_says(clips):
    with av.open(str(clips["src"])) as container:
        packets = [p.pts for p in container.demux(video=0) if p.pts is not None]
    assert packets != sorted(packets)  # B-frames: decode order is not display order
    assert raw_start_s(clips["src"]) == 0.0
    assert raw_start_s(clips["ts_10h"]) > 36000
    assert -8 < raw_start_s(clips["ts_wrap"]) < -5  # libavformat unwrapped it: the start is before 0
    assert raw_start_s(clips["mkv_5s"]) == 5.0 and raw_start_s(clips["mp4_delayed"]) == 3.0
    assert 0 < raw_start_s(clips["mp4_no_editlist"]) < 0.2


def test_the_ts_wrap_lies_inside_the_file(clips):
    """The demuxer's raw 33-bit timestamps pass 2^33 and fall back to 0 inside the file."""
    data = clips["ts_wrap"].read_bytes()
    stamps = []
    for at in range(0, len(data) - 188 + 1, 188):
        packet = data[at:at + 188]
        if not packet[1] & 0x40 or not packet[3] & 0x10:  # payload unit start with a payload
            continue
        pes = packet[4 + (1 + packet[4] if packet[3] & 0x20 else 0):]
        if pes[:3] == b"\x00\x00\x01" and pes[3] == 0xE0 and pes[7] & 0x80:
            p = pes[9:14]
            stamps.append(((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1)
    assert max(stamps) > 2**33 - 90000 * 7 and min(stamps) < 90000 * 4


@pytest.mark.parametrize("name", ALL)
def test_frames_at_stream_times_are_the_zero_start_originals(clips, name):
    timeline = frame_timeline(10.0)
    want = decode_frames(clips["src"], timeline, PIXELS)
    assert all(not np.array_equal(a, b) for i, a in enumerate(want) for b in want[i + 1:])  # distinct
    got = decode_frames(clips[name], timeline, PIXELS)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    # Gaps over 4 s seek: a seek into an MPEG-TS (no index) can land past its target.
    sparse = [0.0, 5.32, 9.96, 4.0]
    got = decode_frames(clips[name], sparse, PIXELS)
    assert all(np.array_equal(a, b) for a, b in zip(got, decode_frames(clips["src"], sparse, PIXELS), strict=True))


@pytest.mark.parametrize("name", ALL)
def test_probe_scenes_and_the_single_pass_agree_with_the_original(clips, name):
    probe = probe_video(clips[name])
    assert isinstance(probe, VideoProbe), probe
    assert probe.duration_s == pytest.approx(10.0, abs=0.05)
    bounds = [(0.0, 4.0), (4.0, 7.0), (7.0, 10.0)]
    for scan in ("full", "keyframes"):  # the keyframes scan seeks
        assert [(s.start_s, s.end_s) for s in detect_scenes(clips[name], "v", SceneConfig(scan=scan))] == bounds
    captions = DescriptionConfig(caption_max_pixels=PIXELS)

    def one_pass(path):
        return decode_video(path, "v", probe.duration_s, SceneConfig(), None,
                            lambda scenes: caption_frame_times(scenes, captions), PIXELS)

    got, want = one_pass(clips[name]), one_pass(clips["src"])
    assert [(s.start_s, s.end_s) for s in got.scenes] == bounds
    assert got.timeline == want.timeline == frame_timeline(10.0)
    for sid, (times, frames) in want.captions.items():
        assert got.captions[sid][0] == times
        assert all(np.array_equal(a, b) for a, b in zip(got.captions[sid][1], frames, strict=True))


def test_a_trimmed_mp4_starts_at_its_edit(clips):
    """The edit list starts inside a GOP: the decoder discards the frames before it, its keyframe
    too, yet the frames shown before the next keyframe are looked at by every scan."""
    path = clips["mp4_trimmed"]
    times = [0.0, 2.0, 4.0, 6.0]
    want = decode_frames(clips["src"], [t + TRIM_S for t in times], PIXELS)
    assert all(np.array_equal(a, b) for a, b in zip(decode_frames(path, times, PIXELS), want, strict=True))
    probe = probe_video(path)
    assert probe.duration_s == pytest.approx(10.0 - TRIM_S, abs=0.05)
    starts = pytest.approx([0.0, 4.0 - TRIM_S, 7.0 - TRIM_S])
    for scan in ("full", "keyframes"):
        assert [s.start_s for s in detect_scenes(path, "v", SceneConfig(scan=scan), probe.duration_s)] == starts
    for scan in ("gops", "refs"):
        assert [s.start_s for s in decode_video(path, "v", probe.duration_s, SceneConfig(scan=scan)).scenes] == starts


@pytest.mark.parametrize("name", ["ts_10h", "ts_wrap", "mkv_5s", "mp4_audio_first", "mp4_trimmed"])
def test_the_frame_cache_and_frame_folders_hold_decode_frames_frames(clips, name, tmp_path):
    path = clips[name]
    duration_s = probe_video(path).duration_s
    timeline = frame_timeline(duration_s, 1.0)
    want = decode_frames(path, timeline, PIXELS)
    cache = FrameCache(tmp_path, 1.0, 90, PIXELS)
    assert cache_one(cache, name, path, duration_s) == "written"
    assert all(np.array_equal(a, b) for a, b in zip(cache.load(name, timeline), want, strict=True))
    # JPEGs from ffmpeg's own decode and scaler: each is nearest to decode_frames' frame at its time,
    # not to the frames a 25th of a second either side of it.
    files = extract_frame_folder(path, tmp_path / "frames", timeline, 1.0, PIXELS)
    assert isinstance(files, list) and len(files) == len(timeline)
    before = decode_frames(path, [max(0.0, t - 1 / FPS) for t in timeline], PIXELS)
    after = decode_frames(path, [t + 1 / FPS for t in timeline], PIXELS)
    for i, image in enumerate(load_frame_files(files, PIXELS)):
        def distance(frame, image=image):
            return float(np.abs(frame.astype(int) - image.astype(int)).mean())

        others = [f for f in (before[i], after[i]) if not np.array_equal(f, want[i])]
        assert all(distance(want[i]) < distance(f) for f in others), (name, timeline[i])


def test_a_ts_wrap_a_minute_in_counts_on(tmp_path):
    """Past a minute before the wrap libavformat adds 2^33 after it instead (its other unwrapping
    mode); frames, seeks, probe and scenes keep counting from the first frame."""
    src, ts = tmp_path / "src.mp4", tmp_path / "late_wrap.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=75", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", "10", str(src))
    ffmpeg("-i", str(src), "-c", "copy", "-output_ts_offset", f"{WRAP_S - 70 - 1.4:.6f}", "-f", "mpegts", str(ts))
    with av.open(str(ts)) as container:
        last = max(p.pts for p in container.demux(video=0) if p.pts is not None)
    assert last > 2**33  # unwrapped past the wrap
    assert probe_video(ts).duration_s == pytest.approx(75.0, abs=0.25)
    timeline = frame_timeline(75.0)
    for times in (timeline, timeline[::5]):  # the second one seeks
        got, want = decode_frames(ts, times, 64 * 48), decode_frames(src, times, 64 * 48)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_audio_that_starts_first_is_placed_on_the_video_clock(clips):
    with av.open(str(clips["mp4_audio_first"])) as container:
        shift = start_on_video_clock_s(container, container.streams.audio[0])
    assert shift == pytest.approx(-0.5, abs=0.05)


def test_the_flow_captions_each_scene_of_an_offset_ts_from_inside_it(clips, tmp_path):
    """run_video (the flow's per-video pipeline) on the 10-hour TS and on the original: each scene's
    caption request carries the original's frames of that scene, and the scenes' frames differ."""
    from curation.config import CorpusConfig
    from curation.llm.client import LLMClient, LLMConfig
    from curation.manifest import ManifestRow
    from flows.video_pipeline import Limits, PipelineContext, run_video
    from tests.openai_stub import StubServer
    from tests.scripted_llm import FaultPlan

    images: dict[str, dict[int, list[bytes]]] = {}
    for name in ("src", "ts_10h"):
        with StubServer(FaultPlan()) as stub:
            config = CorpusConfig(manifest="m.jsonl", admission={"min_duration_s": 0, "min_height": 0},
                                  descriptions={"caption_max_pixels": PIXELS})
            client = LLMClient(LLMConfig(base_url=stub.url, api_key="sk-test", model="scripted", max_retries=0))
            root = tmp_path / name
            ctx = PipelineContext(config=config, corpus_root=root, client=client,
                                  limits=Limits.from_workers(config.workers), fingerprint="fp")
            with client:
                result = run_video(ManifestRow(video_id=name, uri=str(clips[name])), ctx)
            assert result.video is not None and result.video.duration_s == pytest.approx(10.0, abs=0.05)
            assert [(s.start_s, s.end_s) for s in result.scenes] == [(0.0, 4.0), (4.0, 7.0), (7.0, 10.0)]
            images[name] = {}
            for body in stub.requests:
                parts = body["messages"][-1]["content"]
                found = re.search(r"of scene (\d+)", str(parts[-1]))
                if isinstance(parts, list) and found:
                    images[name][int(found[1])] = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
                                                   for p in parts if p["type"] == "image_url"]
    assert sorted(images["ts_10h"]) == [0, 1, 2]
    assert images["ts_10h"] == images["src"]
    assert len({frame for frames in images["ts_10h"].values() for frame in frames}) == 3 * 3
