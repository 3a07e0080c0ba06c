"""read_source_segments on the sample CSVs, WhisperX JSON and Ego4D-style narrations."""

from __future__ import annotations

import json

import pytest

from curation.skips import Skip
from curation.text.source_text import (
    LAST_POINT_SPAN_S,
    clip_segments,
    read_source_segments,
    read_source_text,
)
from schemas.records import Segment
from tests.conftest import SAMPLES


def spans(segments: list[Segment]) -> list[tuple[float, float, str]]:
    return [(s.start_s, s.end_s, s.text) for s in segments]


def test_sample_csv_becomes_ordered_segments():
    segments = read_source_segments(SAMPLES / "text/bikes.csv", "bikes", origin="narration")
    assert [s.segment_id for s in segments[:3]] == ["bikes-s0000", "bikes-s0001", "bikes-s0002"]
    assert spans(segments)[1] == (1.2, 3.0, "A man in a dark suit and tie walks between parked cars on a busy street.")
    assert all(a.start_s <= b.start_s for a, b in zip(segments, segments[1:], strict=False))
    assert {s.origin for s in segments} == {"narration"} and {s.video_id for s in segments} == {"bikes"}


def test_whisperx_json_sorted_cleaned_and_counted(tmp_path):
    path = tmp_path / "asr.json"
    path.write_text(json.dumps({"language": "en", "segments": [
        {"start": 5.0, "end": 7.5, "text": " and then   it rolls away."},
        {"start": 0.5, "end": 2.0, "text": " Hello there."},
        {"start": 2.0, "end": 3.0, "text": "   "},
        {"start": 3.0, "text": "no end time"},
        {"start": 4.0, "end": 3.5, "text": "reversed"},
        {"start": -0.5, "end": 0.4, "text": "before zero"},
        {"start": "nan", "end": 9.0, "text": "not a number"},
    ]}))
    parsed = read_source_text(path, "v1")
    assert spans(parsed.segments) == [(0.0, 0.4, "before zero"), (0.5, 2.0, "Hello there."),
                                      (5.0, 7.5, "and then it rolls away.")]
    assert [s.segment_id for s in parsed.segments] == ["v1-s0000", "v1-s0001", "v1-s0002"]
    assert {s.origin for s in parsed.segments} == {"asr"}  # inferred from the format
    assert (parsed.dropped_blank, parsed.dropped_invalid, parsed.clipped) == (1, 3, 1)


def test_narration_points_become_spans_to_the_next_point(tmp_path):
    path = tmp_path / "narr.json"
    path.write_text(json.dumps([
        {"timestamp_sec": 10.0, "narration_text": "#C C cuts the onion"},
        {"timestamp_sec": 2.0, "narration_text": "#C C picks up a knife"},
        {"timestamp_sec": 6.0, "narration_text": "#C C opens the fridge"},
        {"timestamp_sec": 8.0, "narration_text": ""},
    ]))
    segments = read_source_segments(path, "ego1", "narration")
    # ends at the next timed narration; the last one gets the median gap (4 s)
    assert spans(segments) == [(2.0, 6.0, "#C C picks up a knife"), (6.0, 10.0, "#C C opens the fridge"),
                               (10.0, 14.0, "#C C cuts the onion")]
    with_duration = read_source_segments(path, "ego1", "narration", duration_s=11.0)
    assert with_duration[-1].end_s == 11.0


def test_ego4d_nested_narrations_and_time_text_keys(tmp_path):
    nested = tmp_path / "ego4d.json"
    nested.write_text(json.dumps({"uid-1": {"narration_pass_1": {"narrations": [
        {"timestamp_sec": 1.0, "narration_text": "C walks in"}]}}}))
    only = read_source_segments(nested, "e", text_format=None)  # detected as narration
    assert spans(only) == [(1.0, 1.0 + LAST_POINT_SPAN_S, "C walks in")]
    simple = tmp_path / "simple.json"
    simple.write_text(json.dumps([{"time": 0, "text": "start"}, {"time": 3, "text": "stir"},
                                  {"time": 3, "text": "add salt"}, {"time": 5, "text": "serve"}]))
    got = spans(read_source_segments(simple, "e"))
    assert got == [(0.0, 3.0, "start"), (3.0, 5.0, "add salt"), (3.0, 5.0, "stir"), (5.0, 7.5, "serve")]


@pytest.mark.parametrize("name, body, fmt, reason", [
    ("broken.json", '{"segments": [', None, "bad_text_format"),
    ("wrong.json", '{"results": []}', "whisperx", "bad_text_format"),
    ("header.csv", "begin,finish,words\n1,2,hi\n", None, "bad_text_format"),
    ("blank.csv", "start,end,text\n0,1,\n1,2,   \n", None, "no_segments"),
    ("times.csv", "start,end,text\nx,1,hi\n3,2,hi\n", "csv", "no_segments"),
])
def test_broken_text_files_are_skips(tmp_path, name, body, fmt, reason):
    (tmp_path / name).write_text(body)
    result = read_source_segments(tmp_path / name, "v", fmt)
    assert isinstance(result, Skip) and result.stage == "source_text" and result.reason == reason
    assert name in result.detail


def test_missing_file_and_bad_origin_are_skips(tmp_path):
    assert read_source_segments(tmp_path / "nope.csv", "v").reason == "text_not_found"
    assert read_source_segments(SAMPLES / "text/bikes.csv", "v", origin="caption").reason == "bad_text_origin"


def test_clip_segments_to_the_probed_duration():
    segments = read_source_segments(SAMPLES / "text/generated_four_scenes.csv", "g")
    clipped = clip_segments(segments, 20.0)
    assert spans(clipped) == [(0.0, 9.0, segments[0].text), (9.0, 18.0, segments[1].text),
                              (18.0, 20.0, segments[2].text)]
    assert clipped[2].segment_id == segments[2].segment_id
    assert clip_segments(segments, 0.0) == []
