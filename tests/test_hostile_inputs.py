"""Issue 14's reproductions, one test each: inputs that used to hang a stage, raise past their row,
or end with the wrong reason. Each hang test runs under a pytest timeout so a regression fails
instead of hanging the suite."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from curation.config import WatchdogConfig
from curation.corpus.catalogue import entry_of
from curation.corpus.results import VideoResult, read_result, write_result
from curation.corpus.reuse import redo_reason, row_inputs
from curation.manifest import ManifestRow, read_manifest
from curation.text.dialogue_validation import dialogue_problems
from curation.text.dialogues import DialogueConfig
from curation.text.source_text import read_source_text
from curation.video.acquire import AcquireConfig, acquire_video
from curation.video.frames import decode_frames, frame_timeline, smart_resize
from curation.video.probe import probe_video
from curation.video.scenes import detect_scenes
from curation.watchdog import StageTimeout, checkpoint, stage_budget
from flows.build_corpus import _manifest_skip_result, store_result
from flows.video_pipeline import VideoRun, _Stopped
from schemas.records import MAX_VIDEO_ID_CHARS, Dialogue, Segment
from tests.hostile_inputs import HostileServer, make_hostile_videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_hostile_videos(tmp_path_factory.mktemp("hostile"))


def _dense(path: Path, max_pixels: int) -> list[tuple[float, np.ndarray]]:
    """Every frame, resized as `decode_frames` resizes them."""
    with av.open(str(path)) as container:
        out = []
        for frame in container.decode(video=0):
            h, w = smart_resize(frame.height, frame.width, max_pixels)
            out.append((frame.time, frame.to_ndarray(format="rgb24", width=w, height=h)))
        return out


def _expected(dense, t: float) -> np.ndarray:
    """The first frame shown at or after t (the last one past the end)."""
    return next((img for ft, img in dense if ft + 0.02 >= t), dense[-1][1])


# --- 1. the decoder -------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_long_keyframe_gap_does_not_loop_the_decoder(videos):
    # The case: a wanted time more than the seek-ahead margin past the keyframe before it.
    path = videos["long_gop"]
    dense = _dense(path, 160 * 120)
    times = [0.0, 16.0, 17.0, 29.0, 5.5]
    with stage_budget("frames", 60):  # a regression raises StageTimeout, not a hang
        frames = decode_frames(path, times, 160 * 120)
    for t, got in zip(times, frames, strict=True):
        want = _expected(dense, t)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 2.0, t


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["vfr_one_keyframe", "held_frame", "sparse_long", "long_gop"])
def test_every_timeline_decodes_to_the_frames_a_dense_pass_shows(videos, name):
    path = videos[name]
    probe = probe_video(path)
    times = frame_timeline(probe.duration_s)
    with stage_budget("frames", 60):
        frames = decode_frames(path, times, 160 * 120)
    dense = _dense(path, 160 * 120)
    assert len(frames) == len(times) > 0
    for t, got in zip(times, frames, strict=True):
        want = _expected(dense, t)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 2.0, (name, t)


def test_the_decoder_checks_its_budget(videos):
    with stage_budget("frames", 0.0), pytest.raises(StageTimeout):
        decode_frames(videos["sparse_long"], frame_timeline(600.0), 64 * 64)


# --- 5. durations ---------------------------------------------------------------------------------
def test_audio_longer_than_the_picture_is_not_a_truncated_video(videos):
    probe = probe_video(videos["audio_longer"])
    assert probe.duration_s == pytest.approx(8.0, abs=0.2) and probe.has_audio
    scenes = detect_scenes(videos["audio_longer"], "a", None, probe.duration_s)
    assert isinstance(scenes, list) and scenes[-1].end_s == pytest.approx(probe.duration_s)


def test_a_header_that_claims_far_more_than_the_file_holds_is_caught_by_the_probe(videos):
    skip = probe_video(videos["header_lies"])
    assert (skip.stage, skip.reason) == ("probe", "truncated") and "10.00 s of a stated 300" in skip.detail


# --- 2, 3, 4. the manifest ------------------------------------------------------------------------
def _read(tmp_path: Path, *rows: str):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return read_manifest(path)


@pytest.mark.parametrize("metadata", ["[1, 2]", "5", "true", '"not json"', '[["a"]]', "[[1, 2, 3]]"])
def test_metadata_that_is_not_an_object_quarantines_its_row(tmp_path, metadata):
    read = _read(tmp_path, f'{{"video_id": "m", "uri": "m.mp4", "metadata": {metadata}}}',
                 '{"video_id": "ok", "uri": "ok.mp4"}')
    assert [r.video_id for r in read.rows] == ["ok"]
    assert [(q.item_id, q.reason) for q in read.skips] == [("m", "invalid_row")]
    assert "metadata" in read.skips[0].detail


def test_lone_surrogates_quarantine_the_row_and_the_quarantine_row_can_be_written(tmp_path):
    read = _read(tmp_path, '{"video_id": "bad\\ud800id", "uri": "x.mp4"}',
                 '{"video_id": "lic", "uri": "x.mp4", "licence": "CC\\udfff"}',
                 '{"video_id": "meta", "uri": "x.mp4", "note": "\\ud800"}',
                 '{"video_id": "ok", "uri": "x.mp4", "licence": "CC-BY-4.0"}')
    assert [r.video_id for r in read.rows] == ["ok"]
    assert sorted(q.reason for q in read.skips) == ["invalid_row", "invalid_row", "unsafe_id"]
    for skip in read.skips:
        result = _manifest_skip_result(skip, "fp")
        write_result(tmp_path / "results", result)
        assert read_result(tmp_path / "results", result.video_id) is not None
    assert "\ud800" not in json.dumps([q.detail for q in read.skips], ensure_ascii=False)


def test_control_characters_and_overlong_fields_quarantine_the_row(tmp_path):
    read = _read(tmp_path, json.dumps({"video_id": "c", "uri": "x\u0000.mp4"}),
                 json.dumps({"video_id": "l", "uri": "x.mp4", "licence": "x" * 5000}),
                 json.dumps({"video_id": "t", "uri": ["a", "list"]}),
                 json.dumps({"video_id": True, "uri": "x.mp4"}),
                 "[" * 100000)
    assert read.rows == []
    assert sorted(q.reason for q in read.skips) == ["invalid_row"] * 4 + ["unreadable_row"]


@pytest.mark.parametrize("length", [MAX_VIDEO_ID_CHARS + 1, 155, 160])
def test_ids_too_long_for_their_derived_ids_are_refused_at_the_manifest(tmp_path, length):
    read = _read(tmp_path, json.dumps({"video_id": "v" * length, "uri": "x.mp4"}))
    assert read.rows == [] and [q.reason for q in read.skips] == ["id_too_long"]


def test_the_longest_accepted_id_leaves_room_for_every_derived_id(tmp_path, make_dialogue_row):
    video_id = "v" * MAX_VIDEO_ID_CHARS
    read = _read(tmp_path, json.dumps({"video_id": video_id, "uri": "x.mp4"}))
    assert [r.video_id for r in read.rows] == [video_id]
    Segment(segment_id=f"{video_id}-s123456", video_id=video_id, start_s=0, end_s=1, text="x", origin="caption")
    row = make_dialogue_row(dialogue_id=f"{video_id}-d12", video_id=video_id)
    for turn, ref in zip(row["user_turns"], row["references"], strict=True):
        turn["question_id"] = ref["question_id"] = f"{video_id}-d12-q{turn['time_s']:.0f}"
    Dialogue.model_validate(row)


def test_a_csv_manifest_line_with_an_unclosed_quote_costs_only_that_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('video_id,uri\na,a.mp4\nb,"b.mp4\nc,c.mp4\nd,d\x00.mp4\ne,e.mp4\n')
    read = read_manifest(path)
    assert [r.video_id for r in read.rows] == ["a", "c", "e"]
    assert sorted((q.item_id, q.reason) for q in read.skips) == [("m.csv:line 3", "unreadable_row"),
                                                                 ("m.csv:line 5", "unreadable_row")]


def test_an_unstorable_result_becomes_a_crash_row(tmp_path):
    # A value no stage should let through: a lone surrogate in a record built without validation.
    segment = Segment.model_construct(segment_id="v-s0000", video_id="v", start_s=0.0, end_s=1.0,
                                      text="bad\ud800", origin="caption", scene_id=None)
    result = VideoResult(video_id="v", config_fingerprint="fp", stage_durations_s={"x": 1.0})
    result.segments.append(segment)
    store_result(tmp_path, result)
    stored = read_result(tmp_path, "v")
    assert [(q.stage, q.reason, q.kind) for q in stored.quarantine] == [("results", "unstorable_result", "error")]


# --- 5. redirects, text files, generated text -----------------------------------------------------
@pytest.mark.parametrize("route,reason", [("to-file", "redirect_refused"), ("to-ftp", "redirect_refused"),
                                          ("loop-a", "redirect_loop")])
def test_redirects_that_no_rerun_can_fix_end_final(tmp_path, route, reason):
    with HostileServer() as server:
        skip = acquire_video(ManifestRow(video_id="r", uri=f"{server.url}/{route}"), tmp_path,
                             AcquireConfig(retries=2, backoff_s=0))
    assert (skip.stage, skip.reason) == ("acquire", reason)
    row = ManifestRow(video_id="r", uri=f"{server.url}/{route}")
    result = VideoResult(video_id="r", config_fingerprint="fp", inputs=row_inputs(row),
                         quarantine=[skip.to_quarantine("r", "r")])
    assert redo_reason(entry_of(result, "0" * 64), row, "fp", tmp_path) is None


@pytest.mark.timeout(60)
def test_a_download_that_never_ends_stops_at_its_budget(tmp_path):
    with HostileServer() as server, stage_budget("acquire", 1.0):
        with pytest.raises(StageTimeout):
            acquire_video(ManifestRow(video_id="t", uri=f"{server.url}/trickle.mp4"), tmp_path,
                          AcquireConfig(check_content_type=False))
    assert not [p for p in tmp_path.iterdir() if p.is_file() and not p.name.startswith(".")]


@pytest.mark.parametrize("text", ['start,end,text\n0,2,"an open quote\n2,4,swallowed\n4,6,too\n',
                                  "start,end,text\n0,2,fine\n2,4,a NUL\x00 byte\n",
                                  'start,end,text\n0,2,"closed later\n2,4,swallowed",x\n'])
def test_broken_csv_text_is_refused_not_merged_into_one_segment(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text)
    skip = read_source_text(path, "v")
    assert (skip.stage, skip.reason) == ("source_text", "bad_text_format"), skip


def test_a_text_file_in_no_known_format_is_described_not_quoted(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("SECRET-TOKEN-abc123 whatever this is\nmore\n")
    skip = read_source_text(path, "v")
    assert skip.reason == "bad_text_format" and "SECRET" not in skip.detail and "first line" in skip.detail


@pytest.mark.parametrize("answer,problem", [("At 00:12 a man walks past the cars.", "timestamp"),
                                            ("A man walks past, at 3 s.", "timestamp"),
                                            ("As bikes-s0001 shows, a man walks.", "segment id"),
                                            ("A man\x1b walks past the cars.", "control characters")])
def test_generated_text_with_timestamps_ids_or_control_characters_is_refused(make_dialogue_row, answer, problem):
    dialogue = Dialogue.model_validate(make_dialogue_row())
    dialogue = dialogue.model_copy(update={"references": [  # unvalidated, as the writer builds it
        dialogue.references[0].model_copy(update={"answer": answer}), *dialogue.references[1:]]})
    segments = [Segment(segment_id=f"bikes-s{i:04d}", video_id="bikes", start_s=i * 1.5, end_s=i * 1.5 + 1.5,
                        text="x", origin="caption") for i in range(7)]
    problems = dialogue_problems(dialogue, segments, DialogueConfig())
    assert any(problem in p for p in problems), problems


# --- the watchdog ---------------------------------------------------------------------------------
def test_a_stage_over_its_budget_is_quarantined_with_its_own_reason():
    run = VideoRun("v", WatchdogConfig(stage_base_s=0.05, stage_per_video_s=0.0))

    def spins() -> None:
        while True:
            checkpoint()

    with pytest.raises(_Stopped) as stopped:
        run.stage("scenes", spins)
    row = stopped.value.row
    assert (row.stage, row.reason, row.kind) == ("scenes", "stage_timeout", "skip") and "budget" in row.detail


@pytest.mark.timeout(60)
def test_a_stage_stuck_in_native_code_is_abandoned_and_the_batch_goes_on(tmp_path, monkeypatch):
    import flows.video_pool as pool
    from curation.config import CorpusConfig
    from flows.video_pipeline import Limits, PipelineContext

    release = threading.Event()

    def run_video(row, ctx, run):  # the real stage wrapper around a call that never checks its budget
        if row.video_id == "stuck":
            run.stage("scenes", release.wait, limit=ctx.limits.cpu)
        return VideoResult(video_id=row.video_id, config_fingerprint=ctx.fingerprint)

    monkeypatch.setattr(pool, "run_video", run_video)
    config = CorpusConfig(manifest="m.jsonl", workers={"cpu": 1},
                          watchdog={"stage_base_s": 0.2, "stage_per_video_s": 0, "grace_s": 0.2})
    limits = Limits.from_workers(config.workers)
    ctx = PipelineContext(config=config, corpus_root=tmp_path, client=None, limits=limits, fingerprint="fp")
    got: list[VideoResult] = []
    rows = [ManifestRow(video_id=v, uri="x.mp4") for v in ("stuck", "a", "b")]
    try:
        assert pool.run_videos(rows, ctx, workers=1, on_result=got.append)
    finally:
        release.set()
    by_id = {r.video_id: r for r in got}
    assert sorted(by_id) == ["a", "b", "stuck"]
    assert [(q.stage, q.reason) for q in by_id["stuck"].quarantine] == [("scenes", "stage_timeout")]
    assert limits.cpu.acquire(timeout=5)  # the stuck stage's slot was handed back
