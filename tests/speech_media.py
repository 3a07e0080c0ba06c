"""Helpers for the ASR tests: the video record the flow would make, packet surgery on an audio track,
and the word error rate of segments against the script that was spoken."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import jiwer
import pytest

from curation.hashing import sha256_file
from curation.speech.synthetic import Spoken, espeak_available
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
