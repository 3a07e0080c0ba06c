"""Whisper segments that hold text the audio does not: dropped before a transcript is judged.

Whisper writes fluent sentences where nobody speaks: into silence and room tone (often one it has
just transcribed, when it is prompted with its previous text), music and noise, mostly in the
short stretch it decodes after the last words of a VAD chunk. faster-whisper skips a window only
when Whisper rates it as no speech *and* its log-prob is under -1, and otherwise keeps its best
try even when every temperature failed Whisper's checks. The transcript keeps all of it (it is
faster-whisper's output, cached and compared as such); these rules, from the evidence the
transcript holds, decide which of its segments reach the sentences, the first that applies naming
why:
- `quiet`: most of the segment's span is quiet on the track itself (`audio.quiet_spans`);
- `no_speech`: Whisper rated its window as no speech and its own alignment gives the words a
  mean probability under OpenAI Whisper's bar for an anomalous word;
- `failed_decode`: the segment's log-prob or compression ratio fails Whisper's own thresholds.
"""

from __future__ import annotations

from collections import Counter

from curation.speech.config import HallucinationRules
from curation.speech.transcribe import Piece, Transcript


def _quiet_share(piece: Piece, quiet: list[tuple[float, float]]) -> float:
    start, end = piece.words[0].start_s, max(w.end_s for w in piece.words)
    if end <= start:
        return float(any(a <= start <= b for a, b in quiet))
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in quiet) / (end - start)


def hallucination_reason(piece: Piece, quiet: list[tuple[float, float]], rules: HallucinationRules) -> str | None:
    """Why `piece` is not speech, or None when it stands."""
    if not piece.words:
        return None
    if _quiet_share(piece, quiet) > rules.max_quiet_share:
        return "quiet"
    word_probability = sum(w.probability for w in piece.words) / len(piece.words)
    if piece.no_speech_prob > rules.no_speech_prob and word_probability < rules.min_word_probability:
        return "no_speech"
    if piece.avg_logprob < rules.min_avg_logprob or piece.compression_ratio > rules.max_compression_ratio:
        return "failed_decode"
    return None


def drop_hallucinations(transcript: Transcript, rules: HallucinationRules) -> tuple[Transcript, Counter]:
    """The transcript without its hallucinated segments, and `asr_dropped_<reason>` counts."""
    kept, counts = [], Counter()
    for piece in transcript.pieces:
        reason = hallucination_reason(piece, transcript.quiet, rules)
        if reason is None:
            kept.append(piece)
        else:
            counts[f"asr_dropped_{reason}"] += 1
    return transcript.model_copy(update={"pieces": kept}), counts
