"""Scene detection on real and generated clips, long-scene splitting, bad inputs, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from curation.skips import Skip
from curation.video.scenes import SceneConfig, build_scenes, detect_scenes, split_span
from curation.video.synthetic import make_video
from tests.conftest import ROOT, SAMPLES

BIKES = SAMPLES / "videos" / "bikes.mp4"
FRAME_S = 1 / 25  # both bikes.mp4 and the generated clips run at 25 fps
# Reference cuts of bikes.mp4: frames 30, 76, 137, 187 and 242 (0-based), found with
# `scenedetect -i samples/videos/bikes.mp4 detect-adaptive list-scenes` (detect-content agrees)
# and checked by eye on frames cut-2 .. cut+1 around each: every one is a hard cut between shots.
BIKES_CUTS_S = [1.20, 3.04, 5.48, 7.48, 9.68]


def starts(scenes) -> list[float]:
    return [scene.start_s for scene in scenes[1:]]


def assert_covers(scenes, duration_s: float) -> None:
    assert scenes[0].start_s == 0.0
    assert scenes[-1].end_s == pytest.approx(duration_s, abs=2 * FRAME_S)  # lavfi -t rounds to frames
    for before, after in zip(scenes, scenes[1:], strict=False):
        assert before.end_s == after.start_s
    assert [s.scene_id for s in scenes] == list(range(len(scenes)))


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_real_clip_cuts_match_reference_within_one_frame(detector):
    scenes = detect_scenes(BIKES, "bikes", SceneConfig(detector=detector))
    assert not isinstance(scenes, Skip), scenes
    assert starts(scenes) == pytest.approx(BIKES_CUTS_S, abs=FRAME_S)
    assert_covers(scenes, 10.0)
    assert {s.detector for s in scenes} == {detector}
    assert all(s.score is not None and s.score > 0 for s in scenes[1:])


@pytest.fixture(scope="module")
def three_scenes(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenes") / "three.mp4"
    cuts = make_video(path, [3, 4, 5], size=(320, 240), fps=25)
    assert cuts == [3, 7]
    return path


def test_generated_video_cuts_at_known_times(three_scenes):
    scenes = detect_scenes(three_scenes, "gen3", SceneConfig())
    assert not isinstance(scenes, Skip), scenes
    assert starts(scenes) == pytest.approx([3.0, 7.0], abs=FRAME_S)
    assert_covers(scenes, 12.0)


def test_content_detector_finds_the_same_generated_cuts(three_scenes):
    scenes = detect_scenes(three_scenes, "gen3", SceneConfig(detector="content"))
    assert starts(scenes) == pytest.approx([3.0, 7.0], abs=FRAME_S)
    assert scenes[1].detector == "content"


@pytest.mark.parametrize("path", [BIKES, SAMPLES / "videos" / "generated_six_scenes.mp4"])
def test_keyframe_scan_finds_the_full_scans_cuts(path):
    full = detect_scenes(path, "v", SceneConfig(scan="full"))
    keyframes = detect_scenes(path, "v", SceneConfig(scan="keyframes"))
    assert starts(keyframes) == pytest.approx(starts(full), abs=FRAME_S)
    assert len(starts(full)) == 5


@pytest.mark.parametrize("length_s", [4, 4.5])  # cuts on a keyframe, and between two
def test_keyframe_scan_skips_calm_spans_yet_finds_the_cuts(tmp_path, length_s):
    # Static colour scenes with a keyframe every second: only the spans around the cuts differ.
    path = tmp_path / "calm.mp4"
    from curation.video.synthetic import ffmpeg_exe

    parts = ["color=c=navy", "color=c=darkred", "color=c=darkgreen"]
    inputs = [arg for src in parts for arg in ["-t", str(length_s), "-f", "lavfi", "-i", f"{src}:size=160x120:rate=25"]]
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *inputs, "-filter_complex",
                    "[0:v][1:v][2:v]concat=n=3:v=1:a=0,format=yuv420p[v]", "-map", "[v]", "-c:v", "libx264",
                    "-g", "25", "-sc_threshold", "0", str(path)], check=True)
    scenes = detect_scenes(path, "calm", SceneConfig(scan="keyframes"))
    assert starts(scenes) == pytest.approx([length_s, 2 * length_s], abs=FRAME_S)
    assert_covers(scenes, 3 * length_s)


def test_keyframe_scan_turns_bad_inputs_into_skips():
    for name in ("empty.mp4", "not_a_video.mp4", "truncated.mp4"):
        assert isinstance(detect_scenes(SAMPLES / "bad" / name, "bad", SceneConfig(scan="keyframes")), Skip)


def test_probe_duration_sets_the_end(three_scenes):
    scenes = detect_scenes(three_scenes, "gen3", SceneConfig(), duration_s=11.96)
    assert scenes[-1].end_s == pytest.approx(11.96)


def test_long_scenes_split_evenly(three_scenes):
    scenes = detect_scenes(three_scenes, "gen3", SceneConfig(max_scene_s=2.0))
    # 3 s -> 2 x 1.5 s, 4 s -> 2 x 2 s, 5 s -> 3 x 1.667 s
    lengths = [round(s.end_s - s.start_s, 2) for s in scenes]
    assert lengths == pytest.approx([1.5, 1.5, 2.0, 2.0, 1.67, 1.67, 1.67], abs=FRAME_S)
    assert [s.detector for s in scenes] == ["adaptive", "split-long", "adaptive", "split-long",
                                            "adaptive", "split-long", "split-long"]
    assert_covers(scenes, 12.0)


def test_split_span_uses_ceil_of_length_over_max():
    assert split_span(0.0, 20.0, 20.0) == [(0.0, 20.0)]
    assert len(split_span(0.0, 20.5, 20.0)) == 2
    assert split_span(10.0, 70.0, 20.0) == [(10.0, 30.0), (30.0, 50.0), (50.0, 70.0)]


def test_no_cuts_gives_one_scene_then_split(tmp_path):
    path = tmp_path / "one.mp4"
    make_video(path, [3], size=(160, 120), fps=25)
    assert [(s.start_s, s.end_s) for s in detect_scenes(path, "one", SceneConfig())] == [(0.0, 3.0)]
    split = detect_scenes(path, "one", SceneConfig(max_scene_s=1.0))
    assert [(s.start_s, s.end_s) for s in split] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]


def test_min_scene_length_drops_cuts_closer_than_it(tmp_path):
    path = tmp_path / "flash.mp4"
    make_video(path, [2, 0.4, 2], size=(160, 120), fps=25)  # a 0.4 s shot between two long ones
    default = detect_scenes(path, "flash", SceneConfig())
    assert len(default) == 2  # the 0.6 s default lets only one of the two cuts through
    short = detect_scenes(path, "flash", SceneConfig(min_scene_s=0.2))
    assert starts(short) == pytest.approx([2.0, 2.4], abs=FRAME_S)


def test_build_scenes_keeps_a_short_last_shot_and_drops_edge_cuts():
    cfg = SceneConfig()
    scenes = build_scenes("v", [(0.0, 9.0), (4.0, 30.0), (9.7, 40.0), (10.0, 50.0)], 10.0, cfg)
    assert [(s.start_s, s.end_s, s.score) for s in scenes] == [(0.0, 4.0, None), (4.0, 9.7, 30.0),
                                                             (9.7, 10.0, 40.0)]


def test_config_rejects_unknown_fields_and_detectors():
    with pytest.raises(ValidationError):
        SceneConfig(treshold=3)
    with pytest.raises(ValidationError):
        SceneConfig(detector="histogram")


@pytest.mark.parametrize(("name", "reason"), [("empty.mp4", "empty_file"), ("not_a_video.mp4", "not_video"),
                                              ("truncated.mp4", "truncated")])
def test_bad_inputs_become_skips(name, reason):
    result = detect_scenes(SAMPLES / "bad" / name, "bad", SceneConfig())
    assert isinstance(result, Skip)
    assert (result.stage, result.reason) == ("scenes", reason)
    assert name in result.detail


def test_missing_file_and_audio_only_are_skips(tmp_path):
    assert detect_scenes(tmp_path / "nope.mp4", "x").reason == "not_found"
    audio = tmp_path / "audio.m4a"
    from curation.video.synthetic import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1",
                    "-c:a", "aac", str(audio)], check=True)
    result = detect_scenes(audio, "x")
    assert isinstance(result, Skip) and result.reason == "no_video_stream"
    assert "audio" in result.detail


def test_cli_prints_pairs():
    cmd = [sys.executable, "-m", "curation.video.scenes", str(BIKES)]
    text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert text.splitlines()[0] == "[0.000, 1.200]"
    assert len(text.splitlines()) == 6
    pairs = json.loads(subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout)
    assert pairs[0] == [0.0, 1.2] and pairs[-1] == [9.68, 10.0]


def test_cli_reports_a_skip_and_exits_nonzero():
    cmd = [sys.executable, "-m", "curation.video.scenes", str(SAMPLES / "bad" / "empty.mp4")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert "scenes/empty_file" in done.stderr
