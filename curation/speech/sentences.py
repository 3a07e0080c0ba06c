"""Whisper's words grouped into sentences: the segments dialogues are written from.

Whisper's own segments follow its 30 s windows and often join two sentences, so the words are
regrouped: a sentence ends at a word ending in . ! ? (or their CJK forms), at a pause of
`sentence_pause_s` between two words, or once it has run `max_sentence_s`. Each sentence keeps the
confidence of the Whisper segments its words came from (their average log-prob weighted by its
words, and the highest no-speech probability among them).

Whisper's word times can be half a second off at a sentence's edges (measured on espeak-ng speech:
up to 0.84 s late at an end). Where the track goes quiet between sentences, each edge snaps to
the quiet span it lies in, or to one that begins or ends within `snap_s` of it, never across a
neighbouring sentence; over continuous sound (music under the voice) the edges stay Whisper's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from curation.speech.transcribe import Transcript, Word
from schemas.records import Segment

SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f\u2026][\"')\]\u201d\u2019]*$")
MIN_SPAN_S = 0.02  # Whisper's time step; a one-word sentence it timed at one instant gets this much


@dataclass(frozen=True)
class Sentence:
    start_s: float
    end_s: float
    text: str
    avg_logprob: float
    no_speech_prob: float


def _sentence(words: list[tuple[Word, float, float]]) -> Sentence | None:
    text = " ".join("".join(w.text for w, _, _ in words).split())
    text = "".join(c for c in text if c.isprintable())
    if not text:
        return None
    start_s, end_s = words[0][0].start_s, max(w.end_s for w, _, _ in words)
    return Sentence(start_s=start_s, end_s=max(end_s, start_s + MIN_SPAN_S), text=text,
                    avg_logprob=sum(lp for _, lp, _ in words) / len(words),
                    no_speech_prob=max(ns for _, _, ns in words))


def group_sentences(transcript: Transcript, pause_s: float, max_sentence_s: float) -> list[Sentence]:
    sentences: list[Sentence] = []
    current: list[tuple[Word, float, float]] = []

    def close() -> None:
        if current and (sentence := _sentence(current)):
            sentences.append(sentence)
        current.clear()

    for piece in transcript.pieces:
        for word in piece.words:
            if current and (word.start_s - current[-1][0].end_s >= pause_s
                            or word.end_s - current[0][0].start_s > max_sentence_s):
                close()
            current.append((word, piece.avg_logprob, piece.no_speech_prob))
            if SENTENCE_END.search(word.text.strip()):
                close()
    close()
    return sentences


def _snap_start(t: float, quiet: list[tuple[float, float]], snap_s: float, lo: float, hi: float) -> float:
    """Where the voice starts: the end of the quiet span `t` is in, or of one that ended in the
    `snap_s` before it; kept inside (lo, hi)."""
    ends = [b for a, b in quiet if (a <= t < b or t - snap_s <= b <= t) and lo <= b < hi and b - t <= snap_s]
    return max(ends) if ends else t


def _snap_end(t: float, quiet: list[tuple[float, float]], snap_s: float, lo: float, hi: float) -> float:
    """Where the voice stops: the start of the quiet span `t` is in, or of one that begins in the
    `snap_s` after it; kept inside (lo, hi)."""
    starts = [a for a, b in quiet if (a < t <= b or t <= a <= t + snap_s) and lo < a <= hi and t - a <= snap_s]
    return min(starts) if starts else t


def snap_to_quiet(sentences: list[Sentence], quiet: list[tuple[float, float]], snap_s: float) -> list[Sentence]:
    out: list[Sentence] = []
    for i, sentence in enumerate(sentences):
        lo = out[-1].end_s if out else 0.0
        hi = sentences[i + 1].start_s if i + 1 < len(sentences) else float("inf")
        start = _snap_start(sentence.start_s, quiet, snap_s, lo, sentence.end_s)
        end = _snap_end(sentence.end_s, quiet, snap_s, start, hi)
        out.append(replace(sentence, start_s=start, end_s=max(end, start + MIN_SPAN_S)))
    return out


def sentence_segments(sentences: list[Sentence], video_id: str, duration_s: float
                      ) -> list[tuple[Segment, Sentence]]:
    """Each sentence inside the video as a `Segment` (origin `asr`, cut to the video's length), in
    time order with ids `<video_id>-sNNNN`, beside the sentence it came from."""
    kept = sorted((s for s in sentences if s.start_s < duration_s), key=lambda s: (s.start_s, s.end_s))
    return [(Segment(segment_id=f"{video_id}-s{i:04d}", video_id=video_id, start_s=max(0.0, s.start_s),
                     end_s=min(s.end_s, duration_s), text=s.text, origin="asr"), s) for i, s in enumerate(kept)]
