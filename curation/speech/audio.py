"""A video's audio track as 16 kHz mono float samples on the video's clock.

Sample i sits at i / 16000 s of video time, the zero the frames use (`curation.video.stream_time`:
the audio's stream time plus where the audio stream starts on the video's clock). So an audio
stream that starts later than the video is preceded by silence, one that starts earlier loses what
comes before the first frame, and audio past the video's end is neither decoded nor kept (an audio
track hours longer than its video costs nothing). A packet the decoder refuses, or a stretch with
no packets at all, becomes silence of its length, so the words after it keep their times. Channels
are mixed down and the rate converted by FFmpeg's resampler (through PyAV), whatever the track
holds (5.1 at 48 kHz, a mid-stream format change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from curation.skips import Skip, declare_reasons
from curation.video.stream_time import start_on_video_clock_s, stream_clock
from curation.watchdog import checkpoint

STAGE = "asr"
# These route a video to captions (`curation.speech.route`); the file decides each of them.
declare_reasons(final=("no_audio_track", "audio_undecodable", "no_audio_samples"))
SAMPLE_RATE = 16_000  # Whisper's input rate
# A jump in timestamps shorter than this is decoder/resampler jitter, not missing audio.
GAP_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class SpeechAudio:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE, from the video's zero
    damaged_packets: int  # refused by the decoder (their span is silence)
    gap_s: float  # silence put where audio was missing or refused

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class _Track:
    """Resampled samples placed by their timestamps, from the video's zero up to `end_s`."""

    def __init__(self, end_s: float):
        self.end = round(end_s * SAMPLE_RATE)
        self.chunks: list[np.ndarray] = []
        self.at: int | None = None  # the next sample's position; negative before the video's zero
        self.gap = 0

    def place(self, start_s: float | None, samples: np.ndarray) -> None:
        wanted = None if start_s is None else round(start_s * SAMPLE_RATE)
        first = self.at is None
        if self.at is None:  # the track starts at the video's zero (its audio before it is dropped)
            self.at = min(wanted or 0, 0)
        if wanted is not None and wanted - self.at > GAP_TOLERANCE_S * SAMPLE_RATE:
            self.gap += 0 if first else wanted - self.at  # a late start is no missing audio
            self._append(np.zeros(wanted - self.at, np.float32))
        self._append(samples)

    def _append(self, samples: np.ndarray) -> None:
        assert self.at is not None
        lo, hi = max(0, -self.at), min(len(samples), self.end - self.at)
        if hi > lo:
            self.chunks.append(samples[lo:hi])
        self.at += len(samples)

    @property
    def full(self) -> bool:
        return self.at is not None and self.at >= self.end

    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


def _resampler() -> av.AudioResampler:
    # 16-bit samples, as Whisper's own decoders make them (OpenAI's ffmpeg pipe, faster-whisper's
    # `decode_audio`): a float decode differs in the low bits and in digital silence, which is
    # enough to change Whisper's text on a quiet stretch.
    return av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)


def _mono(frames: list[av.AudioFrame]) -> np.ndarray:
    out = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(out).astype(np.float32) / 32768 if out else np.zeros(0, np.float32)


def _flush(resampler: av.AudioResampler | None, track: _Track) -> None:
    """The resampler's last few samples (its filter's delay), right after what it already gave."""
    if resampler is not None and not track.full:
        track.place(None, _mono(resampler.resample(None)))


def decode_speech_audio(path: str | Path, duration_s: float) -> SpeechAudio | Skip:
    """The first audio track over the video's `duration_s`, or a Skip naming why there is none
    (`no_audio_track`, `no_audio_samples`, `audio_undecodable`)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return Skip(STAGE, "no_audio_track", "the file has no audio stream")
            stream = container.streams.audio[0]
            clock = stream_clock(stream)
            # Video time of the audio's own 0: the frames' clock (a file with no video has none).
            offset_s = start_on_video_clock_s(container, stream) if container.streams.video else 0.0
            track = _Track(duration_s)
            damaged, resampler, setup = 0, None, None
            for packet in container.demux(stream):
                checkpoint()
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    damaged += 1
                    continue
                for frame in frames:
                    start_s = None if frame.time is None else frame.time - clock.start_s + offset_s
                    if (frame.format.name, frame.layout.name, frame.sample_rate) != setup:
                        # A new resampler when the input changes; PyAV's refuses a different input.
                        _flush(resampler, track)
                        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
                        resampler = _resampler()
                    frame.pts = None  # placed by `start_s`; the resampler need not check continuity
                    track.place(start_s, _mono(resampler.resample(frame)))
                if track.full:
                    break
            _flush(resampler, track)
    except (av.error.FFmpegError, OSError) as error:
        return Skip(STAGE, "audio_undecodable", f"{type(error).__name__}: {error}")
    samples = track.samples()
    if not samples.size:
        return Skip(STAGE, "no_audio_samples", f"no decodable audio before the video's end ({damaged} damaged "
                    "packets)")
    return SpeechAudio(samples, damaged, track.gap / SAMPLE_RATE)


FRAME_S = 0.02  # loudness frames for `quiet_spans`
QUIET_DB = -40.0  # our choice: a frame this far under the track's loud level (its 95th percentile) is quiet
QUIET_FLOOR = 1e-4  # -80 dBFS: quieter than this is quiet on any track


def quiet_spans(samples: np.ndarray, min_s: float = 0.1) -> list[tuple[float, float]]:
    """Stretches of at least `min_s` where the track is quiet: the pauses between sentences, which
    snap Whisper's sentence edges (its word times can be half a second off) to where the voice
    starts and stops. A track that never goes quiet (music under the voice) has none."""
    per = round(FRAME_S * SAMPLE_RATE)
    frames = len(samples) // per
    if not frames:
        return []
    rms = np.sqrt(np.mean(np.square(samples[: frames * per].reshape(frames, per), dtype=np.float64), axis=1))
    quiet = rms < max(QUIET_FLOOR, float(np.percentile(rms, 95)) * 10 ** (QUIET_DB / 20))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    return [(round(a * FRAME_S, 3), round(b * FRAME_S, 3)) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if (b - a) * FRAME_S >= min_s]
