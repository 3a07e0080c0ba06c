"""probe_video and admit on real files: the samples, and bad files made here with ffmpeg."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio_ffmpeg
import pytest

from curation.skips import Skip
from curation.video.probe import (
    AdmissionConfig,
    AdmissionRules,
    VideoProbe,
    admit,
    main,
    probe_video,
)
from tests.conftest import ROOT, SAMPLES

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Bad and extreme videos, each a real file the probe has to read."""
    out = tmp_path_factory.mktemp("probe-videos")
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", "-f", "mp4", str(out / "audio_only.mp4"))
    # 10 h at one frame per 10 minutes: 60 tiny frames, a 2 KB file with a 36000 s container duration
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16:r=1/600:d=36000", *x264, str(out / "ten_hours.mp4"))
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=7680x4320:r=1", "-frames:v", "1", *x264, str(out / "8k.mp4"))
    ffmpeg("-f", "lavfi", "-i", "color=c=green:s=64x64:r=25", "-frames:v", "1", *x264, str(out / "one_frame.mp4"))
    # 0 s: zero the durations in mvhd, tkhd and mdhd (all version 0 boxes in ffmpeg's output)
    data = bytearray((out / "one_frame.mp4").read_bytes())
    for box, offset in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16)):
        at = data.find(box) + 4 + offset
        data[at:at + 4] = bytes(4)
    (out / "zero_duration.mp4").write_bytes(bytes(data))
    # variable frame rate: 60 frames at 30 fps, then 60 at 10 fps (8 s, 15 fps on average)
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=30:d=4", "-vf", "setpts='if(lt(N,60),N/30,2+(N-60)/10)/TB'",
           "-fps_mode", "vfr", *x264, str(out / "vfr.mp4"))
    # intact header and index, every sample byte overwritten: opens, but no frame decodes
    data = bytearray((SAMPLES / "videos/bikes.mp4").read_bytes())
    start, end = data.find(b"mdat") + 4, data.rfind(b"moov") - 8
    data[start:end] = b"\xff" * (end - start)
    (out / "garbled.mp4").write_bytes(bytes(data))
    return out


def test_probe_reads_the_real_samples():
    bikes = probe_video(SAMPLES / "videos/bikes.mp4")
    assert isinstance(bikes, VideoProbe)
    assert (bikes.width, bikes.height, bikes.codec, bikes.has_audio) == (640, 272, "h264", False)
    assert bikes.duration_s == pytest.approx(10.0, abs=0.05) and bikes.fps == pytest.approx(25.0)
    bunny = probe_video(SAMPLES / "videos/bigbuckbunny.mp4")
    assert bunny.has_audio and (bunny.width, bunny.height) == (1280, 720)


@pytest.mark.parametrize("name, reason", [
    ("empty.mp4", "empty_file"),
    ("not_a_video.mp4", "not_video"),
    ("truncated.mp4", "truncated"),
])
def test_bad_samples_are_skips_with_their_reason(name, reason):
    result = probe_video(SAMPLES / "bad" / name)
    assert isinstance(result, Skip) and result.stage == "probe"
    assert result.reason == reason and name in result.detail


def test_missing_file_is_a_skip(tmp_path):
    assert probe_video(tmp_path / "nope.mp4").reason == "not_found"


def test_audio_only_mp4_has_no_video_stream(made):
    result = probe_video(made / "audio_only.mp4")
    assert isinstance(result, Skip) and result.reason == "no_video_stream"
    assert "audio" in result.detail


def test_file_whose_frames_do_not_decode_is_undecodable(made):
    result = probe_video(made / "garbled.mp4")
    assert isinstance(result, Skip) and result.reason == "undecodable"


def test_variable_frame_rate_reports_the_average_rate(made):
    probe = probe_video(made / "vfr.mp4")
    assert probe.frames == 120 and probe.duration_s == pytest.approx(8.0, abs=0.1)
    assert probe.fps == pytest.approx(probe.frames / probe.duration_s, rel=0.02)  # not the 30 fps base rate


def test_zero_duration_video_probes_and_is_not_admitted(made):
    probe = probe_video(made / "zero_duration.mp4")
    assert isinstance(probe, VideoProbe) and probe.duration_s == 0.0
    assert admit(probe, "web", AdmissionConfig()).reason == "zero_duration"


def test_ten_hour_video_is_too_long(made):
    probe = probe_video(made / "ten_hours.mp4")
    assert isinstance(probe, VideoProbe)
    assert probe.duration_s == pytest.approx(36000.0, rel=1e-3)
    lenient = AdmissionConfig(min_height=0)
    skip = admit(probe, "web", lenient)
    assert skip.stage == "admit" and skip.reason == "too_long" and "600" in skip.detail


def test_8k_video_is_too_high(made):
    probe = probe_video(made / "8k.mp4")
    assert (probe.width, probe.height) == (7680, 4320)
    assert admit(probe, "web", AdmissionConfig(min_duration_s=0)).reason == "resolution_too_high"


def test_livecc_defaults_reject_short_and_low_clips():
    bikes = probe_video(SAMPLES / "videos/bikes.mp4")
    assert admit(bikes, "web", AdmissionConfig()).reason == "too_short"
    assert admit(bikes, "web", AdmissionConfig(min_duration_s=5)).reason == "resolution_too_low"


def test_per_source_override_changes_only_the_fields_it_names():
    cfg = AdmissionConfig.model_validate(
        {"max_duration_s": 100, "per_source": {"sample-real": {"min_duration_s": 4, "min_height": 240}}})
    rules = cfg.rules_for("sample-real")
    assert (rules.min_duration_s, rules.min_height, rules.max_duration_s) == (4, 240, 100)
    assert cfg.rules_for("web") == AdmissionRules(max_duration_s=100)
    bikes = probe_video(SAMPLES / "videos/bikes.mp4")
    assert admit(bikes, "sample-real", cfg) is None
    assert admit(bikes, "web", cfg).reason == "too_short"


def test_portrait_video_is_judged_on_its_short_side():
    portrait = VideoProbe(duration_s=60, fps=30, width=480, height=854, codec="h264", has_audio=True,
                          container="mp4")
    assert admit(portrait, "web") is None
    assert admit(portrait.model_copy(update={"width": 360}), "web").reason == "resolution_too_low"


def test_cli_prints_probe_json_and_exits_1_on_a_skip(capsys):
    assert main([str(SAMPLES / "videos/bikes.mp4")]) == 0
    assert json.loads(capsys.readouterr().out)["width"] == 640
    assert main([str(SAMPLES / "bad/not_a_video.mp4")]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "not_video"


def test_cli_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "curation.video.probe", str(SAMPLES / "bad/empty.mp4")],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and json.loads(done.stdout)["reason"] == "empty_file"
