"""read_manifest on the sample and on hand-made JSONL, CSV and Parquet files full of bad rows."""

from __future__ import annotations

import json
import re
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


def test_a_utf8_byte_order_mark_is_read_as_no_character(tmp_path):
    # What spreadsheet exports write: without this every row was `missing_id`.
    (tmp_path / "m.csv").write_bytes("\ufeffvideo_id,uri\nv1,clips/v1.mp4\n".encode())
    (tmp_path / "m.jsonl").write_bytes(("\ufeff" + json.dumps({"video_id": "v1", "uri": "v1.mp4"}) + "\n").encode())
    for name in ("m.csv", "m.jsonl"):
        read = read_manifest(tmp_path / name)
        assert [r.video_id for r in read.rows] == ["v1"] and read.skips == [] and read.problem == ""


@pytest.mark.parametrize(("rows", "expected"), [
    ([{"video_id": "a", "url": "a.mp4"}, {"video_id": "b", "url": "b.mp4"}],
     "no row has a `uri` column; it has `url` (did you mean `uri`?"),
    ([{"vidoe_id": "a", "uri": "a.mp4"}], "no row has a `video_id` column; it has `vidoe_id` (did you mean `video_id`?"),
    ([{"video_id": "../a", "uri": "a.mp4"}], "no usable row (1 unsafe_id"),
])
def test_a_manifest_no_build_could_use_is_one_line_naming_the_fix(tmp_path, rows, expected):
    from curation.manifest import require_usable
    from schemas.cli import UsageError

    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert expected in read_manifest(path).problem
    with pytest.raises(UsageError, match=re.escape(expected)):
        require_usable(path)


def test_trailing_commas_on_every_line_are_a_file_problem_not_an_empty_corpus(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"video_id": "a", "uri": "a.mp4",}\n{"video_id": "b", "uri": "b.mp4",}\n')
    problem = read_manifest(path).problem
    assert "none of its 2 rows can be read" in problem and "no trailing commas" in problem
    path.write_text('{"video_id": "a", "uri": "a.mp4"}\n{"video_id": "b", "uri": "b.mp4",}\n')
    read = read_manifest(path)  # one bad line among good ones stays a quarantined row
    assert read.problem == "" and reasons(read) == {"m.jsonl:line 2": "unreadable_row"}


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_a_truncated_or_empty_parquet_manifest_is_one_line(tmp_path, keep):
    from curation.manifest import require_usable
    from schemas.cli import UsageError

    pq.write_table(pa.table({"video_id": [f"v{i}" for i in range(200)], "uri": ["x.mp4"] * 200}), tmp_path / "m.parquet")
    data = (tmp_path / "m.parquet").read_bytes()
    (tmp_path / "m.parquet").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UsageError) as failure:
        require_usable(tmp_path / "m.parquet")
    assert str(failure.value).startswith("manifest m.parquet: not a readable Parquet file (")
    assert "\n" not in str(failure.value)


def test_schemas_validate_checks_a_manifest_as_manifest_rows(tmp_path, capsys):
    from schemas.__main__ import main

    assert main(["validate", str(SAMPLES / "manifest.jsonl")]) == 1  # the sample's unsafe id, nothing else
    out = capsys.readouterr().out.splitlines()
    rows = len((SAMPLES / "manifest.jsonl").read_text().splitlines())
    assert out[0].startswith(f"../escape: manifest row: unsafe_id: line {rows}") and len(out) == 2
    assert out[-1] == f"{rows} records checked, {rows - 1} valid, 1 with problems (1 problems)"
    (tmp_path / "m.jsonl").write_text(json.dumps({"video_id": "a", "url": "a.mp4"}) + "\n")
    assert main(["validate", str(tmp_path / "m.jsonl")]) == 1
    assert "did you mean `uri`?" in capsys.readouterr().out
