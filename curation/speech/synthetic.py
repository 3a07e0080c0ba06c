"""Generated test videos with speech of a known script at known times (Debian's `espeak-ng`).

For the sample's speech clip, the ASR tests and the benchmark: each sentence is spoken to a WAV by
espeak-ng, placed at its start time on a silent (or tone/music) track, and muxed over generated
scenes with the ffmpeg binary imageio-ffmpeg ships. Returns where each sentence's voice really is
(its first and last audible sample), the truth the transcript is checked against.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from curation.video.synthetic import ffmpeg_exe, make_video
from schemas.cli import ArgumentParser

ESPEAK = "espeak-ng"
RATE = 22_050  # espeak-ng's output rate
AUDIBLE = 0.01  # of full scale: quieter samples at a sentence's edges are its silence padding


@dataclass(frozen=True)
class Spoken:
    start_s: float
    end_s: float
    text: str


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def speak(text: str, voice: str = "en-us", words_per_minute: int = 150) -> np.ndarray:
    """espeak-ng's voice for `text` as float samples at RATE."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([ESPEAK, "-v", voice, "-s", str(words_per_minute), "-w", str(out), text], check=True,
                       capture_output=True)
        with wave.open(str(out)) as wav:
            assert wav.getframerate() == RATE and wav.getnchannels() == 1 and wav.getsampwidth() == 2
            data = np.frombuffer(wav.readframes(wav.getnframes()), np.int16)
    return data.astype(np.float32) / 32768


def music_bed(duration_s: float, level: float = 0.2) -> np.ndarray:
    """A melody of plucked chords, two per second: tonal and rhythmic, with no voice in it."""
    t = np.arange(round(duration_s * RATE)) / RATE
    roots = (220.0, 261.6, 196.0, 246.9)
    out = np.zeros_like(t)
    for beat in range(int(np.ceil(duration_s * 2))):
        root = roots[beat % len(roots)]
        mask = (t >= beat / 2) & (t < beat / 2 + 0.5)
        local = t[mask] - beat / 2
        chord = sum(np.sin(2 * np.pi * root * ratio * local) for ratio in (1.0, 1.26, 1.5, 2.0))
        out[mask] = chord * np.exp(-4 * local) / 4
    return (out * level).astype(np.float32)


def speech_track(sentences: Sequence[tuple[float, str]], duration_s: float, voice: str = "en-us",
                 bed: np.ndarray | None = None) -> tuple[np.ndarray, list[Spoken]]:
    """A track of `duration_s` with each (start_s, text) spoken at its start, over `bed` if given."""
    track = np.zeros(round(duration_s * RATE), np.float32)
    if bed is not None:
        track[: len(bed)] += bed[: len(track)]
    spoken = []
    for start_s, text in sentences:
        voice_samples = speak(text, voice)
        at = round(start_s * RATE)
        piece = voice_samples[: max(0, len(track) - at)]
        track[at: at + len(piece)] += piece
        loud = np.flatnonzero(np.abs(piece) > AUDIBLE)
        if loud.size:
            spoken.append(Spoken(round((at + loud[0]) / RATE, 3), round((at + loud[-1]) / RATE, 3), text))
    return np.clip(track, -1, 1), spoken


def write_wav(path: str | Path, samples: np.ndarray, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((samples * 32767).astype(np.int16).tobytes())


def mux_audio(video: str | Path, audio: str | Path, out: str | Path, audio_offset_s: float = 0.0,
              channels: int = 1, sample_rate: int = 22_050, codec: str = "aac", bitrate: str = "48k") -> None:
    """`video`'s picture with `audio` as its sound, the audio stream starting `audio_offset_s` later."""
    picture = ffmpeg.input(str(video)).video
    sound = ffmpeg.input(str(audio), itsoffset=f"{audio_offset_s}").audio
    cmd = ffmpeg.output(picture, sound, str(out), vcodec="copy", acodec=codec, ac=channels, ar=sample_rate,
                        **{"b:a": bitrate}).global_args("-loglevel", "error")
    subprocess.run(ffmpeg.compile(cmd, cmd=ffmpeg_exe(), overwrite_output=True), check=True)


def make_speech_video(path: str | Path, sentences: Sequence[tuple[float, str]], scene_lengths_s: Sequence[float],
                      voice: str = "en-us", music: bool = False, **mux) -> list[Spoken]:
    """An MP4 of generated scenes with `sentences` spoken at their times; `mux` goes to `mux_audio`."""
    duration_s = float(sum(scene_lengths_s))
    bed = music_bed(duration_s) if music else None
    track, spoken = speech_track(sentences, duration_s, voice, bed)
    with tempfile.TemporaryDirectory() as tmp:
        picture, sound = Path(tmp) / "picture.mp4", Path(tmp) / "sound.wav"
        make_video(picture, scene_lengths_s)
        write_wav(sound, track)
        mux_audio(picture, sound, path, **mux)
    return spoken


# A narration of any length (bench.asr, the ASR tests): these lines in turn, one every 4 s from 1 s.
NARRATION = ("The red bicycle leans against the old stone wall.", "A woman walks her dog along the river.",
             "Children are playing football in the park.", "The kettle is boiling on the stove.",
             "Please close the window before you leave.", "Two trains pass each other on the bridge.")


def narration_script(seconds: float) -> list[tuple[float, str]]:
    """(start_s, line) for a clip of `seconds`, the last line starting 5 s before its end."""
    return [(float(t), NARRATION[i % len(NARRATION)]) for i, t in enumerate(range(1, round(seconds) - 4, 4))]


# The sample's speech clip (samples/videos/spoken_tour.mp4): three 8 s test sources, narrated.
SAMPLE_SCENES_S = (8.0, 8.0, 8.0)
SAMPLE_SCRIPT = (
    (0.5, "Welcome to this short tour of three test pictures."),
    (4.2, "First comes a moving test pattern with a running timecode."),
    (8.8, "Now the screen shows the classic colour bars used to check a monitor."),
    (13.5, "Nothing in this picture moves at all."),
    (16.8, "Finally a colourful fractal appears and slowly zooms in."),
    (21.0, "Thank you for watching."),
)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m curation.speech.synthetic",
                            description="Write the sample's narrated clip (needs espeak-ng).")
    parser.add_argument("out", help="e.g. samples/videos/spoken_tour.mp4")
    args = parser.parse_args(argv)
    for line in make_speech_video(args.out, SAMPLE_SCRIPT, SAMPLE_SCENES_S, bitrate="32k"):
        print(f"{line.start_s:6.2f}-{line.end_s:6.2f} s  {line.text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
