"""The ASR stage against faster-whisper's own `transcribe` on the same file and settings.

    .venv/bin/python -m bench.asr [--seconds 120] [--repeats 3] [--threads 1]

A narrated clip of `--seconds` (espeak-ng sentences with short pauses, muxed over generated scenes;
cached in bench/.cache/asr/; without espeak-ng the sample's 24 s clip) is transcribed, in turns, by
- ours: `curation.speech.route.route_speech` (PyAV decode onto the video's clock, quiet spans, VAD +
  Whisper, sentences, routing, the transcript written to a fresh cache), and
- theirs: `WhisperModel.transcribe(path, ...)` with the same beam, VAD options and word timestamps,
  its segments consumed (its own PyAV decode included),
on one loaded model (the bundled tiny.en unless asr.model is given by --model). CPU is the
process's (CTranslate2's threads included). Prints each run with the word error rate of our
transcript against theirs (0: both did the same work), the median ratio ours/theirs (goal
<= 1.05), the real-time factor (CPU and wall seconds per second of audio) and the CPU hours that
factor gives for 1,410 hours of video (the 52k corpus, FACTS.md), at this machine's speed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from curation.speech import synthetic
from curation.speech.config import AsrConfig
from curation.speech.route import route_speech
from curation.speech.transcribe import load_model
from schemas.cli import ArgumentParser
from schemas.records import Segment
from tests.speech_media import video_record, word_error_rate

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "asr"
CORPUS_HOURS = 1410  # the 52k corpus's video, FACTS.md (50,228 x 92.7 s + 2,543 x 164.4 s)
LINES = ("The red bicycle leans against the old stone wall.", "A woman walks her dog along the river.",
         "Children are playing football in the park.", "The kettle is boiling on the stove.",
         "Please close the window before you leave.", "Two trains pass each other on the bridge.")


def narrated_clip(seconds: int) -> Path:
    if not synthetic.espeak_available():
        return ROOT / "samples" / "videos" / "spoken_tour.mp4"
    path = CACHE / f"narrated-{seconds}s.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        script = [(t, LINES[i % len(LINES)]) for i, t in enumerate(range(1, seconds - 4, 4))]
        synthetic.make_speech_video(path, script, [10.0] * (seconds // 10))
    return path


def timed(fn) -> tuple[float, float, list]:
    cpu, wall = time.process_time(), time.perf_counter()
    texts = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, texts


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.asr", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="asr.cpu_threads")
    parser.add_argument("--model", default=None, help="asr.model (default: the bundled tiny.en)")
    args = parser.parse_args(argv)
    cfg = AsrConfig(model=args.model, cpu_threads=args.threads)
    path = narrated_clip(args.seconds)
    video = video_record(path, "bench")
    model = load_model(cfg, workers=1)
    print(f"{path.name}: {video.duration_s:.1f} s, model {cfg.model_identity()}, {cfg.compute_type}, "
          f"beam {cfg.beam_size}, {args.threads} thread(s)")

    def ours() -> list[Segment]:
        with tempfile.TemporaryDirectory() as cache:
            out = route_speech(path, video, cfg, cache)
            assert out.route.route == "asr", out.route
        return out.segments

    def theirs() -> list[str]:
        segments, _ = model.transcribe(str(path), language=cfg.language, beam_size=cfg.beam_size,
                                       word_timestamps=True, vad_filter=True, vad_parameters=cfg.vad.options())
        return [segment.text for segment in segments]

    theirs()  # warm-up: first-call allocations and the VAD model's load are in neither side
    runs = []
    for i in range(args.repeats):
        first, second = (ours, theirs) if i % 2 == 0 else (theirs, ours)  # alternate against drift
        a, b = timed(first), timed(second)
        mine, other = (a, b) if first is ours else (b, a)
        runs.append((mine, other))
        # The same work: both transcribed the same words (our sentences regroup Whisper's segments).
        differ = word_error_rate(other[2], mine[2])
        print(f"run {i + 1}: ours {mine[0]:.2f} CPU-s ({mine[1]:.2f} s wall), faster-whisper {other[0]:.2f} "
              f"CPU-s ({other[1]:.2f} s wall), ratio {mine[0] / other[0]:.3f}; word error rate of ours against "
              f"theirs {differ:.3f}")
    ratio = statistics.median(m[0] / o[0] for m, o in runs)
    cpu_rtf = statistics.median(m[0] for m, _ in runs) / video.duration_s
    wall_rtf = statistics.median(m[1] for m, _ in runs) / video.duration_s
    print(f"ours / faster-whisper CPU, median of {len(runs)}: {ratio:.3f} (goal <= 1.05)")
    print(f"real-time factor of our stage: {cpu_rtf:.4f} CPU-s and {wall_rtf:.4f} wall-s per second of audio")
    print(f"at that factor, {CORPUS_HOURS} h of video (the 52k corpus, quoted from FACTS.md): "
          f"{cpu_rtf * CORPUS_HOURS:.1f} CPU-hours on this machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
