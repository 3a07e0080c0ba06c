"""The ASR stage against faster-whisper's own `transcribe` on the same file and settings.

    .venv/bin/python -m bench.asr [--seconds 120] [--repeats 3] [--threads 1]

A narrated clip of `--seconds` (espeak-ng sentences with short pauses, muxed over generated scenes;
cached in bench/.cache/asr/; without espeak-ng the sample's 24 s clip) is transcribed, in turns, by
- ours: `curation.speech.route.route_speech` (PyAV decode onto the video's clock, quiet spans, VAD +
  Whisper, sentences, routing, the transcript written to a fresh cache), and
- theirs: `WhisperModel.transcribe(path, **AsrConfig.transcribe_options())`, the stage's settings,
  its segments consumed (its own PyAV decode included),
on one loaded model (the bundled tiny.en unless asr.model is given by --model). CPU is the
process's (CTranslate2's threads included). Prints each run with whether Whisper wrote the same
words at the same times on both sides (ours read from the transcript cache, before the
hallucination rules drop anything; the ratio means nothing unless they did), the sentences and
the segments dropped as hallucinated; then the median ratio ours/theirs (goal <= 1.05), the
real-time factor (CPU and wall seconds per second of audio) and the CPU hours that factor gives
for 1,410 hours of video (the 52k corpus, FACTS.md), at this machine's speed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from curation.skips import Skip
from curation.speech import synthetic
from curation.speech.cache import TranscriptCache, transcript_key
from curation.speech.config import AsrConfig
from curation.speech.route import SpeechOutcome, route_speech
from curation.speech.transcribe import Word, load_model
from schemas.cli import ArgumentParser
from tests.speech_media import faster_whisper_words, same_words, video_record

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "asr"
CORPUS_HOURS = 1410  # the 52k corpus's video, FACTS.md (50,228 x 92.7 s + 2,543 x 164.4 s)


def narrated_clip(seconds: int) -> Path:
    if not synthetic.espeak_available():
        return ROOT / "samples" / "videos" / "spoken_tour.mp4"
    path = CACHE / f"narrated-{seconds}s.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        synthetic.make_speech_video(path, synthetic.narration_script(seconds), [10.0] * (seconds // 10))
    return path


def timed(fn) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


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
    key = transcript_key(video.sha256, cfg.transcription_key())
    print(f"{path.name}: {video.duration_s:.1f} s, model {cfg.model_identity()}, {cfg.compute_type}, "
          f"beam {cfg.beam_size}, {args.threads} thread(s)")

    def ours() -> tuple[list[Word], SpeechOutcome]:
        with tempfile.TemporaryDirectory() as cache:
            out = route_speech(path, video, cfg, cache)
            assert not isinstance(out, Skip) and out.route.route == "asr", out
            return TranscriptCache(cache).get(key).words, out  # Whisper's words, before our rules

    def theirs() -> tuple[list[Word], None]:
        return faster_whisper_words(model, path, cfg), None

    theirs()  # warm-up: first-call allocations and the VAD model's load are in neither side
    runs = []
    for i in range(args.repeats):
        first, second = (ours, theirs) if i % 2 == 0 else (theirs, ours)  # alternate against drift
        a, b = timed(first), timed(second)
        mine, other = (a, b) if first is ours else (b, a)
        runs.append((mine, other))
        # The same work: Whisper wrote the same words at the same times on both sides.
        same, how = same_words(mine[2][0], other[2][0])
        dropped = {k: n for k, n in mine[2][1].counts.items() if k.startswith("asr_dropped_")}
        print(f"run {i + 1}: ours {mine[0]:.2f} CPU-s ({mine[1]:.2f} s wall), faster-whisper {other[0]:.2f} "
              f"CPU-s ({other[1]:.2f} s wall), ratio {mine[0] / other[0]:.3f}; same words as faster-whisper: "
              f"{'yes' if same else 'NO'} ({how}); {len(mine[2][1].segments)} sentences, hallucinated segments "
              f"dropped: {dropped or 'none'}")
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
