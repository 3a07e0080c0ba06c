"""Helpers for the ASR tests and bench.asr: the video record the flow would make, packet surgery on an
audio track, the word error rate of segments against the script that was spoken, and faster-whisper's
own words for a file, to hold ours against."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import jiwer
import pytest

from curation.hashing import sha256_file
from curation.speech.config import AsrConfig
from curation.speech.synthetic import Spoken, espeak_available
from curation.speech.transcribe import Word
from curation.video.probe import probe_video
from schemas.records import Segment, Video

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (apt-get install "
                                  "espeak-ng; `make test` installs it when run as root)")
needs_asr = pytest.mark.skipif(not __import__("importlib").util.find_spec("faster_whisper"),
                               reason="the asr extra is not installed (pip install '.[asr]')")


def video_record(path: Path, video_id: str = "speech") -> Video:
    probe = probe_video(path)
    assert not hasattr(probe, "reason"), probe
    return Video(video_id=video_id, source="test", uri=str(path), path=path.name, sha256=sha256_file(path),
                 bytes=path.stat().st_size, duration_s=probe.duration_s, fps=probe.fps, width=probe.width,
                 height=probe.height, codec=probe.codec, has_audio=probe.has_audio)


def remux(src: Path, dst: Path, audio_packet: Callable[[int, av.Packet], av.Packet | None]) -> None:
    """Copy `src` to `dst`, each audio packet (numbered from 0) replaced by what `audio_packet`
    returns (None drops it)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        count = 0
        for packet in inp.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            target = streams[packet.stream.index]
            if packet.stream.type == "audio":
                packet, count = audio_packet(count, packet), count + 1
                if packet is None:
                    continue
            packet.stream = target
            out.mux(packet)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def word_error_rate(spoken: Sequence[Spoken] | Sequence[str], segments: Sequence[Segment]) -> float:
    script = " ".join(s if isinstance(s, str) else s.text for s in spoken)
    return jiwer.wer(_words(script), _words(" ".join(s.text for s in segments)))


def assert_placed(spoken: Sequence[Spoken], segments: Sequence[Segment], tolerance_s: float = 0.5) -> None:
    """One segment per spoken sentence, each starting and ending within `tolerance_s` of the voice."""
    assert len(segments) == len(spoken), [s.text for s in segments]
    for line, segment in zip(spoken, segments, strict=True):
        assert abs(segment.start_s - line.start_s) <= tolerance_s, (line, segment)
        assert abs(segment.end_s - line.end_s) <= tolerance_s, (line, segment)


def faster_whisper_words(model, path: Path, cfg: AsrConfig) -> list[Word]:
    """faster-whisper's own `transcribe` of the file (its own decode) with the stage's settings."""
    segments, _ = model.transcribe(str(path), **cfg.transcribe_options())
    return [Word(start_s=w.start, end_s=w.end, text=w.word, probability=w.probability)
            for segment in segments for w in segment.words or []]


def same_words(ours: Sequence[Word], theirs: Sequence[Word], tolerance_s: float = 0.02) -> tuple[bool, str]:
    """Whether both wrote the same words at the same times (within `tolerance_s`), and how they compare."""
    largest = 0.0
    for i in range(min(len(ours), len(theirs))):
        a, b = ours[i], theirs[i]
        shift = max(abs(a.start_s - b.start_s), abs(a.end_s - b.end_s))
        if a.text != b.text or shift > tolerance_s:
            return False, (f"word {i}: ours {a.text!r} at {a.start_s:.2f}-{a.end_s:.2f} s, theirs {b.text!r} at "
                           f"{b.start_s:.2f}-{b.end_s:.2f} s")
        largest = max(largest, shift)
    if len(ours) != len(theirs):
        who, longer = ("ours", ours) if len(ours) > len(theirs) else ("theirs", theirs)
        extra = longer[min(len(ours), len(theirs)):]
        return False, f"{who} wrote {len(extra)} more words from {extra[0].start_s:.2f} s: " \
                      f"{''.join(w.text for w in extra).strip()!r}"
    return True, f"{len(ours)} words, times within {largest:.3f} s"
