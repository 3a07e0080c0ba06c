"""Pre-extracted frame folders (the MMDuet2 release's layout) and reading frames back from files.

The released SFT and RL data point at JPEG frames, one folder per clip named
`<video_id>-<start>s_<end>s`, numbered `000001.jpg`, ... in time order, at the file's frame interval
and pixel budget (FORMATS.md). `extract_frame_folder` writes such a folder with ONE ffmpeg run (the
command line built by `ffmpeg-python`, on the binary `imageio-ffmpeg` ships) that picks the same
frames as `curation.video.frames.decode_frames` (the one decoder the trainer streams from): for
each timeline time t, the first frame shown at or after t - half a frame, scaled to Qwen's
`smart_resize` size. A `select` expression does the picking: a frame is kept when a timeline point
falls between the previous frame's time and its own (each shifted by half a frame). Times there are
the same stream times (`curation.video.stream_time`): ffmpeg runs with `-copyts`, so its `t` is
the demuxer's own timestamp, and the video stream's start as PyAV reads it is subtracted in the
expression (without `-copyts` ffmpeg counts from the earliest stream, an audio track that starts
first included, and its `-t` too; so the run is bounded by `-frames:v` instead). A source whose
frames are farther apart than the interval would need one frame twice; such a clip is refused
(`frame_count_mismatch`), not silently thinned.

`load_frame_files` reads frame files back as RGB arrays at the trainer's pixel budget (Pillow; it
decodes images, not video, so it is not a second video decoder).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curation.skips import Skip
from curation.video.frames import END_SLACK_S, PATCH_FACTOR, smart_resize
from curation.video.stream_time import stream_clock

STAGE = "frame_folders"
JPEG_QUALITY = 2  # ffmpeg's -q:v scale (2 = near lossless); the release does not state its own


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def clip_folder_name(video_id: str, start_s: float, end_s: float) -> str:
    """`<video_id>-<start>s_<end>s` (FORMATS.md), whole seconds as in the release when they are whole."""
    return f"{video_id}-{start_s:g}s_{end_s:g}s"


def stream_geometry(video: Path) -> tuple[int, int, float, float]:
    """(height, width, half a frame in seconds, the stream's start on the demuxer's clock in
    seconds) of the first video stream."""
    import av

    with av.open(str(video)) as container:
        if not container.streams.video:
            raise ValueError(f"{video}: no video stream")
        stream = container.streams.video[0]
        return stream.height, stream.width, 0.5 / float(stream.average_rate or 25), stream_clock(stream).start_s


def select_expression(first_index: int, last_index: int, seconds_per_frame: float, half_frame_s: float,
                      start_s: float = 0.0) -> str:
    """ffmpeg `select` expression keeping, for timeline points first..last (t_k = k * spf of stream
    time, which starts at `start_s` of ffmpeg's `t`), the first frame at or after t_k - half a frame.
    n(x) counts the points at or before x + half a frame."""
    def count(x: str) -> str:
        return f"(floor(({x}-({start_s:.9f})+{half_frame_s:.9f})/{seconds_per_frame:.9f}+1e-6)+1)"

    before = f"if(isnan(prev_pts),0,{count('prev_pts*TB')})"
    now = count("t")
    return f"gt({now},{before})*lte({before},{last_index})*gte({now}-1,{first_index})"


def extract_frame_folder(video: Path, folder: Path, times_s: Sequence[float], seconds_per_frame: float,
                         max_pixels: int) -> list[Path] | Skip:
    """Write the frames at `times_s` (consecutive points of the episode timeline k * spf) as
    `folder/000001.jpg`, ...; their paths, or why the clip could not be written."""
    import ffmpeg

    if not times_s:
        return Skip(STAGE, "no_frames", f"{video}: no timeline point")
    try:
        height, width, half_frame_s, start_s = stream_geometry(video)
    except Exception as error:  # an untrusted file: whatever PyAV raised is a counted skip
        return Skip(STAGE, "video_undecodable", f"{video}: {type(error).__name__}: {error}")
    h, w = smart_resize(height, width, max_pixels)
    first, last = round(times_s[0] / seconds_per_frame), round(times_s[-1] / seconds_per_frame)
    if last - first + 1 != len(times_s):
        raise ValueError("times_s must be consecutive points of the k * seconds_per_frame timeline")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    stream = (
        ffmpeg.input(str(video))
        .video.filter("select", select_expression(first, last, seconds_per_frame, half_frame_s, start_s))
        .filter("scale", w, h, flags="bilinear")
        .output(str(folder / "%06d.jpg"), fps_mode="passthrough", **{"q:v": JPEG_QUALITY, "frames:v": len(times_s)})
        .global_args("-loglevel", "error", "-nostdin", "-copyts")
    )
    done = subprocess.run(ffmpeg.compile(stream, cmd=ffmpeg_exe(), overwrite_output=True),
                          capture_output=True, text=True)
    if done.returncode != 0:
        return Skip(STAGE, "video_undecodable", f"{video}: ffmpeg: {done.stderr.strip()[-300:]}")
    paths = sorted(folder.glob("*.jpg"))
    # The video's last frame also stands for timeline points just past it (decode_frames's rule).
    short = len(times_s) - len(paths)
    if paths and 0 < short <= max(1, int(END_SLACK_S / seconds_per_frame)):
        for i in range(len(paths), len(times_s)):
            shutil.copyfile(paths[-1], folder / f"{i + 1:06d}.jpg")
        paths = sorted(folder.glob("*.jpg"))
    if len(paths) != len(times_s):
        return Skip(STAGE, "frame_count_mismatch", f"{video}: {len(paths)} frames for {len(times_s)} timeline points")
    return paths


def resolve_frame(frames_root: Path, image: str) -> Path:
    """A frame path from an outside file (frame input, released data), always inside `frames_root`:
    as given when it lies there, else its last two parts (clip folder / frame file: released
    files may carry the authors' absolute paths)."""
    root = frames_root.resolve()
    path = (root / image).resolve()
    if path.is_relative_to(root) and path.is_file():
        return path
    tail = Path(*Path(image).parts[-2:]) if len(Path(image).parts) >= 2 else Path(Path(image).name)
    path = (root / tail).resolve()
    return path if path.is_relative_to(root) else root / "<outside>"


def load_frame_files(paths: Sequence[Path], max_pixels: int) -> list[np.ndarray] | Skip:
    """RGB uint8 arrays of image files, resized by `smart_resize` unless already on Qwen's patch
    grid within `max_pixels`."""
    from PIL import Image, UnidentifiedImageError

    frames = []
    for path in paths:
        if not Path(path).is_file():
            return Skip(STAGE, "frame_missing", f"{path} does not exist")
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            return Skip(STAGE, "frame_unreadable", f"{path}: {type(error).__name__}: {error}")
        # A frame already on the patch grid within the budget is kept as it is: smart_resize is not
        # idempotent below its pixel floor, and the exporter's frames come out of it.
        on_grid = rgb.height % PATCH_FACTOR == 0 and rgb.width % PATCH_FACTOR == 0
        h, w = (rgb.height, rgb.width) if on_grid and rgb.height * rgb.width <= max_pixels else \
            smart_resize(rgb.height, rgb.width, max_pixels)
        if (h, w) != (rgb.height, rgb.width):
            rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
        frames.append(np.asarray(rgb))
    return frames
