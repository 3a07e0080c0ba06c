import copy
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import (
    SCHEMA_VERSION,
    Dialogue,
    Quarantine,
    RecordError,
    Scene,
    SchemaVersionError,
    Segment,
    Video,
    arrow_schema,
    from_table,
    parse_record,
    read_parquet,
    to_table,
    write_parquet,
)
from schemas.arrow import VERSION_KEY
from schemas.llm_output import LLM_OUTPUTS, json_schema
from tests.conftest import ROOT, dialogue_row


def sample_records():
    video = Video(video_id="bikes", source="sample-real", uri="videos/bikes.mp4", path="videos/bikes.mp4",
                  sha256="a" * 64, bytes=509868, duration_s=10.0, fps=25.0, width=640, height=272,
                  codec="h264", has_audio=False, licence="BSD-3-Clause", metadata={"k": "v"})
    segments = [Segment(segment_id=f"bikes-s{i:04d}", video_id="bikes", start_s=i, end_s=i + 1.5,
                        text=f"segment {i}", origin="narration", scene_id=i if i % 2 else None)
                for i in range(3)]
    scenes = [Scene(video_id="bikes", scene_id=0, start_s=0, end_s=1.2, detector="adaptive", score=None),
              Scene(video_id="bikes", scene_id=1, start_s=1.2, end_s=10, detector="adaptive", score=7.5)]
    dialogue = parse_record(Dialogue, dialogue_row())
    quarantine = Quarantine(item_id="../escape", video_id="../escape", stage="manifest", reason="unsafe_id")
    return {Video: [video], Segment: segments, Scene: scenes, Dialogue: [dialogue], Quarantine: [quarantine]}


@pytest.mark.parametrize("cls", [Video, Segment, Scene, Dialogue, Quarantine])
def test_parquet_round_trip_is_lossless(cls, tmp_path):
    records = sample_records()[cls]
    path = tmp_path / f"{cls.table}.parquet"
    write_parquet(to_table(records, cls), path)
    back = from_table(read_parquet(path), cls)
    assert back == records
    assert pq.read_schema(path).metadata[VERSION_KEY] == SCHEMA_VERSION.encode()


def test_arrow_schema_is_derived_from_the_record_fields():
    for cls in (Video, Segment, Scene, Dialogue, Quarantine):
        assert arrow_schema(cls).names == list(cls.model_fields)
    refs = arrow_schema(Dialogue).field("references").type.value_type
    assert refs.field("reply_span").type == pa.list_(pa.field("item", pa.float64(), nullable=False), 2)


def test_unknown_major_version_is_refused_with_a_clear_message(tmp_path):
    table = to_table(sample_records()[Segment], Segment)
    table = table.replace_schema_metadata({**table.schema.metadata, VERSION_KEY: b"2.0"})
    pq.write_table(table, tmp_path / "future.parquet")
    with pytest.raises(SchemaVersionError, match="schema version 2.0 is not readable"):
        read_parquet(tmp_path / "future.parquet")


@pytest.mark.parametrize("mutate, field, rule", [
    (lambda r: r["references"][1].update(reply_span=[7.5, 12.0]), "references.1.reply_span", "after the video's end"),
    (lambda r: r["references"][1].update(reply_span=[2.0, 4.0]), "references.1.reply_span", "before its question"),
    (lambda r: r.update(dialogue_id="../../etc"), "dialogue_id", "unsafe id"),
    (lambda r: r["references"][0].update(answer="   "), "references.0.answer", "blank"),
    (lambda r: r["references"][0].update(reply_span=[3.0, 3.0]), "references.0.reply_span", "not before end"),
    (lambda r: r.update(references=r["references"][:1]), "user_turns.1", "has no reference answer"),
])
def test_invalid_dialogue_names_id_field_and_rule(mutate, field, rule):
    row = copy.deepcopy(dialogue_row())
    mutate(row)
    with pytest.raises(RecordError) as caught:
        parse_record(Dialogue, row)
    problems = caught.value.problems
    assert any(p.field == field and rule in p.reason for p in problems), problems
    assert problems[0].record_id == row["dialogue_id"]


def test_llm_output_json_schemas_are_exported():
    for name in LLM_OUTPUTS:
        schema = json_schema(name)
        assert schema["type"] == "object" and schema["properties"]
    assert "segment_ids" in json.dumps(json_schema("single_question"))


def _validate(*paths):
    return subprocess.run([sys.executable, "-m", "schemas", "validate", *map(str, paths)],
                          capture_output=True, text=True, cwd=ROOT)


def test_validate_cli_reports_each_planted_bad_record(tmp_path):
    good = [dialogue_row(), dialogue_row(dialogue_id="bikes-mq-1")]
    bad = [
        dialogue_row(dialogue_id="late-window"),
        dialogue_row(dialogue_id="early-window"),
        dialogue_row(dialogue_id="../escape"),
        dialogue_row(dialogue_id="empty-answer"),
    ]
    bad[0]["references"][0]["reply_span"] = [8.0, 11.0]
    bad[1]["references"][1]["reply_span"] = [1.0, 5.0]
    bad[3]["references"][0]["answer"] = ""
    good_path, bad_path = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good_path.write_text("".join(json.dumps(r) + "\n" for r in good))
    bad_path.write_text("".join(json.dumps(r) + "\n" for r in good + bad))

    ok = _validate(good_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 records checked, 2 valid" in ok.stdout

    result = _validate(bad_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("late-window: references.0.reply_span:") and "after the video's end" in line for line in lines)
    assert any(line.startswith("early-window: references.1.reply_span:") and "before its question" in line for line in lines)
    assert any(line.startswith("../escape: dialogue_id:") and "unsafe id" in line for line in lines)
    assert any(line.startswith("empty-answer: references.0.answer:") for line in lines)
    assert lines[-1].startswith("6 records checked, 2 valid, 4 with problems")


def test_validate_cli_reads_parquet_and_flags_duplicate_ids(tmp_path):
    dialogue = parse_record(Dialogue, dialogue_row())
    path = tmp_path / "dialogues.parquet"
    write_parquet(to_table([dialogue, dialogue], Dialogue), path)
    result = _validate(path)
    assert result.returncode == 1
    assert "bikes-mq-0: dialogue_id: duplicate id" in result.stdout
