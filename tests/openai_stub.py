"""A real HTTP server on loopback that speaks the OpenAI chat-completions API, scripted per request.

Reusable for fault-injection tests of anything that goes through `curation.llm.client`:

    with StubServer([Reply.error(429), Reply.json({"score": 3})]) as stub:
        cfg = LLMConfig(base_url=stub.url, ...)
        ...
        assert len(stub.requests) == 2

A script is a list of replies (consumed in arrival order; once spent, every request gets a 418
"stub script exhausted" so an unexpected extra call is visible), one `Reply` for every request,
or a callable `body -> Reply` (the parsed JSON request body).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the stub answers to one request."""

    content: str | None = "{}"  # the assistant text (None: a null content)
    status: int = 200
    delay_s: float = 0.0  # sleep before answering: slow answers, timeouts, fixed latency
    body: str | bytes | None = None  # raw body instead of a completion (malformed responses, error bodies, bad bytes)
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    drop: bool = False  # close the connection without answering

    @staticmethod
    def json(obj: Any, **kw: Any) -> Reply:
        return Reply(content=json.dumps(obj), **kw)

    @staticmethod
    def text(content: str | None, **kw: Any) -> Reply:
        return Reply(content=content, **kw)

    @staticmethod
    def error(status: int, message: str = "stub error", retry_after_s: float | None = None, **kw: Any) -> Reply:
        headers = {"retry-after": f"{retry_after_s:g}"} if retry_after_s is not None else {}
        body = json.dumps({"error": {"message": message, "type": "stub_error", "code": status}})
        return Reply(status=status, body=body, headers=headers, **kw)


Script = Callable[[dict[str, Any]], Reply] | list[Reply] | Reply


def fixed_latency(latency_s: float, content: str = '{"score": 3}') -> Callable[[dict[str, Any]], Reply]:
    """Every request answered with `content` after exactly `latency_s` (the bench's server)."""
    return lambda body: Reply(content=content, delay_s=latency_s)


class StubServer:
    """`ThreadingHTTPServer` on 127.0.0.1 in a daemon thread. `.url` is the OpenAI base URL
    (ends in /v1); `.requests` the received JSON bodies in arrival order; `.headers` their
    headers; `.max_in_flight_seen` the peak number of requests being answered at once."""

    def __init__(self, script: Script | None = None, model_id: str = "stub-model"):
        self.script = script if script is not None else Reply()
        self.model_id = model_id
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self._lock = threading.Lock()
        self._spent = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the stub first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> StubServer:
        stub = self

        class Handler(_Handler):
            server_stub = stub

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # the default 5 drops bursts of connects and stalls them ~1 s

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def next_reply(self, body: dict[str, Any]) -> Reply:
        if isinstance(self.script, Reply):
            return self.script
        if callable(self.script):
            return self.script(body)
        with self._lock:
            i, self._spent = self._spent, self._spent + 1
        return self.script[i] if i < len(self.script) else Reply.error(418, "stub script exhausted")

    def completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        return {"id": f"chatcmpl-stub-{len(self.requests)}", "object": "chat.completion", "created": 0,
                "model": body.get("model", self.model_id),
                "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                             "message": {"role": "assistant", "content": reply.content}}],
                "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                          "total_tokens": reply.prompt_tokens + reply.completion_tokens}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server: the client reuses connections
    disable_nagle_algorithm = True  # else Nagle + delayed ACK stall every small reply by ~40 ms
    server_stub: StubServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None

    def _send(self, status: int, payload: str | bytes, headers: dict[str, str] | None = None) -> None:
        # Status line, headers and body in one write: split writes meet the client's delayed ACK.
        data = payload if isinstance(payload, bytes) else payload.encode("utf-8")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Stub"
        lines = [f"HTTP/1.1 {status} {phrase}", "content-type: application/json", f"content-length: {len(data)}",
                 *(f"{name}: {value}" for name, value in (headers or {}).items())]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            stub = self.server_stub
            self._send(200, json.dumps({"object": "list", "data": [{"id": stub.model_id, "object": "model",
                                                                   "created": 0, "owned_by": "stub"}]}))
        else:
            self._send(404, json.dumps({"error": {"message": "not found"}}))

    def do_POST(self) -> None:
        stub = self.server_stub
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": "not found"}}))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, json.dumps({"error": {"message": "body is not JSON"}}))
            return
        with stub._lock:
            stub.requests.append(body)
            stub.headers.append({k.lower(): v for k, v in self.headers.items()})
            stub.in_flight += 1
            stub.max_in_flight_seen = max(stub.max_in_flight_seen, stub.in_flight)
        try:
            reply = stub.next_reply(body)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.drop:
                self.close_connection = True
                return
            payload = reply.body if reply.body is not None else json.dumps(stub.completion(body, reply))
            self._send(reply.status, payload, reply.headers)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            pass
        finally:
            with stub._lock:
                stub.in_flight -= 1


def main() -> None:
    """`python -m tests.openai_stub --latency-s 0.2`: serve until killed; the first stdout line
    is the base URL (the bench runs the server in its own process so it does not share the GIL)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--latency-s", type=float, default=0.0)
    args = ap.parse_args()
    with StubServer(fixed_latency(args.latency_s)) as stub:
        print(stub.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
