"""Timestamped text that ships with a source (ASR sentences, narrations) as `Segment` records.

Three formats:
- whisperx: `{"segments": [{"start", "end", "text"}, ...]}` (WhisperX / Live-WhisperX ASR);
- narration: Ego4D / Ego-Exo4D style point timestamps, a JSON list of
  `{"timestamp_sec" | "time" | "timestamp", "narration_text" | "text"}` or an object holding such a
  list under `narrations` (at any depth, e.g. Ego4D's `{uid: {"narration_pass_1": {...}}}`);
- csv: a header `start,end,text` (or `start_s,end_s,text`).

Narrations mark instants, not spans. Each point becomes the span from its time to the next point's
time (the narrator moved on to the next action); the last point ends at `duration_s` when the caller
knows it, else after the median gap between points (`LAST_POINT_SPAN_S` when there is only one
point), and `clip_segments` trims it to the probed video length afterwards.

Segment ids are `<video_id>-sNNNN` in time order. Blank texts are dropped; spans with a missing,
non-finite or reversed time are dropped; negative starts are clipped to 0. Both are counted in
`SourceText`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from curation.skips import Skip, declare_reasons
from schemas.records import Segment

STAGE = "source_text"
declare_reasons(final=("text_not_found", "text_too_large", "bad_text_origin", "bad_text_format",
                       "no_segments"),
                retryable=("missing_extra", "text_unreadable"))
LAST_POINT_SPAN_S = 2.0  # our choice: a lone narration point covers two seconds (no published value)
MAX_TEXT_BYTES = 64 * 2**20  # a text file larger than this is not a transcript
Format = Literal["whisperx", "narration", "csv"]


@dataclass(frozen=True)
class SourceText:
    segments: list[Segment]
    dropped_blank: int
    dropped_invalid: int
    clipped: int


def _load_text(path_or_uri: str | Path) -> str | Skip:
    uri = str(path_or_uri)
    try:
        if "://" in uri and not uri.startswith("file://"):
            import fsspec

            with fsspec.open(uri, "rb") as handle:
                data = handle.read(MAX_TEXT_BYTES + 1)
        else:
            path = Path(uri.removeprefix("file://"))
            if not path.is_file():
                return Skip(STAGE, "text_not_found", f"no such file: {path}")
            with path.open("rb") as handle:
                data = handle.read(MAX_TEXT_BYTES + 1)
    except ImportError as error:
        return Skip(STAGE, "missing_extra", f"{uri}: {error}")
    except (OSError, ValueError) as error:
        return Skip(STAGE, "text_unreadable", f"{uri}: {type(error).__name__}: {error}")
    if len(data) > MAX_TEXT_BYTES:
        return Skip(STAGE, "text_too_large", f"{uri}: over {MAX_TEXT_BYTES} bytes")
    return data.decode("utf-8", errors="replace").lstrip("\ufeff")


def detect_format(text: str, name: str = "") -> Format:
    if name.lower().endswith(".csv"):
        return "csv"
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return "csv"
    return "whisperx" if stripped.startswith("{") and '"segments"' in text else "narration"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # an integer too large for a float overflows
        return None
    return number if math.isfinite(number) else None


def _find_narrations(data: Any) -> list[Any] | None:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get("narrations"), list):
            return data["narrations"]
        for value in data.values():
            found = _find_narrations(value) if isinstance(value, dict) else None
            if found is not None:
                return found
    return None


def _spans_whisperx(text: str) -> list[tuple[Any, Any, Any]]:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise ValueError('expected an object with a "segments" list')
    return [(s.get("start"), s.get("end"), s.get("text")) if isinstance(s, dict) else (None, None, None)
            for s in data["segments"]]


def _spans_narration(text: str, duration_s: float | None) -> list[tuple[Any, Any, Any]]:
    items = _find_narrations(json.loads(text))
    if items is None:
        raise ValueError("expected a list of narrations or an object with a `narrations` list")
    points: list[tuple[float | None, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            points.append((None, None))
            continue
        time = next((item[k] for k in ("timestamp_sec", "time", "timestamp") if k in item), None)
        points.append((_number(time), item.get("narration_text", item.get("text"))))
    timed = sorted((t, body) for t, body in points if t is not None and isinstance(body, str) and body.strip())
    spans: list[tuple[Any, Any, Any]] = [(None, None, body) for t, body in points if t is None]
    spans += [(t, None, "") for t, body in points if t is not None and not (isinstance(body, str) and body.strip())]
    times = [t for t, _ in timed]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
    tail_s = statistics.median(gaps) if gaps else LAST_POINT_SPAN_S
    for i, (start, body) in enumerate(timed):
        if i + 1 < len(timed):
            end = timed[i + 1][0]
            if end <= start:  # two narrations at the same instant: give this one the next real gap
                end = next((t for t in times[i + 1:] if t > start), start + tail_s)
        else:
            end = duration_s if duration_s is not None and duration_s > start else start + tail_s
        spans.append((start, end, body))
    return spans


# A line break inside a cell followed by what reads as the next row's `start,end,`: a quote left open
# upstream has swallowed the rows after it into one cell.
_SWALLOWED_ROW = re.compile(r"[\r\n]\s*-?\d+(?:\.\d+)?\s*,\s*-?\d+(?:\.\d+)?\s*,")


def _spans_csv(text: str) -> list[tuple[Any, Any, Any]]:
    if "\x00" in text:
        raise ValueError(f"a NUL byte on line {text.count(chr(10), 0, text.index(chr(0))) + 1}: not a text CSV")
    # strict: an unclosed quote is an error at the end of the data, not one giant last cell.
    reader = csv.DictReader(io.StringIO(text), strict=True)
    fields = {f.strip().lower(): f for f in reader.fieldnames or []}
    start_key = fields.get("start") or fields.get("start_s")
    end_key = fields.get("end") or fields.get("end_s")
    text_key = fields.get("text")
    if not (start_key and end_key and text_key):
        # Described, never quoted: this line may be anything (a file in another format, a secret).
        raise ValueError(f"the first line has {len(reader.fieldnames or [])} comma-separated fields and does "
                         "not name start, end and text columns (not a whisperx, narration or csv file?)")
    spans = []
    for row in reader:
        if any(isinstance(v, str) and _SWALLOWED_ROW.search(v) for v in row.values()):
            raise ValueError(f"line {reader.line_num}: a quoted cell runs over several rows (an unclosed quote?)")
        spans.append((row.get(start_key), row.get(end_key), row.get(text_key)))
    return spans


_INVALID = "\ufffd"  # what `_clean` returns for text that is not valid Unicode


def _clean(text: str) -> str:
    """Whitespace collapsed and control characters dropped; `_INVALID` for a lone surrogate (the
    text could not be stored), "" for nothing left."""
    if any("\ud800" <= c <= "\udfff" for c in text):
        return _INVALID
    words = " ".join(text.split())
    return words if words.isprintable() else "".join(c for c in words if c.isprintable())


def parse_source_text(text: str, video_id: str, text_format: Format, origin: str,
                      duration_s: float | None = None) -> SourceText:
    """Segments from already-loaded text; raises ValueError/JSONDecodeError on a broken file."""
    if text_format == "whisperx":
        spans = _spans_whisperx(text)
    elif text_format == "narration":
        spans = _spans_narration(text, duration_s)
    elif text_format == "csv":
        spans = _spans_csv(text)
    else:
        raise ValueError(f"unknown text format {text_format!r}")
    blank = invalid = clipped = 0
    kept: list[tuple[float, float, str]] = []
    for start, end, body in spans:
        body = _clean(body) if isinstance(body, str) else None
        if not body:
            blank += 1
            continue
        start_s, end_s = _number(start), _number(end)
        if start_s is None or end_s is None or end_s <= max(start_s, 0.0) or body == _INVALID:
            invalid += 1
            continue
        if start_s < 0:
            start_s, clipped = 0.0, clipped + 1
        kept.append((start_s, end_s, body))
    kept.sort(key=lambda span: (span[0], span[1]))
    segments = [Segment(segment_id=f"{video_id}-s{i:04d}", video_id=video_id, start_s=s, end_s=e,
                        text=body, origin=origin) for i, (s, e, body) in enumerate(kept)]
    return SourceText(segments, blank, invalid, clipped)


def read_source_text(path_or_uri: str | Path, video_id: str, text_format: Format | None = None,
                     origin: str | None = None, duration_s: float | None = None) -> SourceText | Skip:
    text = _load_text(path_or_uri)
    if isinstance(text, Skip):
        return text
    fmt = text_format or detect_format(text, str(path_or_uri))
    origin = origin or ("asr" if fmt == "whisperx" else "narration")
    if origin not in ("asr", "narration"):
        return Skip(STAGE, "bad_text_origin", f"origin must be asr or narration, got {origin!r}")
    try:
        parsed = parse_source_text(text, video_id, fmt, origin, duration_s)
    except (ValueError, csv.Error) as error:  # JSONDecodeError is a ValueError
        return Skip(STAGE, "bad_text_format", f"{path_or_uri} as {fmt}: {_describe(error)}")
    except RecursionError:
        return Skip(STAGE, "bad_text_format", f"{path_or_uri} as {fmt}: nested too deeply")
    if not parsed.segments:
        return Skip(STAGE, "no_segments", f"{path_or_uri}: no usable segment ({parsed.dropped_blank} blank, "
                    f"{parsed.dropped_invalid} with bad times)")
    return parsed


def _describe(error: Exception) -> str:
    """The parse error without the input: JSON and CSV messages name a position, never a value, but a
    pydantic or float() message may quote one."""
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    if isinstance(error, csv.Error):
        return "broken CSV quoting (an unclosed or stray quote)"
    return str(error)


def read_source_segments(path_or_uri: str | Path, video_id: str, text_format: Format | None = None,
                         origin: str | None = None, duration_s: float | None = None) -> list[Segment] | Skip:
    """The segments of a source's own timestamped text, or a Skip naming why there are none."""
    parsed = read_source_text(path_or_uri, video_id, text_format, origin, duration_s)
    return parsed if isinstance(parsed, Skip) else parsed.segments


def clip_segments(segments: list[Segment], duration_s: float) -> list[Segment]:
    """Drop segments that start at or after the video's end; cut the ones that run past it."""
    kept: list[Segment] = []
    for segment in segments:
        if segment.start_s >= duration_s:
            continue
        if segment.end_s > duration_s:
            segment = segment.model_copy(update={"end_s": duration_s})
        kept.append(segment)
    return kept
