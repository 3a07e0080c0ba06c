"""Every bad input of the curation issue, as files, and the quarantine row each must end as.

Shared by `tests/test_fault_injection.py` and `bench/soak.py`. Each file takes well under a few
seconds to make with the bundled ffmpeg (`imageio_ffmpeg`); none is bigger than half a megabyte.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import imageio_ffmpeg

# Every bad input of the curation issue -> the (stage, reasons) it must end with.
BAD_INPUTS = {
    "zero_bytes": ("acquire", {"empty_file"}),
    "truncated_mp4": ("probe", {"truncated", "undecodable", "not_video"}),
    "text_as_mp4": ("acquire", {"not_video"}),
    "audio_only": ("probe", {"no_video_stream"}),
    "zero_seconds": ("probe", {"no_video_stream", "zero_duration", "unknown_duration", "undecodable"}),
    "ten_hours": ("admit", {"too_long"}),
    "eight_k": ("admit", {"resolution_too_high"}),
    "http_404": ("acquire", {"http_404"}),
    "http_500": ("acquire", {"http_5xx"}),
    "http_timeout": ("acquire", {"timeout"}),
    "../escape": ("manifest", {"unsafe_id"}),
    "bad_scheme": ("acquire", {"scheme_not_allowed"}),
}


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", *args], check=True,
                   capture_output=True, timeout=120)


def make_bad_files(folder: Path, good_video: Path) -> dict[str, Path]:
    """The local bad inputs; each takes well under a few seconds to make."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.mp4" for name in
             ("zero_bytes", "truncated_mp4", "text_as_mp4", "audio_only", "zero_seconds", "ten_hours", "eight_k")}
    if all(p.exists() for p in files.values()):  # made before (the soak keeps them in its cache)
        return files
    files["zero_bytes"].write_bytes(b"")
    data = good_video.read_bytes()
    files["truncated_mp4"].write_bytes(data[: len(data) * 2 // 5])
    files["text_as_mp4"].write_text("this is a text file, whatever its name says\n" * 20)
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=6", "-c:a", "aac", str(files["audio_only"]))
    _ffmpeg("-f", "lavfi", "-i", "color=size=160x120:rate=10", "-frames:v", "0", "-c:v", "libx264",
            str(files["zero_seconds"]))
    # 10 h at 1 fps and 16x16: 36,000 tiny frames encode in about 2 s.
    _ffmpeg("-f", "lavfi", "-i", "color=size=16x16:rate=1", "-t", "36000", "-c:v", "libx264", "-preset",
            "ultrafast", "-pix_fmt", "yuv420p", str(files["ten_hours"]))
    # 8K but long enough to pass the duration rule, so the resolution rule is what stops it.
    _ffmpeg("-f", "lavfi", "-i", "color=size=7680x4320:rate=1", "-t", "5", "-c:v", "libx264", "-preset",
            "ultrafast", "-pix_fmt", "yuv420p", str(files["eight_k"]))
    return files


def always_500_name() -> str:
    """A file name that `FlakyFileServer` answers with HTTP 500 (not a dropped body) when it fails."""
    return next(f"err{i}.mp4" for i in range(100) if int(hashlib.sha256(f"err{i}.mp4".encode()).hexdigest()[8], 16) % 2 == 0)
