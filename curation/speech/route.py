"""Which text a video's dialogues are written from, and why: its source text, its speech, or captions.

A manifest row with `text_uri` uses that text. Otherwise the audio is transcribed (or the transcript
read from the cache) and judged: enough speech (VAD share of the video), a language kept by the
config with enough language-ID probability (where the model detects it), 1-4 words per second of
video (LiveCC) and a mean token log-prob above the floor send the video to ASR; the first rule
that fails sends it to captions, with that rule as its reason. An audio track that is missing,
empty or undecodable also routes to captions, with the decoder's reason. An ASR video's sentences
are written from its transcript without the segments the hallucination rules drop (counted as
`asr_dropped_<reason>`). The route, its reason and the transcript's measures go into the video's
result; `route_<route>_<reason>` is counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from curation.skips import Skip, declare_reasons
from curation.speech.audio import STAGE, decode_speech_audio
from curation.speech.cache import TranscriptCache, transcript_key
from curation.speech.config import AsrConfig, RouteRules
from curation.speech.hallucination import drop_hallucinations
from curation.speech.sentences import group_sentences, sentence_segments, snap_to_quiet
from curation.speech.transcribe import Transcript, load_model, transcribe_audio
from schemas.records import Segment, Video

ROUTES = ("source_text", "asr", "captions")
ACCEPTED = "speech_found"
declare_reasons(retryable=("missing_extra",))  # the asr extra, installed later


class SegmentConfidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    segment_id: str
    avg_logprob: float
    no_speech_prob: float


class TranscriptMeasures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    language: str
    language_probability: float
    language_detected: bool
    speech_share: float
    words_per_s: float
    avg_logprob: float | None
    damaged_packets: int
    gap_s: float
    segments: list[SegmentConfidence] = []


class TextRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    route: Literal["source_text", "asr", "captions"]
    reason: str
    detail: str = ""
    transcript: TranscriptMeasures | None = None

    def count_key(self) -> str:
        return f"route_{self.route}_{self.reason}"


def route_rows(counts: dict[str, int]) -> list[dict[str, object]]:
    """Summed `route_<route>_<reason>` counts as (route, reason, videos) rows: the summary's and
    the card's table of where each video's text came from and which ASR rule decided."""
    rows = []
    for key, n in sorted(counts.items()):
        for route in ROUTES:
            if key.startswith(f"route_{route}_"):
                rows.append({"route": route, "reason": key.removeprefix(f"route_{route}_"), "videos": n})
    return sorted(rows, key=lambda r: (ROUTES.index(r["route"]), -r["videos"], r["reason"]))


SOURCE_TEXT = TextRoute(route="source_text", reason="text_uri", detail="the manifest row names its text")


@dataclass(frozen=True)
class SpeechOutcome:
    route: TextRoute
    segments: list[Segment] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def mean_logprob(transcript: Transcript) -> float | None:
    """Whisper segments' average log-prob, weighted by their words."""
    words = sum(len(p.words) for p in transcript.pieces)
    return sum(p.avg_logprob * len(p.words) for p in transcript.pieces) / words if words else None


def judge_transcript(transcript: Transcript, duration_s: float, rules: RouteRules) -> tuple[str, str]:
    """(ACCEPTED, measures) when the transcript may stand for the video, else (failed rule, why)."""
    share = transcript.speech_s / duration_s
    words = len(transcript.words)
    per_s = words / duration_s
    logprob = mean_logprob(transcript)
    language = f"{transcript.language} p={transcript.language_probability:.2f}" + (
        "" if transcript.language_detected else " (not detected)")
    measures = (f"speech {share:.0%} of {duration_s:.1f} s, {words} words ({per_s:.2f}/s), {language}, "
                f"mean log-prob {logprob:.2f}" if logprob is not None else f"speech {share:.0%}, no words")
    if share < rules.min_speech_share:
        return "no_speech", f"{measures}; under {rules.min_speech_share:.0%} speech"
    if not words:
        return "no_words", f"{measures}; Whisper wrote no word"
    if transcript.language_detected and rules.languages and transcript.language not in rules.languages:
        return "language", f"{measures}; not one of {', '.join(rules.languages)}"
    if transcript.language_detected and transcript.language_probability < rules.min_language_probability:
        return "language_uncertain", f"{measures}; language-ID under {rules.min_language_probability:g}"
    if per_s < rules.min_words_per_s:
        return "words_per_s_low", f"{measures}; under {rules.min_words_per_s:g} words/s"
    if per_s > rules.max_words_per_s:
        return "words_per_s_high", f"{measures}; over {rules.max_words_per_s:g} words/s"
    if logprob < rules.min_avg_logprob:
        return "low_confidence", f"{measures}; under {rules.min_avg_logprob:g}"
    return ACCEPTED, measures


def _captions(reason: str, detail: str, counts: Counter, measures: TranscriptMeasures | None = None) -> SpeechOutcome:
    return SpeechOutcome(TextRoute(route="captions", reason=reason, detail=detail, transcript=measures),
                         counts=counts)


def route_speech(path: str | Path, video: Video, cfg: AsrConfig, cache_root: str | Path,
                 workers: int = 1) -> SpeechOutcome | Skip:
    """The video's ASR segments and route, or its route to captions with the reason; a Skip only
    when the configured model cannot run here (`missing_extra`, retried on the next run)."""
    counts: Counter = Counter()
    if cfg.model_source() is None:
        why = "asr.enabled is false" if not cfg.enabled else "no asr.model and the bundled one is not installed"
        return _captions("no_asr_model", why, counts)
    cache = TranscriptCache(cache_root)
    key = transcript_key(video.sha256, cfg.transcription_key())
    transcript = cache.get(key)
    if transcript is None:
        audio = decode_speech_audio(path, video.duration_s)
        if isinstance(audio, Skip):
            return _captions(audio.reason, audio.detail, counts)
        try:
            model = load_model(cfg, workers)
        except ImportError as error:
            return Skip(STAGE, "missing_extra", f"{error} (pip install '.[asr]')")
        transcript = transcribe_audio(model, audio, cfg)
        cache.put(key, transcript)
        counts["asr_transcribed"] += 1
    else:
        counts["asr_from_cache"] += 1
    if transcript.damaged_packets:
        counts["asr_damaged_packets"] += transcript.damaged_packets
    reason, detail = judge_transcript(transcript, video.duration_s, cfg.route)
    pairs = []
    if reason == ACCEPTED:
        # Judged whole (a failed piece is evidence of a poor transcript); written without what is not speech.
        spoken, dropped = drop_hallucinations(transcript, cfg.hallucination)
        counts.update(dropped)
        sentences = group_sentences(spoken, cfg.sentence_pause_s, cfg.max_sentence_s)
        sentences = snap_to_quiet(sentences, transcript.quiet, cfg.snap_s)
        pairs = sentence_segments(sentences, video.video_id, video.duration_s)
    confidence = [SegmentConfidence(segment_id=seg.segment_id, avg_logprob=round(s.avg_logprob, 4),
                                    no_speech_prob=round(s.no_speech_prob, 4)) for seg, s in pairs]
    measures = TranscriptMeasures(
        model=cfg.model_identity(), language=transcript.language,
        language_probability=round(transcript.language_probability, 4),
        language_detected=transcript.language_detected, speech_share=round(transcript.speech_s / video.duration_s, 4),
        words_per_s=round(len(transcript.words) / video.duration_s, 4),
        avg_logprob=None if (lp := mean_logprob(transcript)) is None else round(lp, 4),
        damaged_packets=transcript.damaged_packets, gap_s=round(transcript.gap_s, 3), segments=confidence)
    if reason != ACCEPTED:
        return _captions(reason, detail, counts, measures)
    if not pairs:
        return _captions("no_words", f"{detail}; no sentence inside the video", counts, measures)
    return SpeechOutcome(TextRoute(route="asr", reason=ACCEPTED, detail=detail, transcript=measures),
                         [seg for seg, _ in pairs], counts)
