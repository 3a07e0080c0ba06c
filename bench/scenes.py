"""Scene detection speed and memory, as ratios against baselines measured in the same run.

    .venv/bin/python -m bench.scenes [--quick] [--video-dir DIR]

For each sample clip (and a generated 10-minute 720p video unless --quick): the time of
`detect_scenes` over a plain full PyAV decode of the same file (threaded, frames discarded: the
floor for a stage that looks at every frame; goal <= 1.5x; whether `detect_scenes` decoded as many
frames, counted in its process) and the `scenedetect` CLI with its
defaults over `detect_scenes` (goal >= 3x), whether the cuts agree with the CLI's within one
frame, and the peak memory (ru_maxrss) of `detect_scenes` in a fresh process (goal < 500 MB). The
opt-in `scan="keyframes"` mode is timed too, and its cuts checked against the full scan's.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

from curation.video.synthetic import make_video
from schemas.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
CLIPS = sorted((ROOT / "samples" / "videos").glob("*.mp4"))
SCENEDETECT = Path(sys.executable).with_name("scenedetect")
LONG_NAME = "ten_min_720p.mp4"
LONG_SCENES_S = (7, 13, 19, 5, 11, 23, 17, 9, 29, 3, 15, 21)  # cycled to 600 s: cuts at varied gaps

_CHILD = """
import json, resource, sys, time
import curation.video.scenes as scenes_mod
from curation.video.scenes import SceneConfig, detect_scenes
path, scan, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
decoded = [0]  # frames the scan decoded (its frame iterator, counted), for the ours/decode check
def counted(container, stream, frames=scenes_mod.iter_frames):
    for frame in frames(container, stream):
        decoded[0] += 1
        yield frame
scenes_mod.iter_frames = counted
times = []
for _ in range(repeats):
    decoded[0] = 0
    t = time.perf_counter()
    scenes = detect_scenes(path, "bench", SceneConfig(scan=scan))
    times.append(time.perf_counter() - t)
cuts = [s.start_s for s in scenes[1:] if s.detector != "split-long"] if isinstance(scenes, list) else str(scenes)
print(json.dumps({"seconds": min(times), "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "cuts": cuts, "frames": decoded[0]}))
"""


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def plain_decode(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def cli_command(path: Path, out: str) -> list[str]:
    """`scenedetect -i FILE detect-adaptive list-scenes` (defaults otherwise), writing nothing."""
    return [str(SCENEDETECT), "-i", str(path), "-o", out, "detect-adaptive", "list-scenes", "-n", "-s"]


def cli_timecodes(output: str) -> list[float]:
    """The cut times (seconds) in the CLI's printed "timecode list"."""
    match = re.search(r"timecode list:\s*\n\s*(\S*)", output)
    stamps = match.group(1).split(",") if match and match.group(1) else []
    return [_seconds(stamp) for stamp in stamps if stamp]


def cli_cuts(path: Path) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(cli_command(path, out), capture_output=True, text=True, check=True)
    return cli_timecodes(done.stdout + done.stderr)


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def cli_startup_s() -> float:
    return best_of(2, lambda: subprocess.run([str(SCENEDETECT), "version"], capture_output=True, check=True))[0]


def compare_cuts(ours: list[float], theirs: list[float], frame_s: float
                 ) -> tuple[list[tuple[float, float]], list[float], list[float]]:
    """Cuts paired within one frame (ours, theirs), and those only in ours and only in theirs."""
    pairs, only_ours, only_theirs = [], [], []
    a, b = sorted(ours), sorted(theirs)
    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and j < len(b) and abs(a[i] - b[j]) <= frame_s + 1e-6:
            pairs.append((a[i], b[j]))
            i, j = i + 1, j + 1
        elif j == len(b) or (i < len(a) and a[i] < b[j]):
            only_ours.append(a[i])
            i += 1
        else:
            only_theirs.append(b[j])
            j += 1
    return pairs, only_ours, only_theirs


def cuts_agree(ours: list[float], theirs: list[float], frame_s: float) -> bool:
    _, only_ours, only_theirs = compare_cuts(ours, theirs, frame_s)
    return not only_ours and not only_theirs


def run_detect(path: Path, scan: str, repeats: int) -> dict:
    """detect_scenes in a fresh process: best time, peak resident memory, cut times."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), scan, str(repeats)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if isinstance(result["cuts"], str):
        raise SystemExit(f"{path.name}: {result['cuts']}")
    return result


def long_video(video_dir: Path) -> Path:
    path = video_dir / LONG_NAME
    if not path.exists():
        lengths, total = [], 0
        for length in itertools.cycle(LONG_SCENES_S):
            lengths.append(min(length, 600 - total))
            total += lengths[-1]
            if total >= 600:
                break
        start = time.perf_counter()
        make_video(path.with_suffix(".part.mp4"), lengths, size=(1280, 720), fps=25)
        path.with_suffix(".part.mp4").rename(path)
        print(f"generated {path} in {time.perf_counter() - start:.0f} s")
    return path


def bench_file(path: Path, repeats: int) -> dict:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    frame_s = 1 / float(rate)
    decode_s, frames = best_of(repeats, lambda: plain_decode(path))
    full = run_detect(path, "full", repeats)
    keyframes = run_detect(path, "keyframes", repeats)
    cli_s, theirs = best_of(repeats, lambda: cli_cuts(path))
    return {"file": path.name, "frames": frames, "ours_frames": full["frames"], "decode_s": decode_s,
            "ours_s": full["seconds"],
            "key_s": keyframes["seconds"], "cli_s": cli_s, "cuts": len(full["cuts"]), "cli_cuts": len(theirs),
            "agree": cuts_agree(full["cuts"], theirs, frame_s),
            "key_agree": cuts_agree(keyframes["cuts"], full["cuts"], frame_s), "rss_mb": full["maxrss_kb"] / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sample clips only, no 10-minute video")
    parser.add_argument("--video-dir", type=Path, help="where the generated video is kept (default: a temp dir)")
    args = parser.parse_args(argv)
    startup_s = cli_startup_s()
    rows = [bench_file(path, repeats=3) for path in CLIPS]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.quick:
            video_dir = args.video_dir or Path(tmp)
            video_dir.mkdir(parents=True, exist_ok=True)
            rows.append(bench_file(long_video(video_dir), repeats=1))
    print(f"\nscenedetect CLI start-up alone (`scenedetect version`): {startup_s:.2f} s; "
          "'ours' is detect_scenes with scan='full' (every frame); 'key' is scan='keyframes'")
    header = (f"{'file':<27}{'frames':>7}{'decode s':>9}{'ours s':>8}{'key s':>8}{'CLI s':>8}"
              f"{'ours/decode':>12}{'=frames':>8}{'CLI/ours':>9}{'(CLI-start)/ours':>17}{'key/decode':>11}{'cuts':>5}"
              f"{'=CLI':>5}{'key=ours':>9}{'peak MB':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['file']:<27}{row['frames']:>7}{row['decode_s']:>9.2f}{row['ours_s']:>8.2f}{row['key_s']:>8.2f}"
              f"{row['cli_s']:>8.2f}{row['ours_s'] / row['decode_s']:>12.2f}"
              f"{'yes' if row['ours_frames'] == row['frames'] else 'NO':>8}{row['cli_s'] / row['ours_s']:>9.2f}"
              f"{max(row['cli_s'] - startup_s, 0) / row['ours_s']:>17.2f}{row['key_s'] / row['decode_s']:>11.2f}"
              f"{row['cuts']:>5}{'yes' if row['agree'] else 'NO':>5}{'yes' if row['key_agree'] else 'NO':>9}"
              f"{row['rss_mb']:>8.0f}")
    print("=frames: ours decoded as many frames as the plain decode; key=ours: the keyframes scan found the"
          " full scan's cuts")
    print("goals: ours/decode <= 1.5; CLI/ours >= 3; same cuts as the CLI within one frame (=CLI);"
          " peak memory (fresh process, ru_maxrss) < 500 MB on the 10-minute video")
    return 0


if __name__ == "__main__":
    sys.exit(main())
