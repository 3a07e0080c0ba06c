"""The ASR stage's pure parts: sentences from words, edges snapped to quiet, the hallucination and
routing rules, the transcript cache, and what of the `asr:` config decides reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.config import CorpusConfig
from curation.speech.audio import SAMPLE_RATE, quiet_spans
from curation.speech.cache import TranscriptCache, transcript_key
from curation.speech.config import AsrConfig, HallucinationRules, RouteRules
from curation.speech.hallucination import drop_hallucinations
from curation.speech.route import judge_transcript, route_rows
from curation.speech.sentences import Sentence, group_sentences, sentence_segments, snap_to_quiet
from curation.speech.transcribe import Piece, Transcript, Word


def words(*spec: tuple[float, float, str]) -> list[Word]:
    return [Word(start_s=a, end_s=b, text=t, probability=0.9) for a, b, t in spec]


def transcript(pieces: list[list[Word]], logprob: float = -0.3, speech_s: float = 10.0, language: str = "en",
               probability: float = 1.0, detected: bool = False) -> Transcript:
    return Transcript(language=language, language_probability=probability, language_detected=detected,
                      audio_s=20.0, speech_s=speech_s, pieces=[
                          Piece(avg_logprob=logprob, no_speech_prob=0.1, compression_ratio=1.2, words=w)
                          for w in pieces])


def test_sentences_end_at_punctuation_at_a_pause_and_at_the_length_cap():
    piece = words((0.0, 0.4, " Hello"), (0.4, 0.9, " there."), (1.0, 1.3, " Next"), (1.3, 1.6, " one"),
                  (3.0, 3.4, " after"), (3.4, 3.8, " pause"))
    got = group_sentences(transcript([piece]), pause_s=1.0, max_sentence_s=30.0)
    assert [(s.text, s.start_s, s.end_s) for s in got] == [
        ("Hello there.", 0.0, 0.9), ("Next one", 1.0, 1.6), ("after pause", 3.0, 3.8)]
    # Joined across Whisper's pieces; cut by length when nothing else cuts it.
    long = [words((i * 1.0, i * 1.0 + 0.8, f" w{i}")) for i in range(10)]
    capped = group_sentences(transcript(long), pause_s=5.0, max_sentence_s=4.0)
    assert [s.text for s in capped] == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    assert all(s.end_s - s.start_s <= 4.0 for s in capped)


def test_a_sentence_keeps_its_pieces_confidence_and_a_zero_length_word_gets_a_span():
    first = Piece(avg_logprob=-0.2, no_speech_prob=0.1, compression_ratio=1.0,
                  words=words((0.0, 0.5, " Two"), (0.5, 1.0, " words")))
    second = Piece(avg_logprob=-0.8, no_speech_prob=0.4, compression_ratio=1.0, words=words((1.0, 1.5, " more.")))
    t = Transcript(language="en", language_probability=1.0, language_detected=False, audio_s=5, speech_s=2,
                   pieces=[first, second])
    (sentence,) = group_sentences(t, pause_s=1.0, max_sentence_s=30.0)
    assert sentence.avg_logprob == pytest.approx((-0.2 * 2 - 0.8) / 3) and sentence.no_speech_prob == 0.4
    (instant,) = group_sentences(transcript([words((2.0, 2.0, " Yes."))]), 1.0, 30.0)
    assert instant.end_s > instant.start_s


def test_edges_snap_to_where_the_track_goes_quiet_but_never_past_a_neighbour():
    quiet = [(0.0, 1.0), (4.0, 5.5), (9.0, 12.0)]
    sentences = [Sentence(0.6, 4.7, "early start, late end", -0.3, 0.1),  # Whisper's edges in the quiet
                 Sentence(5.8, 8.4, "late start, early end", -0.3, 0.1)]  # voice began/ended nearby
    snapped = snap_to_quiet(sentences, quiet, snap_s=1.0)
    assert [(s.start_s, s.end_s) for s in snapped] == [(1.0, 4.0), (5.5, 9.0)]
    # Too far (over snap_s), or no quiet at all (music under the voice): Whisper's times stay.
    assert snap_to_quiet(sentences, quiet, snap_s=0.2)[1] == sentences[1]
    assert snap_to_quiet(sentences, [], snap_s=1.0) == sentences


def test_quiet_spans_find_the_pauses_of_a_track_and_none_in_continuous_sound():
    rng = np.random.default_rng(0)
    track = np.zeros(4 * SAMPLE_RATE, np.float32)
    track[SAMPLE_RATE: 2 * SAMPLE_RATE] = rng.normal(0, 0.3, SAMPLE_RATE)  # "voice" 1-2 s
    track[3 * SAMPLE_RATE:] = rng.normal(0, 0.3, SAMPLE_RATE)  # and 3-4 s
    assert quiet_spans(track) == [(0.0, 1.0), (2.0, 3.0)]
    assert quiet_spans(rng.normal(0, 0.3, 4 * SAMPLE_RATE).astype(np.float32)) == []


def test_segments_are_cut_to_the_video_and_numbered_in_time_order():
    sentences = [Sentence(5.0, 7.0, "b", -0.1, 0.0), Sentence(1.0, 2.0, "a", -0.1, 0.0),
                 Sentence(9.5, 11.0, "c", -0.1, 0.0), Sentence(10.5, 12.0, "gone", -0.1, 0.0)]
    pairs = sentence_segments(sentences, "vid", duration_s=10.0)
    assert [(s.segment_id, s.text, s.start_s, s.end_s, s.origin) for s, _ in pairs] == [
        ("vid-s0000", "a", 1.0, 2.0, "asr"), ("vid-s0001", "b", 5.0, 7.0, "asr"), ("vid-s0002", "c", 9.5, 10.0, "asr")]


def piece(start_s: float, no_speech_prob: float = 0.2, avg_logprob: float = -0.3, compression_ratio: float = 1.5,
          probability: float = 0.9) -> Piece:
    """Four words over 2 s from `start_s`."""
    return Piece(avg_logprob=avg_logprob, no_speech_prob=no_speech_prob, compression_ratio=compression_ratio,
                 words=[Word(start_s=start_s + i / 2, end_s=start_s + i / 2 + 0.4, text=f" w{i}",
                             probability=probability) for i in range(4)])


@pytest.mark.parametrize(("bad", "reason"), [
    (piece(20.0), "quiet"),  # nothing audible under it
    (piece(20.0, probability=0.0), "quiet"),  # the first rule that applies names it
    (piece(10.0, no_speech_prob=0.8, probability=0.1), "no_speech"),
    (piece(10.0, avg_logprob=-1.3), "failed_decode"),
    (piece(10.0, compression_ratio=3.0), "failed_decode"),
])
def test_each_hallucination_rule_drops_its_segment_and_names_itself(bad, reason):
    quiet = [(0.0, 0.5), (3.0, 4.0), (19.5, 30.0)]  # real pauses inside speech, and a silent tail
    speech = [piece(1.0), piece(3.2, no_speech_prob=0.9),  # starts in a pause; Whisper unsure of speech that
              # its alignment is sure of; the reverse; both just inside Whisper's thresholds
              piece(7.0, probability=0.05), piece(13.0, avg_logprob=-0.95, compression_ratio=2.3)]
    t = transcript([]).model_copy(update={"pieces": [*speech, bad], "quiet": quiet})
    kept, counts = drop_hallucinations(t, HallucinationRules())
    assert kept.pieces == speech and counts == {f"asr_dropped_{reason}": 1}
    assert drop_hallucinations(t, HallucinationRules(max_quiet_share=1.0, no_speech_prob=1.0, min_avg_logprob=-2.0,
                                                     max_compression_ratio=5.0))[0].pieces[-1] == bad


@pytest.mark.parametrize(("change", "reason"), [
    ({"speech_s": 1.0}, "no_speech"),
    ({"pieces": []}, "no_words"),
    ({"language": "de", "detected": True}, "language"),
    ({"probability": 0.6, "detected": True}, "language_uncertain"),
    ({"pieces": [words((0.0, 0.5, " one"))]}, "words_per_s_low"),
    ({"pieces": [words(*((i / 10, i / 10 + 0.05, " w") for i in range(100)))]}, "words_per_s_high"),
    ({"logprob": -1.2}, "low_confidence"),
    ({}, "speech_found"),
    ({"probability": 0.1}, "speech_found"),  # not detected (an .en model): the probability is no evidence
])
def test_each_routing_rule_names_itself(change, reason):
    base = {"pieces": [words(*((i * 0.5, i * 0.5 + 0.4, f" w{i}") for i in range(30)))]}  # 30 words / 20 s
    args = base | change
    t = transcript(args.pop("pieces"), **{k: v for k, v in args.items()})
    got, detail = judge_transcript(t, duration_s=20.0, rules=RouteRules())
    assert got == reason, detail


def test_route_rows_read_back_the_route_counts():
    counts = {"route_captions_no_speech": 2, "route_asr_speech_found": 3, "route_source_text_text_uri": 1,
              "route_captions_low_confidence": 1, "asr_transcribed": 5, "dialogues_attempted": 9}
    assert route_rows(counts) == [
        {"route": "source_text", "reason": "text_uri", "videos": 1},
        {"route": "asr", "reason": "speech_found", "videos": 3},
        {"route": "captions", "reason": "no_speech", "videos": 2},
        {"route": "captions", "reason": "low_confidence", "videos": 1}]


def test_the_transcript_cache_round_trips_and_refuses_a_damaged_or_foreign_entry(tmp_path):
    cache = TranscriptCache(tmp_path)
    key = transcript_key("a" * 64, AsrConfig().transcription_key())
    t = transcript([words((0.0, 1.0, " hi."))])
    assert cache.get(key) is None
    cache.put(key, t)
    assert cache.get(key) == t
    cache.path_for(key).write_text(cache.path_for(key).read_text()[:-20])  # torn
    assert cache.get(key) is None
    other = transcript_key("b" * 64, AsrConfig().transcription_key())
    cache.put(other, t)
    cache.path_for(key).write_text(cache.path_for(other).read_text())  # another video's entry, renamed
    assert cache.get(key) is None


def test_what_changes_a_transcript_changes_its_key_and_what_does_not_does_not():
    key = AsrConfig().transcription_key()
    assert AsrConfig(beam_size=1).transcription_key() != key
    assert AsrConfig(vad={"threshold": 0.6}).transcription_key() != key
    assert AsrConfig(compute_type="float32").transcription_key() != key
    assert AsrConfig(condition_on_previous_text=True).transcription_key() != key
    assert AsrConfig(cpu_threads=4, workers=3, route={"min_avg_logprob": -1.0}, sentence_pause_s=0.5,
                     hallucination={"max_quiet_share": 0.5}).transcription_key() == key


def test_the_corpus_fingerprint_follows_asr_settings_but_not_threads_or_paths(tmp_path):
    base = CorpusConfig(manifest="m.jsonl")
    assert CorpusConfig(manifest="m.jsonl", asr={"route": {"min_words_per_s": 0.5}}).fingerprint() != base.fingerprint()
    assert CorpusConfig(manifest="m.jsonl", asr={"beam_size": 2}).fingerprint() != base.fingerprint()
    assert CorpusConfig(manifest="m.jsonl", asr={"enabled": False}).fingerprint() != base.fingerprint()
    assert CorpusConfig(manifest="m.jsonl", asr={"cpu_threads": 8, "workers": 2}).fingerprint() == base.fingerprint()
    # A model folder counts by content: the same model in two places is one fingerprint.
    for where in ("a/tiny", "b/tiny"):
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "config.json").write_text(json.dumps({"layers": 4}))
        (tmp_path / where / "model.bin").write_bytes(b"0" * 100)
    one, two = (CorpusConfig(manifest="m.jsonl", asr={"model": str(tmp_path / w)}) for w in ("a/tiny", "b/tiny"))
    assert one.fingerprint() == two.fingerprint()
    (tmp_path / "b/tiny/model.bin").write_bytes(b"0" * 101)
    assert one.fingerprint() != two.fingerprint()
