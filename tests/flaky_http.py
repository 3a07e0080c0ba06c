"""A loopback file server whose downloads fail on a schedule and then recover.

Serves a folder with Range support. For a chosen share of files (by a hash of the path) the
first requests misbehave: the connection drops half-way through the body, or the server answers
500 (or any of `faults`: 429, 408); later requests succeed, so a downloader with retries and
Range resume gets every file, and one without retries gets it on a later run.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FlakyFileServer:
    def __init__(self, folder: Path, rate: float = 0.3, failures: int = 1,
                 faults: tuple[str, ...] = ("http_500", "drop_mid_file")):
        self.folder, self.rate, self.failures, self.faults = Path(folder), rate, failures, faults
        self.tries: dict[str, int] = {}
        self.injected = dict.fromkeys(faults, 0)
        self.faulted: set[str] = set()  # names that got at least one fault
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def fault_for(self, name: str) -> str | None:
        digest = hashlib.sha256(name.encode()).hexdigest()
        with self.lock:
            attempt = self.tries.get(name, 0)
            self.tries[name] = attempt + 1
        if int(digest[:8], 16) / 0xFFFFFFFF >= self.rate or attempt >= self.failures:
            return None
        fault = self.faults[int(digest[8], 16) % len(self.faults)]
        with self.lock:
            self.injected[fault] += 1
            self.faulted.add(name)
        return fault

    def __enter__(self) -> FlakyFileServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                return None

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                path = outer.folder / name
                if "/" in name or not path.is_file():
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                fault = outer.fault_for(name)
                if fault is not None and fault.startswith("http_"):  # http_500, http_429, http_408
                    self.send_response(int(fault.removeprefix("http_")))
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = path.read_bytes()
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("range", ""))
                if match and int(match.group(1)) < len(body):
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("content-range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("content-type", "video/mp4")
                self.send_header("accept-ranges", "bytes")
                self.send_header("etag", '"' + hashlib.sha1(body).hexdigest()[:16] + '"')
                self.send_header("content-length", str(len(body) - start))
                self.end_headers()
                if fault == "drop_mid_file":
                    self.wfile.write(body[start: start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body[start:])

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
