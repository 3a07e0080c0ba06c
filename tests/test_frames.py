from pathlib import Path

import av
import numpy as np
import pytest

from curation.video.frames import FrameDecodeError, decode_frames, frame_timeline, smart_resize
from curation.video.synthetic import make_video


def test_timeline_every_two_seconds_strictly_inside_the_video_and_capped():
    assert frame_timeline(10.0) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert frame_timeline(10.5) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert frame_timeline(5.0, 1.0, 3) == [0.0, 1.0, 2.0]
    assert len(frame_timeline(600.0)) == 90 and frame_timeline(600.0)[-1] == 178.0
    assert frame_timeline(0.0) == [] and frame_timeline(float("nan")) == []


@pytest.mark.parametrize("height,width,budget", [(272, 640, 128 * 28 * 28), (1080, 1920, 128 * 28 * 28),
                                                 (240, 320, 112 * 112), (20, 30, 128 * 28 * 28)])
def test_smart_resize_keeps_the_qwen_rules(height, width, budget):
    h, w = smart_resize(height, width, budget)
    assert h % 28 == 0 and w % 28 == 0
    assert 28 * 28 <= h * w <= max(budget, 56 * 56 * 4)  # Qwen floors below its minimum at tiny budgets
    assert abs(w / h - width / height) / (width / height) < 0.35


def _dense(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def test_each_timestamp_gets_the_first_frame_at_or_after_it_through_seeks(tmp_path):
    # 30 s with sparse wanted times: the decoder seeks across the gaps; it must still pick
    # exactly the frame a dense decode would.
    path = tmp_path / "long.mp4"
    make_video(path, [10, 10, 10], size=(112, 112), fps=10)
    dense = _dense(path)
    times = [0.0, 0.55, 9.0, 17.3, 29.0, 5.0]
    frames = decode_frames(path, times, 112 * 112)
    for t, got in zip(times, frames, strict=True):
        expected = next(img for ft, img in dense if ft + 0.05 >= t)
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2.0, t


def test_real_clip_frames_are_resized_to_the_budget(samples_dir):
    frames = decode_frames(samples_dir / "videos" / "bikes.mp4", frame_timeline(10.0), 128 * 28 * 28)
    assert len(frames) == 5
    assert all(f.dtype == np.uint8 and f.shape == (196, 476, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[-1])


@pytest.mark.parametrize("name", ["empty.mp4", "not_a_video.mp4", "truncated.mp4"])
def test_bad_files_raise_a_named_error(samples_dir, name):
    with pytest.raises(FrameDecodeError, match=name):
        decode_frames(samples_dir / "bad" / name, frame_timeline(10.0), 56 * 56)
