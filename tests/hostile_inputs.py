"""Inputs a new user meets that are not in `tests/bad_inputs.py`: videos that used to hang the
decoder or read as truncated, manifest rows and text files that used to raise, and HTTP servers that
redirect where they must not or trickle bytes for ever.

All videos are tiny (64x64 .. 160x120) and made with the bundled ffmpeg in a second or two.
"""

from __future__ import annotations

import http.server
import socketserver
import struct
import threading
import time
from pathlib import Path

from tests.bad_inputs import _ffmpeg

X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def make_long_gop(path: Path) -> Path:
    """30 s at 25 fps with x264's default keyframe interval (250 frames = 10 s), as web videos have."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=30", *X264, str(path))
    return path


def make_vfr_one_keyframe(path: Path) -> Path:
    """Variable frame rate (30 fps, then 5 fps, then 30 again), one keyframe for 24 s."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=30:duration=12",
            "-vf", "setpts='if(lt(N,120),N/30,if(lt(N,180),4+(N-120)/5,16+(N-180)/30))/TB'",
            "-fps_mode", "vfr", "-g", "100000", "-x264-params", "scenecut=0", *X264, str(path))
    return path


def make_held_frame(path: Path) -> Path:
    """25 fps, but the frame at 4 s is held for 10 s (the next frame comes at 14 s); 20 s in all."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=10",
            "-vf", "setpts='if(lte(N,100),N/25,10+N/25)/TB'", "-fps_mode", "vfr",
            "-g", "100000", "-x264-params", "scenecut=0", *X264, str(path))
    return path


def make_sparse_long(path: Path) -> Path:
    """Ten minutes at 1 fps, 64x64: keyframes 250 s apart."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=1:duration=600", *X264, str(path))
    return path


def make_audio_longer(path: Path) -> Path:
    """8 s of picture, 12 s of sound: the container's duration is the audio's."""
    _ffmpeg("-f", "lavfi", "-t", "8", "-i", "testsrc=size=160x120:rate=10",
            "-f", "lavfi", "-t", "12", "-i", "sine=frequency=440", *X264, "-c:a", "aac", str(path))
    return path


def make_header_lies(path: Path, claimed_s: int = 300) -> Path:
    """A Matroska file holding 10 s of frames whose segment header claims `claimed_s` (MP4 will not
    do: FFmpeg recomputes its durations from the sample tables)."""
    honest = path.with_suffix(".honest.mkv")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=10", *X264, str(honest))
    data = bytearray(honest.read_bytes())
    honest.unlink()
    at = data.find(b"\x44\x89\x88")  # EBML Duration, an 8-byte float in milliseconds
    data[at + 3: at + 11] = struct.pack(">d", claimed_s * 1000.0)
    path.write_bytes(bytes(data))
    return path


HOSTILE_VIDEOS = {"long_gop": make_long_gop, "vfr_one_keyframe": make_vfr_one_keyframe,
                  "held_frame": make_held_frame, "sparse_long": make_sparse_long,
                  "audio_longer": make_audio_longer, "header_lies": make_header_lies}


def make_hostile_videos(folder: Path, names=tuple(HOSTILE_VIDEOS)) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        path = folder / f"{name}.{'mkv' if name == 'header_lies' else 'mp4'}"
        if not path.exists():
            HOSTILE_VIDEOS[name](path)
        out[name] = path
    return out


# --- HTTP: redirects that must end final, a body that never ends ---------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        routes = {"/to-file": "file:///etc/passwd", "/to-ftp": "ftp://127.0.0.1/video.mp4",
                  "/loop-a": "/loop-b", "/loop-b": "/loop-a"}
        if self.path in routes:
            self.send_response(302)
            self.send_header("Location", routes[self.path])
            self.end_headers()
            return
        if self.path == "/trickle.mp4":  # a video that never finishes arriving, a byte at a time
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()
            try:
                while not self.server.closing.is_set():
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return
        self.send_response(404)
        self.end_headers()


class HostileServer:
    """Loopback HTTP server: /to-file, /to-ftp (refused redirects), /loop-a (a redirect loop),
    /trickle.mp4 (a byte every 0.2 s, for ever)."""

    def __enter__(self) -> HostileServer:
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.closing = threading.Event()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.closing.set()
        self.server.shutdown()
        self.server.server_close()
