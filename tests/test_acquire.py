"""acquire_video against local files, a scripted HTTP server on 127.0.0.1, and fsspec's memory://."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from curation.hashing import sha256_file
from curation.manifest import ManifestRow
from curation.skips import Skip
from curation.video.acquire import (
    AcquireConfig,
    AcquiredVideo,
    acquire_video,
    scheme_of,
    youtube_command,
)
from curation.video.http_fetch import fetch_http
from tests.conftest import SAMPLES

BIKES = SAMPLES / "videos/bikes.mp4"
BODY = BIKES.read_bytes()
OTHER = (SAMPLES / "videos/generated_four_scenes.mp4").read_bytes()
FAST = AcquireConfig(timeout_s=0.5, retries=2, backoff_s=0.0, chunk_bytes=64 * 1024)


class _Handler(BaseHTTPRequestHandler):
    """Routes by path; every request is recorded as (path, Range header) on the server."""

    server: _Server

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "video/mp4", length: int | None = None,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None or status != 200 or body:
            self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_ranged(self, body: bytes, etag: str = '"v1"') -> None:
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers["Range"] else 0
        if start and self.headers.get("If-Range", etag) == etag:
            self._send(206, body[start:], extra={"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}",
                                                 "ETag": etag})
        else:
            self._send(200, body, extra={"ETag": etag})

    def _send_half_then_drop(self, body: bytes, etag: str = '"v1"') -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def do_GET(self) -> None:
        hits = self.server.hits.setdefault(self.path, [])
        hits.append(self.headers.get("Range"))
        route, first = self.path, len(hits) == 1
        try:
            if route == "/ok.mp4":
                self._send_ranged(BODY)
            elif route == "/drops-halfway.mp4" and first:
                self._send_half_then_drop(BODY)
            elif route == "/drops-halfway.mp4":
                self._send_ranged(BODY)
            elif route == "/always-drops.mp4":
                self._send_half_then_drop(BODY)
            elif route == "/changes-midway.mp4" and first:
                self._send_half_then_drop(BODY)
            elif route == "/changes-midway.mp4":
                self._send_ranged(OTHER, etag='"v2"')  # replaced on the server between attempts
            elif route == "/ignores-range.mp4" and first:
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[:1000])
                self.close_connection = True
            elif route == "/ignores-range.mp4":
                self._send(200, BODY)  # a full body despite the Range header
            elif route == "/500-once.mp4" and first or route == "/500.mp4":
                self._send(500, b"boom", "text/plain")
            elif route == "/500-once.mp4":
                self._send(200, BODY)
            elif route == "/slow.mp4":
                time.sleep(1.5)
                self._send(200, BODY)
            elif route == "/page.mp4":
                self._send(200, b"<html>not here</html>", "text/html; charset=utf-8")
            elif route == "/text-as-octets.mp4":
                self._send(200, b"This is a text file that only pretends to be a video.", "application/octet-stream")
            elif route == "/empty.mp4":
                self._send(200, b"", length=0)
            elif route == "/huge.mp4":
                self._send(200, b"", length=50 * 2**30)
            elif route == "/endless.mp4":
                self.send_response(200)  # no length: the body ends when the connection closes
                self.send_header("Content-Type", "video/mp4")
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(BODY[:64 * 1024])
                self.close_connection = True
            else:
                self._send(404, b"no", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on purpose (size cap, timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: dict[str, list[str | None]]


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.hits = {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def row(uri: str, video_id: str = "clip", **fields) -> ManifestRow:
    return ManifestRow(video_id=video_id, uri=uri, **fields)


def assert_clean(videos_dir: Path) -> None:
    """No temp file is left behind, and nothing was written outside videos_dir."""
    assert not [p.name for p in videos_dir.iterdir() if p.name.startswith(".")]


def test_local_file_is_linked_or_copied_with_its_checksum(tmp_path):
    videos = tmp_path / "videos"
    got = acquire_video(row(str(BIKES)), videos, FAST)
    assert isinstance(got, AcquiredVideo)
    assert got.path == (videos / "clip.mp4").resolve() and got.bytes == len(BODY)
    assert got.sha256 == sha256_file(BIKES) == sha256_file(got.path)
    sidecar = json.loads((videos / "clip.acquired.json").read_text())
    assert sidecar["sha256"] == got.sha256 and sidecar["file"] == "clip.mp4"
    copied = acquire_video(row(f"file://{BIKES}", "copied"), videos, FAST.model_copy(update={"hardlink_local": False}))
    assert copied.sha256 == got.sha256 and copied.path.stat().st_ino != BIKES.stat().st_ino
    assert_clean(videos)


@pytest.mark.parametrize("uri, reason", [
    (str(SAMPLES / "bad/empty.mp4"), "empty_file"),
    (str(SAMPLES / "bad/not_a_video.mp4"), "not_video"),
    (str(SAMPLES / "bad/missing.mp4"), "not_found"),
    ("ftp://example.org/a.mp4", "scheme_not_allowed"),
])
def test_bad_local_sources_are_skips(tmp_path, uri, reason):
    result = acquire_video(row(uri), tmp_path / "videos", FAST)
    assert isinstance(result, Skip) and result.stage == "acquire" and result.reason == reason
    assert result.detail
    assert not list((tmp_path / "videos").glob("clip*"))


def test_size_cap_applies_to_local_files(tmp_path):
    cfg = FAST.model_copy(update={"max_bytes": 1000})
    assert acquire_video(row(str(BIKES)), tmp_path, cfg).reason == "too_large"


def test_an_id_that_escapes_the_output_dir_is_refused_before_any_write(tmp_path):
    videos = tmp_path / "out" / "videos"
    result = acquire_video(row(str(BIKES), video_id="../escape"), videos, FAST)
    assert isinstance(result, Skip) and result.reason == "unsafe_id"
    assert not (tmp_path / "out" / "escape.mp4").exists() and not list(tmp_path.rglob("*.mp4"))


def test_http_download_then_no_second_fetch(server, tmp_path):
    videos = tmp_path / "videos"
    got = acquire_video(row(f"{server.url}/ok.mp4"), videos, FAST)
    assert isinstance(got, AcquiredVideo) and got.path.read_bytes() == BODY
    assert server.hits["/ok.mp4"] == [None]
    again = acquire_video(row(f"{server.url}/ok.mp4"), videos, FAST)
    assert again == got and len(server.hits["/ok.mp4"]) == 1  # the sidecar's checksum still matches
    # no sidecar, but the manifest names the checksum: still no request
    (videos / "clip.acquired.json").unlink()
    known = row(f"{server.url}/ok.mp4", sha256=got.sha256)
    assert acquire_video(known, videos, FAST).sha256 == got.sha256 and len(server.hits["/ok.mp4"]) == 1
    # the local copy changed: fetched again
    got.path.write_bytes(BODY[:-10])
    assert acquire_video(known, videos, FAST).path.read_bytes() == BODY
    assert len(server.hits["/ok.mp4"]) == 2
    assert_clean(videos)


def test_manifest_checksum_mismatch_is_a_skip(server, tmp_path):
    result = acquire_video(row(f"{server.url}/ok.mp4", sha256="0" * 64), tmp_path, FAST)
    assert result.reason == "checksum_mismatch"


def test_connection_dropped_halfway_resumes_with_range(server, tmp_path):
    got = acquire_video(row(f"{server.url}/drops-halfway.mp4"), tmp_path, FAST)
    assert isinstance(got, AcquiredVideo) and got.sha256 == sha256_file(BIKES)
    assert server.hits["/drops-halfway.mp4"] == [None, f"bytes={len(BODY) // 2}-"]
    assert_clean(tmp_path)


def test_connection_that_always_drops_is_a_skip_after_the_retries(server, tmp_path):
    result = acquire_video(row(f"{server.url}/always-drops.mp4"), tmp_path, FAST)
    assert isinstance(result, Skip) and result.reason == "connection_reset"
    assert len(server.hits["/always-drops.mp4"]) == FAST.retries + 1
    assert_clean(tmp_path)


def test_file_replaced_between_attempts_is_fetched_whole_not_spliced(server, tmp_path):
    got = acquire_video(row(f"{server.url}/changes-midway.mp4"), tmp_path, FAST)
    assert got.path.read_bytes() == OTHER
    assert server.hits["/changes-midway.mp4"] == [None, f"bytes={len(BODY) // 2}-"]


def test_server_that_ignores_range_gets_a_fresh_full_body(server, tmp_path):
    got = acquire_video(row(f"{server.url}/ignores-range.mp4"), tmp_path, FAST)
    assert got.path.read_bytes() == BODY and server.hits["/ignores-range.mp4"] == [None, "bytes=1000-"]


def test_500_then_success_is_retried(server, tmp_path):
    got = acquire_video(row(f"{server.url}/500-once.mp4"), tmp_path, FAST)
    assert isinstance(got, AcquiredVideo) and len(server.hits["/500-once.mp4"]) == 2


def test_persistent_500_gives_up_after_the_retries_with_backoff(server, tmp_path):
    slept: list[float] = []
    cfg = FAST.model_copy(update={"retries": 3, "backoff_s": 0.5})
    result = fetch_http(f"{server.url}/500.mp4", tmp_path / ".part", cfg, sleep=slept.append)
    assert result.reason == "http_5xx" and "4 attempts" in result.detail
    assert slept == [0.5, 1.0, 2.0] and len(server.hits["/500.mp4"]) == 4


def test_404_is_not_retried(server, tmp_path):
    result = acquire_video(row(f"{server.url}/missing.mp4"), tmp_path, FAST)
    assert result.reason == "http_404" and len(server.hits["/missing.mp4"]) == 1


def test_timeout_is_retried_then_a_skip(server, tmp_path):
    cfg = FAST.model_copy(update={"timeout_s": 0.2, "retries": 1})
    result = acquire_video(row(f"{server.url}/slow.mp4"), tmp_path, cfg)
    assert result.reason == "timeout" and len(server.hits["/slow.mp4"]) == 2
    assert_clean(tmp_path)


@pytest.mark.parametrize("path, reason", [
    ("/page.mp4", "not_video"),  # content-type text/html
    ("/text-as-octets.mp4", "not_video"),  # content-type allowed, first bytes are not a container
    ("/empty.mp4", "empty_file"),
    ("/huge.mp4", "too_large"),  # Content-Length over the cap: no body read
    ("/endless.mp4", "too_large"),  # no Content-Length: the streamed count hits the cap
])
def test_bad_http_bodies_are_skips(server, tmp_path, path, reason):
    cfg = FAST.model_copy(update={"max_bytes": 1 << 20})
    result = acquire_video(row(f"{server.url}{path}"), tmp_path, cfg)
    assert isinstance(result, Skip) and result.reason == reason, result
    assert len(server.hits[path]) == 1
    assert_clean(tmp_path)


def test_fsspec_schemes_stream_through_fsspec(tmp_path):
    import fsspec

    with fsspec.open("memory://bucket/clip.mp4", "wb") as handle:
        handle.write(BODY)
    cfg = FAST.model_copy(update={"allowed_schemes": {"memory"}})
    got = acquire_video(row("memory://bucket/clip.mp4"), tmp_path, cfg)
    assert isinstance(got, AcquiredVideo) and got.sha256 == sha256_file(BIKES)
    assert acquire_video(row("memory://bucket/gone.mp4", "gone"), tmp_path, cfg).reason == "not_found"


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_missing_cloud_extra_is_a_clear_skip(tmp_path):
    result = acquire_video(row("s3://bucket/clip.mp4"), tmp_path, FAST)
    assert result.reason == "missing_extra" and "cloud" in result.detail


@pytest.mark.skipif(importlib.util.find_spec("yt_dlp") is not None, reason="yt-dlp is installed")
def test_missing_youtube_extra_is_a_clear_skip(tmp_path):
    result = acquire_video(row("youtube:dQw4w9WgXcQ"), tmp_path, FAST)
    assert result.reason == "missing_extra" and "youtube" in result.detail


def test_scheme_detection_and_youtube_argument_list(tmp_path):
    assert [scheme_of(u) for u in ("a/b.mp4", "file:///x.mp4", "https://x.org/v.mp4", "hf://datasets/x/v.mp4",
                                   "youtube:dQw4w9WgXcQ", "https://youtu.be/dQw4w9WgXcQ")] == \
        ["file", "file", "https", "hf", "youtube", "youtube"]
    hostile = "--exec=rm -rf ~"
    argv = youtube_command(hostile, tmp_path, FAST)
    assert isinstance(argv, list) and argv[-2:] == ["--", hostile]
