"""Generated test videos with scene cuts at known times (ffmpeg lavfi sources, no downloads).

Used by the sample corpus, the tests, the benchmarks and the soak run. Real clips beat these
where a check is about real video; these are for size, length, cut positions and faults.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg

# Visually distinct lavfi sources, so every boundary between two of them is a hard cut.
SOURCES = ("testsrc2", "smptebars", "mandelbrot", "rgbtestsrc", "cellauto", "color=c=navy",
           "life", "color=c=darkred", "pal100bars", "color=c=darkgreen")


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def make_video(path: str | Path, scene_lengths_s: Sequence[float], size: tuple[int, int] = (320, 240),
               fps: int = 25, audio: bool = False, crf: int = 30) -> list[float]:
    """Write an H.264 MP4 whose scenes have the given lengths; returns the cut times in seconds."""
    width, height = size
    inputs: list[str] = []
    for i, length in enumerate(scene_lengths_s):
        source = SOURCES[i % len(SOURCES)]
        sep = ":" if "=" in source else "="
        # -t as an input option: not every lavfi source has a duration option.
        inputs += ["-t", f"{length}", "-f", "lavfi", "-i", f"{source}{sep}size={width}x{height}:rate={fps}"]
    n = len(scene_lengths_s)
    chain = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0,format=yuv420p[v]"
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", *inputs]
    maps = ["-map", "[v]"]
    if audio:
        total = sum(scene_lengths_s)
        cmd += ["-t", f"{total}", "-f", "lavfi", "-i", "sine=frequency=440"]
        maps += ["-map", f"{n}:a", "-c:a", "aac", "-b:a", "32k"]
    cmd += ["-filter_complex", chain, *maps, "-c:v", "libx264", "-preset", "veryfast",
            "-crf", str(crf), "-g", str(fps * 2), "-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True)
    cuts, t = [], 0.0
    for length in scene_lengths_s[:-1]:
        t += length
        cuts.append(t)
    return cuts
