"""The ASR stage on real speech through the real model: espeak-ng speaks a known script at known
times, ffmpeg muxes it over generated scenes, Whisper tiny.en (the `asr` extra) transcribes it.

Each hostile audio case ends in a route with its reason (or, for a file the probe refuses, that
Skip): no audio track, an audio-only file, 0-length audio, audio far longer or shorter than the
video, 5.1 at 48 kHz, damaged and missing packets, a speaker of another language, music, silence.
"""

from __future__ import annotations

import subprocess
import time

import av
import numpy as np
import pytest

from curation.skips import Skip
from curation.speech import audio as audio_module
from curation.speech import route as route_module
from curation.speech import synthetic
from curation.speech.audio import decode_speech_audio
from curation.speech.config import AsrConfig
from curation.speech.route import route_speech
from curation.video.probe import probe_video
from curation.video.synthetic import ffmpeg_exe, make_video
from tests.conftest import SAMPLES
from tests.speech_media import (
    assert_placed,
    needs_asr,
    needs_espeak,
    remux,
    video_record,
    word_error_rate,
)

pytestmark = [pytest.mark.slow, needs_asr]

SCRIPT = ((1.0, "The red bicycle leans against the old stone wall."),
          (6.0, "A woman walks her dog along the river."),
          (12.0, "Children are playing football in the park."))


def transcribe(path, tmp_path, cfg: AsrConfig | None = None):
    out = route_speech(path, video_record(path), cfg or AsrConfig(), tmp_path / f"transcripts-{time.time_ns()}")
    assert not isinstance(out, Skip), out
    return out


@pytest.fixture(scope="module")
def three_sentences(tmp_path_factory):
    """18 s of three scenes with SCRIPT spoken at its times (mono AAC, 22.05 kHz)."""
    if not synthetic.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "three.mp4"
    return path, synthetic.make_speech_video(path, SCRIPT, (6, 6, 6))


@needs_espeak
def test_a_known_script_comes_back_as_its_sentences_at_their_times(tmp_path):
    script = ((0.5, "Welcome to this short tour of three test pictures."),
              (4.5, "First we see a moving test pattern with a counter in the middle."),
              (9.5, "Now the screen shows the classic colour bars used to check a monitor."),
              (15.0, "Finally a fractal appears and slowly zooms toward its centre."),
              (20.5, "Thank you for watching."))
    path = tmp_path / "tour.mp4"
    spoken = synthetic.make_speech_video(path, script, (8, 8, 8))
    out = transcribe(path, tmp_path)
    assert (out.route.route, out.route.reason) == ("asr", "speech_found"), out.route.detail
    assert word_error_rate(spoken, out.segments) <= 0.25, [s.text for s in out.segments]
    assert_placed(spoken, out.segments, tolerance_s=0.5)
    measures = out.route.transcript
    assert measures.language == "en" and not measures.language_detected  # tiny.en cannot detect
    assert 1.0 <= measures.words_per_s <= 4.0 and measures.avg_logprob > -0.7
    assert [c.segment_id for c in measures.segments] == [s.segment_id for s in out.segments]
    assert all(c.avg_logprob < 0 and 0 <= c.no_speech_prob <= 1 for c in measures.segments)


def test_the_committed_sample_clip_transcribes_to_its_script(tmp_path):
    out = transcribe(SAMPLES / "videos" / "spoken_tour.mp4", tmp_path)
    assert out.route.route == "asr"
    assert word_error_rate([text for _, text in synthetic.SAMPLE_SCRIPT], out.segments) <= 0.25
    assert [round(s.start_s, 1) for s in out.segments] == pytest.approx(
        [start for start, _ in synthetic.SAMPLE_SCRIPT], abs=0.5)


@needs_espeak
def test_audio_that_starts_after_the_picture_is_placed_on_the_video_clock(tmp_path):
    path = tmp_path / "late.mp4"
    spoken = synthetic.make_speech_video(path, SCRIPT[:2], (6, 6), audio_offset_s=2.0)
    with av.open(str(path)) as container:
        assert container.streams.audio[0].start_time * container.streams.audio[0].time_base > 1.9
    shifted = [synthetic.Spoken(s.start_s + 2.0, s.end_s + 2.0, s.text) for s in spoken]
    assert_placed(shifted, transcribe(path, tmp_path).segments)


def test_a_file_whose_streams_start_at_ten_seconds_keeps_the_frames_zero(three_sentences, tmp_path):
    path, spoken = three_sentences
    moved = tmp_path / "moved.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-c", "copy", "-output_ts_offset", "10",
                    str(moved)], check=True)
    with av.open(str(moved)) as container:
        assert all(float(s.start_time * s.time_base) >= 9.9 for s in container.streams)
    assert_placed(spoken, transcribe(moved, tmp_path).segments)


def test_no_audio_track_routes_to_captions(tmp_path):
    out = transcribe(SAMPLES / "videos" / "bikes.mp4", tmp_path)
    assert (out.route.route, out.route.reason, out.segments) == ("captions", "no_audio_track", [])


def test_an_audio_only_file_is_refused_by_the_probe_with_its_reason(three_sentences, tmp_path):
    path = tmp_path / "speech.m4a"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(three_sentences[0]), "-vn", "-c:a", "copy",
                    str(path)], check=True)
    skip = probe_video(path)
    assert isinstance(skip, Skip) and skip.reason == "no_video_stream"


def test_an_audio_track_without_a_sample_routes_to_captions(three_sentences, tmp_path):
    path = tmp_path / "empty-audio.mkv"  # Matroska keeps a track that has no packet; MP4 drops it
    remux(three_sentences[0], path, lambda n, packet: None)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
    out = transcribe(path, tmp_path)
    assert (out.route.route, out.route.reason) == ("captions", "no_audio_samples")


def test_audio_far_longer_than_the_video_is_read_only_to_the_videos_end(tmp_path, monkeypatch):
    if not synthetic.espeak_available():
        pytest.skip("espeak-ng is not installed")
    track, spoken = synthetic.speech_track([*SCRIPT[:2], (60.0, SCRIPT[2][1])], 120.0)
    picture, sound, path = tmp_path / "picture.mp4", tmp_path / "long.wav", tmp_path / "long.mp4"
    make_video(picture, (6, 6))
    synthetic.write_wav(sound, track)
    synthetic.mux_audio(picture, sound, path)
    packets = []
    monkeypatch.setattr(audio_module, "checkpoint", lambda: packets.append(1))  # called once per packet
    assert decode_speech_audio(path, 12.0).duration_s == 12.0  # not the track's 120 s
    assert len(packets) < 20 * synthetic.RATE / 1024  # demuxing stopped near 12 s of 1024-sample packets
    out = transcribe(path, tmp_path)
    assert out.route.route == "asr"
    assert_placed(spoken[:2], out.segments)  # the sentence at 60 s, after the video's 12 s, is not there


def test_audio_far_shorter_than_the_video_is_judged_over_the_video(three_sentences, tmp_path):
    picture, path = tmp_path / "picture.mp4", tmp_path / "short.mp4"
    make_video(picture, (20, 20))
    track, _ = synthetic.speech_track(SCRIPT[:1], 5.0)
    synthetic.write_wav(tmp_path / "short.wav", track)
    synthetic.mux_audio(picture, tmp_path / "short.wav", path)
    out = transcribe(path, tmp_path)
    # 9 words over 40 s of video: too little talk to write dialogues from.
    assert (out.route.route, out.route.reason) == ("captions", "no_speech"), out.route.detail


@needs_espeak
def test_six_channels_at_48_khz_are_mixed_down(tmp_path):
    path = tmp_path / "surround.mp4"
    spoken = synthetic.make_speech_video(path, SCRIPT, (6, 6, 6), channels=6, sample_rate=48000, bitrate="192k")
    with av.open(str(path)) as container:
        audio = container.streams.audio[0].codec_context
        assert (audio.channels, audio.sample_rate) == (6, 48000)
    out = transcribe(path, tmp_path)
    assert word_error_rate(spoken, out.segments) <= 0.25
    assert_placed(spoken, out.segments)


def test_damaged_audio_packets_cost_only_their_own_stretch(three_sentences, tmp_path):
    source, spoken = three_sentences
    rng = np.random.default_rng(0)

    def garbage(n: int, packet: av.Packet) -> av.Packet:
        if not 200 <= n < 260:  # ~9.3-12 s at 1024 samples per packet, 22.05 kHz: between sentences 2 and 3
            return packet
        bad = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
        bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
        return bad

    damaged, dropped = tmp_path / "damaged.mp4", tmp_path / "dropped.mp4"
    remux(source, damaged, garbage)
    remux(source, dropped, lambda n, packet: None if 200 <= n < 260 else packet)
    for path in (damaged, dropped):
        out = transcribe(path, tmp_path)
        assert out.route.route == "asr"
        assert_placed(spoken, out.segments)  # the third sentence, after the damage, keeps its time
    assert transcribe(damaged, tmp_path).counts["asr_damaged_packets"] > 0
    assert transcribe(dropped, tmp_path).route.transcript.gap_s > 2.0


@needs_espeak
def test_a_speaker_of_another_language_routes_to_captions(tmp_path):
    path = tmp_path / "german.mp4"
    synthetic.make_speech_video(path, ((1.0, "Das rote Fahrrad lehnt an der alten Steinmauer."),
                                       (6.0, "Eine Frau geht mit ihrem Hund am Fluss spazieren.")), (6, 6), voice="de")
    out = transcribe(path, tmp_path)
    # tiny.en cannot name the language; its transcript of German is English-sounding and unsure.
    assert (out.route.route, out.route.reason) == ("captions", "low_confidence"), out.route.detail
    assert out.route.transcript.avg_logprob < AsrConfig().route.min_avg_logprob


@pytest.mark.parametrize("sound", ["music", "silence"])
def test_music_or_silence_without_speech_routes_to_captions(tmp_path, sound):
    picture, wav, path = tmp_path / "picture.mp4", tmp_path / "sound.wav", tmp_path / f"{sound}.mp4"
    make_video(picture, (6, 6))
    samples = synthetic.music_bed(12.0) if sound == "music" else np.zeros(12 * synthetic.RATE, np.float32)
    synthetic.write_wav(wav, samples)
    synthetic.mux_audio(picture, wav, path)
    out = transcribe(path, tmp_path)
    assert (out.route.route, out.route.reason) == ("captions", "no_speech"), out.route.detail


def test_a_second_call_reads_the_transcript_and_a_new_setting_transcribes_again(three_sentences, tmp_path,
                                                                                monkeypatch):
    path, _ = three_sentences
    video, cache = video_record(path), tmp_path / "transcripts"
    first = route_speech(path, video, AsrConfig(), cache)
    assert first.counts["asr_transcribed"] == 1

    def no_model(*args):
        raise AssertionError("transcribed again")

    monkeypatch.setattr(route_module, "transcribe_audio", no_model)
    # Routing rules and sentence settings are not part of the transcript: still read from the cache.
    again = route_speech(path, video, AsrConfig(sentence_pause_s=0.5, route={"min_words_per_s": 0.5}), cache)
    assert again.counts == {"asr_from_cache": 1} and again.segments == first.segments
    with pytest.raises(AssertionError, match="transcribed again"):
        route_speech(path, video, AsrConfig(beam_size=2), cache)
