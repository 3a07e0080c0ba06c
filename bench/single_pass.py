"""CPU per video of the decode work, today's separate stages against the single pass (issue 22).

    .venv/bin/python -m bench.single_pass [--videos N] [--long]

Generated 93 s H.264 clips with real motion (a panned test pattern, a mandelbrot zoom, moving
test sources), keyframes every 2 s and no keyframe at the cuts, cached in bench/.cache/. For each
clip, in fresh processes (CPU-s from getrusage, children's decoder threads included):
- today: `detect_scenes` (scan="full") + the frames check (`decode_frames` of the timeline's first
  and last times) [text path], + `decode_scene_frames` [caption path];
- new: `decode_video` with the default scan ("gops"), without [text] and with caption times [caption];
whether the scenes (cut times and detector scores), the timeline and the caption frames are the
same, and the decodes of each way: the file opens (`av.open` of the clip) counted in its process.
With --long, the `scenedetect` CLI (detect-adaptive, defaults) against `decode_video` on a
10-minute 720p video, and whether both found the same cuts (within a frame; where not, the cut
times each found alone).
Goals: new/today <= 0.35 (text), <= 0.4 (caption); CLI/ours >= 3; decodes per video 1.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import scenes as scenes_bench
from curation.video.synthetic import ffmpeg_exe
from schemas.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "single_pass"
FPS = 25  # of the generated clips
# (lavfi source, seconds); the panned pattern is a camera move over a larger picture.
SHOTS = (("testsrc2=size=1280x720", 17), ("mandelbrot=size=1280x720", 11), ("pan", 23),
         ("testsrc2=size=1280x720", 13), ("pan", 29))

# Counts the file opens (`av.open` of the clip) in the child: every decode entry point (the scene
# scan, `decode_frames`, `decode_video` and its fallbacks) reads the file through one.
_COUNT_OPENS = """
import av, sys
_av_open, opens = av.open, []
def _counting_open(file, *args, **kwargs):
    opens.append(str(file))
    return _av_open(file, *args, **kwargs)
av.open = _counting_open
"""
_CHILD = _COUNT_OPENS + """
import hashlib, json, resource
import numpy as np
from curation.text.descriptions import DescriptionConfig, caption_frame_times, decode_scene_frames
from curation.video.frames import decode_frames, frame_timeline
from curation.video.scenes import SceneConfig, detect_scenes
from curation.video.single_pass import decode_video
path, way, captions = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
cfg = DescriptionConfig()
def digest(frames):
    h = hashlib.sha256()
    for sid in sorted(frames):
        times, images = frames[sid]
        h.update(json.dumps(times).encode()); [h.update(np.ascontiguousarray(a).tobytes()) for a in images]
    return h.hexdigest()
if way == "today":
    scenes = detect_scenes(path, "bench", SceneConfig(scan="full"))
    times = frame_timeline(scenes[-1].end_s)
    decode_frames(path, [times[0], times[-1]], 28 * 28 * 4)
    frames = decode_scene_frames(path, scenes, cfg) if captions else None
    reported = None
else:
    out = decode_video(path, "bench", None, SceneConfig(), None,
                       (lambda s: caption_frame_times(s, cfg)) if captions else None, cfg.caption_max_pixels)
    scenes, times, frames, reported = out.scenes, out.timeline, out.captions, out.decodes
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": r.ru_utime + r.ru_stime, "cuts": [(s.start_s, s.score) for s in scenes[1:]], "timeline": times,
                  "frames": digest(frames) if frames else None, "decodes": opens.count(path), "reported": reported}))
"""
# The long video's "ours": the default pass alone; its cuts (split-long scenes are not cuts) and opens.
_LONG = _COUNT_OPENS + """
import json
from curation.video.single_pass import decode_video
out = decode_video(sys.argv[1], "bench", None)
print(json.dumps({"cuts": [s.start_s for s in out.scenes[1:] if s.detector != "split-long"],
                  "decodes": opens.count(sys.argv[1])}))
"""
_IDLE = "import resource, json; import curation.video.single_pass, curation.text.descriptions; r = resource.getrusage(resource.RUSAGE_SELF); print(json.dumps({'cpu_s': r.ru_utime + r.ru_stime}))"


def make_clip(path: Path, shots, size=(1280, 720)) -> None:
    w, h = size
    inputs, chains = [], []
    for i, (source, seconds) in enumerate(shots):
        if source == "pan":
            inputs += ["-t", str(seconds), "-f", "lavfi", "-i", f"testsrc=size={w * 3 // 2}x{h * 3 // 2}:rate={FPS}"]
            chains.append(f"[{i}:v]crop={w}:{h}:x='t*16':y='t*8'[s{i}]")
        else:
            inputs += ["-t", str(seconds), "-f", "lavfi", "-i", f"{source}:rate={FPS}"]
            chains.append(f"[{i}:v]null[s{i}]")
    graph = ";".join(chains) + ";" + "".join(f"[s{i}]" for i in range(len(shots))) + \
        f"concat=n={len(shots)}:v=1:a=0,format=yuv420p[v]"
    part = path.with_suffix(".part.mp4")
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *inputs, "-filter_complex", graph, "-map", "[v]",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "50", "-keyint_min", "50",
                    "-sc_threshold", "0", str(part)], check=True)
    part.rename(path)


def clips(n: int) -> list[Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = CACHE / f"motion_93s_720p_{i}.mp4"
        if not path.exists():
            shots = SHOTS[i % len(SHOTS):] + SHOTS[:i % len(SHOTS)]  # a different order per clip
            make_clip(path, shots)
        out.append(path)
    return out


def child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_vs_ours(path: Path) -> dict:
    """Wall and CPU time, and cuts, of the scenedetect CLI and of decode_video, each in its own process."""
    def timed(cmd):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return time.perf_counter() - start, cpu, done.stdout + done.stderr
    with tempfile.TemporaryDirectory() as out:
        cli_wall, cli_cpu, cli_out = timed(scenes_bench.cli_command(path, out))
    our_wall, our_cpu, our_out = timed([sys.executable, "-c", _LONG, str(path)])
    ours = json.loads(our_out.strip().splitlines()[-1])
    return {"cli_wall": cli_wall, "cli_cpu": cli_cpu, "cli_cuts": scenes_bench.cli_timecodes(cli_out),
            "our_wall": our_wall, "our_cpu": our_cpu, "our_cuts": ours["cuts"], "our_decodes": ours["decodes"]}


def cut_comparison(ours: list[float], theirs: list[float], frame_s: float) -> str:
    """One line: the same cuts (within a frame) or where they differ, in seconds."""
    pairs, only_ours, only_cli = scenes_bench.compare_cuts(ours, theirs, frame_s)
    offset = max((abs(a - b) for a, b in pairs), default=0.0)
    head = f"cuts: CLI {len(theirs)}, ours {len(ours)}, {len(pairs)} at the same time (largest offset {offset:.3f} s)"
    if not only_ours and not only_cli:
        return f"{head}: same cuts"
    return (f"{head}: DIFFERENT; only the CLI's at {', '.join(f'{t:.2f}' for t in only_cli) or '-'} s; "
            f"only ours at {', '.join(f'{t:.2f}' for t in only_ours) or '-'} s")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.single_pass", description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--long", action="store_true", help="also the scenedetect CLI on a 10-minute video")
    args = parser.parse_args(argv)
    idle = child(_IDLE)["cpu_s"]  # interpreter and imports: not decoding, taken off every row
    header = f"{'clip':<26}{'path':<9}{'today s':>8}{'new s':>7}{'new/today':>10}{'same':>6}{'decodes':>9}"
    print(f"CPU-s per video (imports, {idle:.2f} s, taken off)\n{header}\n{'-' * len(header)}")
    ratios: dict[str, list[float]] = {"text": [], "caption": []}
    for path in clips(args.videos):
        for kind, captions in (("text", "0"), ("caption", "1")):
            today, new = child(_CHILD, str(path), "today", captions), child(_CHILD, str(path), "new", captions)
            same = all(today[k] == new[k] for k in ("cuts", "timeline", "frames"))
            t, n = today["cpu_s"] - idle, new["cpu_s"] - idle
            ratios[kind].append(n / t)
            print(f"{path.name:<26}{kind:<9}{t:>8.2f}{n:>7.2f}{n / t:>10.2f}{'yes' if same else 'NO':>6}"
                  f"{today['decodes']:>4} -> {new['decodes']}")
            if new["reported"] != new["decodes"]:
                print(f"  decode_video reported {new['reported']} decodes, {new['decodes']} file opens counted")
    for kind, values in ratios.items():
        if values:
                print(f"mean new/today, {kind} path: {sum(values) / len(values):.2f}")
    if args.long:
        path = CACHE / "motion_600s_720p.mp4"
        if not path.exists():
            make_clip(path, list(SHOTS) * 6 + [("pan", 600 - 6 * 93)])
        r = cli_vs_ours(path)
        print(f"10-minute 720p: scenedetect CLI {r['cli_wall']:.1f} s wall / {r['cli_cpu']:.1f} CPU-s, "
              f"ours {r['our_wall']:.1f} s / {r['our_cpu']:.1f} CPU-s ({r['our_decodes']} decode): "
              f"CLI/ours {r['cli_wall'] / r['our_wall']:.2f} wall, {r['cli_cpu'] / r['our_cpu']:.2f} CPU")
        print(f"10-minute 720p, {cut_comparison(r['our_cuts'], r['cli_cuts'], 1 / FPS)}")
    print("goals: new/today <= 0.35 (text) and <= 0.4 (caption); CLI/ours >= 3; decodes 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
