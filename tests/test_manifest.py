"""read_manifest on the sample and on hand-made JSONL, CSV and Parquet files full of bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from curation.manifest import ManifestRow, read_manifest
from tests.conftest import SAMPLES


def reasons(read) -> dict[str, str]:
    return {q.item_id: q.reason for q in read.skips}


def test_sample_manifest_rows_and_the_escaping_id():
    read = read_manifest(SAMPLES / "manifest.jsonl")
    ids = [r.video_id for r in read.rows]
    assert ids[:4] == ["bikes", "bigbuckbunny", "generated_four_scenes", "generated_six_scenes"]
    assert "../escape" not in ids and reasons(read) == {"../escape": "unsafe_id"}
    assert all(q.stage == "manifest" and q.kind == "skip" for q in read.skips)
    bikes = read.rows[0]
    assert Path(bikes.uri) == (SAMPLES / "videos/bikes.mp4").resolve() and Path(bikes.uri).is_file()
    assert Path(bikes.text_uri).is_file() and bikes.text_format == "csv" and bikes.text_origin == "narration"
    assert bikes.source == "sample-real" and bikes.licence.startswith("BSD-3-Clause")


def test_bad_jsonl_rows_are_quarantined_and_never_fatal(tmp_path):
    lines = [
        json.dumps({"video_id": "a", "uri": "a.mp4", "channel": "c1", "metadata": {"views": 3}}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"uri": "x.mp4"}),
        json.dumps({"video_id": "no_uri"}),
        json.dumps({"video_id": "a", "uri": "again.mp4"}),
        json.dumps({"video_id": "../../etc/passwd", "uri": "x.mp4"}),
        json.dumps({"video_id": "bad_sum", "uri": "x.mp4", "sha256": "xyz"}),
        json.dumps({"video_id": "bad_format", "uri": "x.mp4", "text_uri": "t.json", "text_format": "srt"}),
        "",
        json.dumps({"video_id": "b", "uri": "https://example.org/b.mp4", "source": "ego",
                    "text_uri": "https://example.org/b.json", "text_origin": "asr"}),
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    read = read_manifest(path)
    assert [r.video_id for r in read.rows] == ["a", "b"]
    got = sorted((q.item_id, q.reason) for q in read.skips)
    assert got == sorted([
        ("m.jsonl:line 2", "unreadable_row"), ("m.jsonl:line 3", "unreadable_row"),
        ("m.jsonl:line 4", "missing_id"), ("no_uri", "missing_uri"), ("a", "duplicate_id"),
        ("../../etc/passwd", "unsafe_id"), ("bad_sum", "invalid_row"), ("bad_format", "invalid_row"),
    ])
    first = read.rows[0]
    assert first.uri == str(tmp_path / "a.mp4")  # the first "a" wins
    assert first.metadata == {"views": "3", "channel": "c1"} and first.source == "web"
    assert read.rows[1].uri == "https://example.org/b.mp4" and read.rows[1].text_format is None
    duplicate = next(q for q in read.skips if q.reason == "duplicate_id")
    assert "line 1" in duplicate.detail and "line 6" in duplicate.detail


def test_csv_extra_columns_become_metadata(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("video_id,uri,source,licence,channel,text_uri,metadata\n"
                    'v1,clips/v1.mp4,web,CC-BY-4.0,news,text/v1.csv,"{""lang"": ""en""}"\n'
                    "v2,clips/v2.mkv,,,,,\n"
                    "v3,clips/v3.mp4,web,CC0,x,y,z,w\n"
                    ",clips/v4.mp4,,,,,\n"
                    "v5,clips/v5.mp4,,,,,not json\n")
    read = read_manifest(path)
    v1, v2 = read.rows
    assert v1.metadata == {"lang": "en", "channel": "news"} and v1.text_uri == str(tmp_path / "text/v1.csv")
    assert v1.text_format == "csv"
    assert (v2.source, v2.licence, v2.text_uri, v2.metadata) == ("web", None, None, {})
    assert reasons(read) == {"m.csv:line 4": "unreadable_row", "m.csv:line 5": "missing_id", "v5": "invalid_row"}


def test_parquet_manifest_with_a_map_metadata_column(tmp_path):
    table = pa.table({
        "video_id": ["p1", "p1", "p2"],
        "uri": ["/data/p1.mp4", "/data/dup.mp4", "s3://bucket/p2.mp4"],
        "metadata": pa.array([[("lang", "en")], [], None], type=pa.map_(pa.string(), pa.string())),
        "duration_hint": [12.5, 1.0, None],
    })
    pq.write_table(table, tmp_path / "m.parquet")
    read = read_manifest(tmp_path / "m.parquet")
    assert [r.video_id for r in read.rows] == ["p1", "p2"]
    assert read.rows[0].metadata == {"lang": "en", "duration_hint": "12.5"}
    assert reasons(read) == {"p1": "duplicate_id"}


def test_unknown_extension_and_missing_file_are_errors(tmp_path):
    with pytest.raises(ValueError, match="jsonl"):
        read_manifest(tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "missing.jsonl")


def test_rows_are_frozen():
    row = ManifestRow(video_id="a", uri="/a.mp4")
    with pytest.raises(ValidationError):
        row.video_id = "b"
