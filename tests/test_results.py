import hashlib
import json
import os
from datetime import UTC, datetime

import pytest

from curation.corpus import results as results_mod
from curation.corpus.results import (
    VideoResult,
    finished_ids,
    iter_results,
    read_result,
    result_path,
    write_result,
)
from schemas import Dialogue, Quarantine, Scene, Segment, Video, parse_record
from tests.conftest import dialogue_row

FIXED_TIME = datetime(2026, 11, 25, tzinfo=UTC)


def make_result(video_id: str, n_dialogues: int = 2, quarantined: int = 0) -> VideoResult:
    """A full, valid result for one 10 s video: real records with fixed timestamps."""
    video = Video(video_id=video_id, source="test", uri=f"http://example.test/{video_id}.mp4",
                  path=f"videos/{video_id}.mp4", sha256=hashlib.sha256(video_id.encode()).hexdigest(),
                  bytes=1000 + len(video_id), duration_s=10.0, fps=25.0, width=64, height=48,
                  codec="h264", has_audio=False, metadata={"title": f"video {video_id}"})
    segments = [Segment(segment_id=f"{video_id}-s{i:04d}", video_id=video_id, start_s=i * 2.0,
                        end_s=i * 2.0 + 1.5, text=f"{video_id} does thing {i}", origin="caption", scene_id=i // 2)
                for i in range(5)]
    scenes = [Scene(video_id=video_id, scene_id=0, start_s=0.0, end_s=4.0, detector="adaptive", score=None),
              Scene(video_id=video_id, scene_id=1, start_s=4.0, end_s=10.0, detector="adaptive", score=6.5)]
    dialogues = []
    for d in range(n_dialogues):
        row = dialogue_row(dialogue_id=f"{video_id}-mq-{d}", video_id=video_id)
        for turn, ref in zip(row["user_turns"], row["references"], strict=True):
            qid = turn["question_id"].replace("bikes-mq-0", f"{video_id}-mq-{d}")
            turn["question_id"] = ref["question_id"] = qid
        dialogues.append(parse_record(Dialogue, row))
    quarantine = [Quarantine(item_id=f"{video_id}-bad-{q}", video_id=video_id, stage="dialogues",
                             reason="window_outside_video", detail="end 12 s > 10 s", created_at=FIXED_TIME)
                  for q in range(quarantined)]
    return VideoResult(video_id=video_id, config_fingerprint="fp0", video=video, segments=segments,
                       scenes=scenes, dialogues=dialogues, quarantine=quarantine,
                       stage_durations_s={"probe": 0.25}, llm_usage={"prompt_tokens": 10})


def test_round_trip_and_sharded_path(tmp_path):
    result = make_result("vid-1", quarantined=1)
    path = write_result(tmp_path, result)
    shard = hashlib.sha1(b"vid-1").hexdigest()[:2]
    assert path == (tmp_path / shard / "vid-1.json").resolve()
    assert read_result(tmp_path, "vid-1") == result
    assert read_result(tmp_path, "vid-2") is None
    assert [p.name for p in path.parent.iterdir()] == ["vid-1.json"]  # no temp file left behind


def test_manifest_key_results_are_stored_like_videos(tmp_path):
    row = Quarantine(item_id="../escape", video_id="../escape", stage="manifest", reason="unsafe_id",
                     created_at=FIXED_TIME)
    result = VideoResult(video_id="manifest-0123456789ab", config_fingerprint="fp0", quarantine=[row])
    write_result(tmp_path, result)
    assert read_result(tmp_path, "manifest-0123456789ab") == result


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "..", "/abs", "", ".hidden"])
def test_unsafe_ids_never_name_a_file(tmp_path, bad_id):
    with pytest.raises(ValueError, match="unsafe id"):
        write_result(tmp_path / "results", VideoResult(video_id=bad_id, config_fingerprint="fp0"))
    assert read_result(tmp_path / "results", bad_id) is None
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],  # half-written
    lambda data: b"",
    lambda data: b"\xff\xfe not json",
    lambda data: json.dumps({"video_id": "vid-1"}).encode(),  # JSON, but not a result
    # a result whose dialogue breaks an invariant (window after the video's end)
    lambda data: data.replace(b"[7.5,10.0]", b"[7.5,12.0]"),
    # another video's result under this name
    lambda data: data.replace(b'"video_id":"vid-1"', b'"video_id":"vid-9"', 1),
])
def test_damaged_file_reads_as_absent_and_the_video_is_redone(tmp_path, damage):
    good = make_result("vid-1")
    path = write_result(tmp_path, good)
    write_result(tmp_path, make_result("vid-2"))
    data = path.read_bytes()
    assert b"[7.5,10.0]" in data and b'"video_id":"vid-1"' in data  # the damage below really changes it
    path.write_bytes(damage(data))
    assert read_result(tmp_path, "vid-1") is None
    assert [r.video_id for r in iter_results(tmp_path)] == ["vid-2"]
    assert finished_ids(tmp_path) == {"vid-2"}
    write_result(tmp_path, good)  # the redo replaces it
    assert read_result(tmp_path, "vid-1") == good
    assert finished_ids(tmp_path) == {"vid-1", "vid-2"}


def test_leftover_temp_file_from_a_crashed_write_is_ignored(tmp_path):
    path = write_result(tmp_path, make_result("vid-1"))
    (path.parent / ".tmp-vid-3-abc.part").write_text('{"video_id": "vid-3", "config_fing')
    (path.parent / ".tmp-vid-4.json").write_text("{}")
    assert finished_ids(tmp_path) == {"vid-1"}
    assert read_result(tmp_path, "vid-3") is None


def test_crash_during_replace_keeps_the_old_result_and_leaves_no_temp(tmp_path, monkeypatch):
    old = make_result("vid-1", n_dialogues=1)
    path = write_result(tmp_path, old)

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(results_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_result(tmp_path, make_result("vid-1", n_dialogues=3))
    monkeypatch.undo()
    assert read_result(tmp_path, "vid-1") == old
    assert os.listdir(path.parent) == ["vid-1.json"]


def test_iter_results_is_sorted_and_streams_every_video_once(tmp_path):
    ids = [f"v{i:03d}" for i in (17, 3, 250, 42, 8, 99, 1)]
    for video_id in ids:
        write_result(tmp_path, make_result(video_id, n_dialogues=1))
    write_result(tmp_path, make_result("v042", n_dialogues=2))  # rewritten, not duplicated
    got = list(iter_results(tmp_path))
    assert [r.video_id for r in got] == sorted(ids)
    assert len(next(r for r in got if r.video_id == "v042").dialogues) == 2
    assert result_path(tmp_path, "v003").parent.name == hashlib.sha1(b"v003").hexdigest()[:2]
    assert list(iter_results(tmp_path / "absent")) == []
