"""Property-based tests: for any input, the manifest reader, the source-text parsers and the LLM
output parser return rows or skips (or, for the parser, a ValueError naming why) and never raise
anything else. Each property runs a modest number of examples so the suite stays fast."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.llm.parse import parse_output
from curation.manifest import ManifestRow, read_manifest
from curation.skips import Skip
from curation.text.dialogues import dialogue_from_output
from curation.text.source_text import SourceText, read_source_text
from schemas.records import Provenance, Quarantine, Segment, Video

settings.register_profile("suite", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

# Text that reaches the parsers: anything, with the characters hostile files carry made likely.
HOSTILE_CHARS = st.sampled_from(["\x00", "\ud800", "\udfff", "\x1b", "\u202e", "\ufeff", '"', ",", "\n", "\r",
                                 "{", "}", "[", "]", ":", "\\", "-", "."])
TEXT = st.text(st.one_of(st.characters(), HOSTILE_CHARS), max_size=200)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                   st.floats(allow_nan=True, allow_infinity=True), TEXT)
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(TEXT, inner, max_size=4)),
                          max_leaves=12)
FIELDS = ["video_id", "uri", "source", "licence", "metadata", "sha256", "text_uri", "text_format", "text_origin"]
ROW = st.dictionaries(st.one_of(st.sampled_from(FIELDS), TEXT), JSON_VALUE, max_size=8)


@contextmanager
def _written(text: str, suffix: str) -> Iterator[Path]:
    """`text` in a file of its own (lone surrogates written as the invalid bytes a file may hold)."""
    with tempfile.TemporaryDirectory(prefix="prop-") as folder:
        path = Path(folder) / f"m{suffix}"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        yield path


def _assert_every_row_accounted(read, lines: int) -> None:
    assert all(isinstance(r, ManifestRow) for r in read.rows)
    assert all(isinstance(q, Quarantine) for q in read.skips)
    assert len(read.rows) + len(read.skips) == lines
    for q in read.skips:
        q.model_dump_json()  # always storable
    for row in read.rows:
        row.model_dump_json()


@given(st.lists(st.one_of(ROW.map(lambda r: json.dumps(r, default=str)), TEXT.filter(lambda t: "\n" not in t
                                                                                       and "\r" not in t)),
                min_size=1, max_size=6))
def test_the_jsonl_manifest_reader_accounts_for_every_line_and_never_raises(lines):
    lines = [line for line in lines if line.strip() and not any(c in line for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")]
    with _written("\n".join(lines) + "\n", ".jsonl") as path:
        read = read_manifest(path)
    _assert_every_row_accounted(read, len(lines))


@given(st.lists(st.lists(TEXT.filter(lambda t: "\n" not in t and "\r" not in t), min_size=1, max_size=4),
                min_size=1, max_size=6))
def test_the_csv_manifest_reader_never_raises(cells):
    header = "video_id,uri,licence,metadata"
    lines = [",".join(row) for row in cells]
    with _written("\n".join([header, *lines]) + "\n", ".csv") as path:
        read = read_manifest(path)
    _assert_every_row_accounted(read, sum(1 for line in lines if line.strip()))


@given(st.one_of(TEXT, JSON_VALUE.map(lambda v: json.dumps(v, default=str)),
                 st.lists(st.tuples(SCALAR, SCALAR, TEXT), max_size=5).map(
                     lambda rows: "start,end,text\n" + "\n".join(f"{a},{b},{c}" for a, b, c in rows))),
       st.sampled_from([None, "whisperx", "narration", "csv"]))
def test_the_source_text_parsers_return_segments_or_a_skip(text, fmt):
    with _written(text, ".txt") as path:
        out = read_source_text(path, "v", fmt, None, 30.0)
    assert isinstance(out, SourceText | Skip)
    if isinstance(out, SourceText):
        for segment in out.segments:
            assert isinstance(segment, Segment) and segment.text.isprintable()
            segment.model_dump_json()


VIDEO = Video(video_id="v", source="web", uri="v.mp4", sha256="0" * 64, bytes=1, duration_s=20.0, fps=25.0,
              width=640, height=480, codec="h264", has_audio=False)
SEGMENTS = [Segment(segment_id=f"v-s{i:04d}", video_id="v", start_s=5.0 * i, end_s=5.0 * i + 5.0, text="x",
                    origin="caption") for i in range(4)]
PROVENANCE = Provenance(generator="t", model="m", prompt_version="1")


@given(st.one_of(TEXT, JSON_VALUE.map(lambda v: json.dumps(v, default=str)),
                 st.fixed_dictionaries({"question": TEXT, "answers": st.lists(st.fixed_dictionaries(
                     {"segment_ids": st.lists(st.sampled_from(["v-s0000", "v-s0003", "x"]) | TEXT, max_size=3),
                      "answer": TEXT}), max_size=3)}).map(json.dumps)),
       st.sampled_from(["single_question", "multi_question", "scene_caption"]))
def test_the_llm_output_parser_returns_data_or_says_why_not(text, schema):
    from curation.text.config import DialogueConfig

    try:
        data = parse_output(schema, text)
    except ValueError:
        return
    assert isinstance(data, dict)
    if schema != "scene_caption":
        dialogue, problems = dialogue_from_output(schema, data, "v-d0", VIDEO, SEGMENTS, PROVENANCE, DialogueConfig())
        assert dialogue is not None or problems
