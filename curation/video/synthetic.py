"""Generated test videos with scene cuts at known times (ffmpeg lavfi sources, no downloads).

Used by the sample corpus, the tests, the benchmarks and the soak run. Real clips beat these
where a check is about real video; these are for size, length, cut positions and faults.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import ffmpeg
import imageio_ffmpeg

# Visually distinct lavfi sources, so every boundary between two of them is a hard cut.
SOURCES = ("testsrc2", "smptebars", "mandelbrot", "rgbtestsrc", "cellauto", "color=c=navy",
           "life", "color=c=darkred", "pal100bars", "color=c=darkgreen")


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def make_video(path: str | Path, scene_lengths_s: Sequence[float], size: tuple[int, int] = (320, 240),
               fps: int = 25, audio: bool = False, crf: int = 30) -> list[float]:
    """Write an H.264 MP4 whose scenes have the given lengths; returns the cut times in seconds.
    The command line is built with ffmpeg-python and run on the binary imageio-ffmpeg ships."""
    width, height = size
    scenes = []
    for i, length in enumerate(scene_lengths_s):
        source = SOURCES[i % len(SOURCES)]
        sep = ":" if "=" in source else "="
        # -t as an input option: not every lavfi source has a duration option.
        scenes.append(ffmpeg.input(f"{source}{sep}size={width}x{height}:rate={fps}", f="lavfi", t=f"{length}"))
    video = ffmpeg.concat(*scenes, v=1, a=0).filter("format", "yuv420p")
    streams, options = [video], {}
    if audio:
        streams.append(ffmpeg.input("sine=frequency=440", f="lavfi", t=f"{sum(scene_lengths_s)}").audio)
        options = {"acodec": "aac", "b:a": "32k"}
    out = ffmpeg.output(*streams, str(path), vcodec="libx264", preset="veryfast", crf=crf, g=fps * 2,
                        movflags="+faststart", **options).global_args("-loglevel", "error")
    subprocess.run(ffmpeg.compile(out, cmd=ffmpeg_exe(), overwrite_output=True), check=True)
    cuts, t = [], 0.0
    for length in scene_lengths_s[:-1]:
        t += length
        cuts.append(t)
    return cuts
