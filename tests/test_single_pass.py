"""The single decode pass gives what the separate stages give: the same scenes (full, "refs" and
"gops" scans), the same frames-check timeline and the same caption frames and requests, on the sample
clips and on a long-GOP video, from one read of the file; bad inputs are the same skips."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from curation.skips import Skip
from curation.text.descriptions import (
    DescriptionConfig,
    caption_frame_times,
    caption_request,
    decode_scene_frames,
)
from curation.video.frames import decode_frames, frame_timeline
from curation.video.scenes import SceneConfig, detect_scenes
from curation.video.single_pass import decode_video
from curation.video.synthetic import ffmpeg_exe
from schemas.records import Video
from tests.conftest import SAMPLES

CAPTIONS = DescriptionConfig()
SAMPLE_CLIPS = sorted((SAMPLES / "videos").glob("*.mp4"))


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory):
    """24 s with motion (testsrc2, a mandelbrot zoom, a panned testsrc), one keyframe every 10 s
    and no keyframe at the cuts (8 s, 15 s): a cut sits mid-GOP, behind B-frames."""
    path = tmp_path_factory.mktemp("gop") / "long_gop.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-t", "8", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                    "-t", "7", "-f", "lavfi", "-i", "mandelbrot=size=320x240:rate=25",
                    "-t", "9", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=25",
                    "-filter_complex", "[2:v]crop=320:240:x='t*12':y='t*6'[p];[0:v][1:v][p]concat=n=3:v=1:a=0,"
                    "format=yuv420p[v]", "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
                    "-g", "250", "-keyint_min", "250", "-sc_threshold", "0", str(path)], check=True)
    return path


def separate_stages(path):
    scenes = detect_scenes(path, "v")
    times = frame_timeline(scenes[-1].end_s)
    check = decode_frames(path, [times[0], times[-1]], 28 * 28 * 4)
    return scenes, times, check, decode_scene_frames(path, scenes, CAPTIONS)


def single_pass(path, scan):
    return decode_video(path, "v", None, SceneConfig(scan=scan), None,
                        lambda scenes: caption_frame_times(scenes, CAPTIONS), CAPTIONS.caption_max_pixels)


def assert_same_frames(got, want):
    assert set(got) == set(want)
    for sid, (times, frames) in want.items():
        assert got[sid][0] == times
        assert len(got[sid][1]) == len(frames)
        assert all(np.array_equal(a, b) for a, b in zip(got[sid][1], frames, strict=True))


@pytest.mark.parametrize("name", [p.name for p in SAMPLE_CLIPS] + ["long_gop"])
def test_one_pass_gives_the_separate_stages_scenes_timeline_and_caption_frames(name, long_gop):
    path = long_gop if name == "long_gop" else SAMPLES / "videos" / name
    scenes, times, _, captions = separate_stages(path)
    for scan in ("full", "refs", "gops"):
        decoded = single_pass(path, scan)
        assert not isinstance(decoded, Skip), decoded
        assert decoded.scenes == scenes, scan
        assert decoded.timeline == times
        assert_same_frames(decoded.captions, captions)
        assert decoded.decodes == 1


def test_long_gop_cuts_are_found_mid_gop_by_the_refs_scan(long_gop):
    decoded = single_pass(long_gop, "refs")
    assert [round(s.start_s, 2) for s in decoded.scenes[1:]] == [8.0, 15.0]
    # Only the frames around candidates are decoded twice; the rest once, non-reference ones not at all.
    assert decoded.frames_decoded + decoded.frames_redecoded < 24 * 25


def test_long_gop_cuts_are_found_mid_gop_by_the_gops_scan(long_gop):
    decoded = single_pass(long_gop, "gops")
    assert [round(s.start_s, 2) for s in decoded.scenes[1:]] == [8.0, 15.0]
    assert decoded.frames_decoded + decoded.frames_redecoded < 24 * 25


# bikes.mp4's real cuts, re-encoded so that they fall inside GOPs the "gops" scan has to look into:
# long GOPs without scene-cut keyframes, open GOPs, HEVC (B-frames that P-frames need), no B-frames,
# VP9 in WebM (whose container adds a chroma siting that a fresh decoder would not know).
REENCODINGS = {
    "h264_long_gop": ["-c:v", "libx264", "-g", "100", "-keyint_min", "100", "-sc_threshold", "0"],
    "h264_open_gop": ["-c:v", "libx264", "-g", "50", "-sc_threshold", "0", "-x264-params", "open-gop=1"],
    "h264_no_bframes": ["-c:v", "libx264", "-g", "250", "-bf", "0", "-sc_threshold", "0"],
    "hevc_long_gop": ["-c:v", "libx265", "-x265-params", "keyint=100:min-keyint=100:scenecut=0:log-level=error"],
    "vp9_webm": ["-c:v", "libvpx-vp9", "-b:v", "400k", "-g", "100", "-deadline", "realtime", "-cpu-used", "8"],
}


@pytest.mark.parametrize("encoding", REENCODINGS)
def test_gops_scan_finds_the_full_scans_real_cuts_in_other_encodings(encoding, tmp_path):
    path = tmp_path / f"bikes_{encoding}.{'webm' if encoding.endswith('webm') else 'mp4'}"
    preset = [] if encoding.startswith("vp9") else ["-preset", "veryfast"]
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(SAMPLES / "videos" / "bikes.mp4"), "-an",
                    *preset, *REENCODINGS[encoding], str(path)], check=True)
    scenes, times, _, captions = separate_stages(path)
    gops = single_pass(path, "gops")
    assert len(scenes) == 6 and gops.scenes == scenes and gops.timeline == times
    assert_same_frames(gops.captions, captions)


def test_gops_scan_passes_calm_gops_with_one_keyframe_decode(tmp_path):
    """Still shots (one GOP each side of a cut, more within) cost a keyframe per calm GOP; the
    cuts, scores and caption frames are still the full scan's."""
    path = tmp_path / "calm.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-t", "9", "-f", "lavfi", "-i", "color=c=0x2060a0:size=320x240:rate=25",
                    "-t", "7", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
                    "-filter_complex", "[0:v]drawgrid=w=40:h=40:t=2:c=white[a];[1:v]hue=s=0[b];"
                    "[a][b]concat=n=2:v=1:a=0,format=yuv420p[v]", "-map", "[v]",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-keyint_min", "25",
                    "-sc_threshold", "0", str(path)], check=True)
    scenes, times, _, captions = separate_stages(path)
    decoded = single_pass(path, "gops")
    assert decoded.scenes == scenes and [round(s.start_s, 2) for s in scenes[1:]] == [9.0]
    assert decoded.timeline == times
    assert_same_frames(decoded.captions, captions)
    # 16 GOPs: the still shot's keyframes do not differ, testsrc's only by its counter digits.
    assert decoded.frames_decoded < 16 + 3 * 25  # 16 keyframes, the I/P frames of at most 3 GOPs


def test_caption_requests_are_the_ones_the_separate_stage_makes():
    path = SAMPLES / "videos" / "generated_six_scenes.mp4"
    scenes, _, _, captions = separate_stages(path)
    decoded = single_pass(path, "gops")
    video = Video(video_id="v", source="web", uri="x", path="videos/v.mp4", sha256="0" * 64, bytes=1,
                  duration_s=scenes[-1].end_s, fps=25, width=320, height=240, codec="h264", has_audio=True)
    for scene in scenes:
        want = caption_request(video, scene, *captions[scene.scene_id], CAPTIONS)
        got = caption_request(video, scene, *decoded.captions[scene.scene_id], CAPTIONS)
        assert got.messages == want.messages


def test_packets_over_the_cap_fall_back_to_reading_the_file_with_the_same_answer():
    path = SAMPLES / "videos" / "bikes.mp4"
    scenes, times, _, captions = separate_stages(path)
    for scan in ("refs", "gops"):
        decoded = decode_video(path, "v", None, SceneConfig(scan=scan), None,
                               lambda found: caption_frame_times(found, CAPTIONS), CAPTIONS.caption_max_pixels,
                               max_packet_bytes=10_000)
        assert decoded.scenes == scenes and decoded.timeline == times
        assert_same_frames(decoded.captions, captions)
        assert decoded.decodes == 3  # the pass, the full scan, the frames


def test_without_caption_times_no_caption_frame_is_decoded():
    decoded = decode_video(SAMPLES / "videos" / "bikes.mp4", "v", None, SceneConfig(scan="refs"))
    assert decoded.captions is None and decoded.timeline == frame_timeline(10.0)


@pytest.mark.parametrize("name", ["empty.mp4", "not_a_video.mp4", "truncated.mp4"])
def test_bad_inputs_are_the_scene_stages_skips(name):
    path = SAMPLES / "bad" / name
    want = detect_scenes(path, "v")
    for scan in ("refs", "gops"):
        got = decode_video(path, "v", None, SceneConfig(scan=scan))
        assert isinstance(got, Skip) and (got.stage, got.reason) == (want.stage, want.reason), scan


def test_a_passed_deadline_is_a_skip():
    got = decode_video(SAMPLES / "videos" / "bikes.mp4", "v", None, deadline=0.0)
    assert isinstance(got, Skip) and got.reason == "deadline"
