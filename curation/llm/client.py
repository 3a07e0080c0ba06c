"""The one LLM client (curation's dialogue generator and the trainer's judge both use it).

Async inside, with a bounded number of requests in flight so a vLLM server stays saturated;
retries with backoff on 429/5xx/timeouts; a content-addressed response cache on disk; tolerant
JSON parsing validated against `schemas.llm_output`. The API key is a `SecretStr`: it is never
logged, dumped, cached or put in a failure detail.

Sharing: one client per process is enough. `complete` and `complete_many` may be called from any
number of threads; `acomplete` from any event loop. All work runs on one event-loop thread owned
by the client, so the in-flight bound holds across all callers. Call `close()` (or use `with`)
once, when every caller is done.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.llm.backends import (
    BackendCall,
    BackendError,
    BackendReply,
    make_backend,
    resolve_api_key,
)
from curation.llm.cache import ResponseCache
from curation.llm.config import LLMConfig
from curation.llm.parse import extract_json_object, parse_output, parse_reply
from curation.skips import Skip, declare_reasons
from schemas.llm_output import LLM_OUTPUTS

# Over a bound is the request's or the answer's own doing, like an answer that does not parse.
declare_reasons(final=("llm_invalid_json", "llm_request_too_large", "llm_reply_too_long"),
                retryable=("llm_empty",))

log = logging.getLogger(__name__)
__all__ = ["LLMClient", "LLMConfig", "LLMFailure", "LLMRequest", "LLMResponse", "extract_json_object",
           "parse_output"]

USAGE_KEYS = ("calls", "cache_hits", "failures", "retries", "prompt_tokens", "completion_tokens")
# A server's Retry-After or our doubling never makes one request wait longer than this.
MAX_BACKOFF_S = 60.0


class LLMRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[dict[str, Any]] = Field(min_length=1)
    schema_name: str | None = None
    # The schema narrowed to this request (`schemas.llm_output.request_schema`): sent as the
    # structured-output constraint and checked on the reply, so a server without structured
    # outputs meets the same rules. Part of the key.
    response_schema: dict[str, Any] | None = None
    prompt_version: str = ""
    temperature: float | None = None  # None -> config value
    max_tokens: int | None = None  # None -> config value
    tag: str = ""  # human label; not part of the key

    @model_validator(mode="after")
    def _known_schema(self) -> LLMRequest:
        if self.schema_name is not None and self.schema_name not in LLM_OUTPUTS:
            raise ValueError(f"unknown schema_name {self.schema_name!r}; known: {sorted(LLM_OUTPUTS)}")
        return self

    def key(self, model: str, temperature: float | None = None, max_tokens: int | None = None,
            images: Literal["bytes", "position"] = "bytes") -> str:
        """sha256 of the canonical JSON of everything that changes the answer. The client passes
        the config's temperature and max_tokens for the ones this request leaves unset.
        `images="position"` keys images by their place in the messages instead of their bytes:
        the replay key, stable across decoder and JPEG-encoder builds (the text around an image
        already names its video, scene and timestamps)."""
        temp = self.temperature if self.temperature is not None else temperature
        toks = self.max_tokens if self.max_tokens is not None else max_tokens
        messages = self.messages if images == "bytes" else _images_by_position(self.messages)
        payload = {"model": model, "messages": messages, "schema_name": self.schema_name,
                   "prompt_version": self.prompt_version,
                   "temperature": None if temp is None else float(temp),
                   "max_tokens": None if toks is None else int(toks)}
        if self.response_schema is not None:  # absent otherwise, so older keys (captions, judge) hold
            payload["response_schema"] = self.response_schema
        canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def request_chars(messages: list[dict[str, Any]]) -> int:
    """Characters of text in a request's messages (images are bounded by their pixel budget)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return total


def _images_by_position(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out, n = [], 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    part = {"type": "image_url", "image_url": {"url": f"image #{n}"}}
                    n += 1
                parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out


@dataclass(frozen=True)
class LLMResponse:
    key: str
    text: str
    data: dict | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass(frozen=True)
class LLMFailure:
    key: str
    reason: str
    detail: str
    text: str = ""
    # What an answer that came back but did not parse cost (0 when nothing came back).
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_skip(self, stage: str) -> Skip:
        return Skip(stage, self.reason, self.detail)


class LLMClient:
    """See the module docstring for how to share and close it."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self._backend = make_backend(cfg)
        self._cache = ResponseCache(cfg.cache_dir) if cfg.cache_dir else None
        self._usage = dict.fromkeys(USAGE_KEYS, 0)
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._sem = asyncio.Semaphore(cfg.max_in_flight)  # only ever used on self._loop
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-client", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------
    def key_for(self, request: LLMRequest) -> str:
        """The key this client's cache uses for `request` (parameters resolved)."""
        return request.key(self.cfg.model, self.cfg.temperature, self.cfg.max_tokens)

    def replay_key_for(self, request: LLMRequest) -> str:
        """The key a replay file uses for `request`: images by position, not by bytes."""
        return request.key(self.cfg.model, self.cfg.temperature, self.cfg.max_tokens, images="position")

    def complete(self, request: LLMRequest) -> LLMResponse | LLMFailure:
        return self._submit(self._run(request)).result()

    def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse | LLMFailure]:
        return self._submit(self._run_many(list(requests))).result()

    async def acomplete(self, request: LLMRequest) -> LLMResponse | LLMFailure:
        if asyncio.get_running_loop() is self._loop:
            return await self._run(request)
        return await asyncio.wrap_future(self._submit(self._run(request)))

    def usage_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._usage)

    def close(self) -> None:
        """Cancel what is still in flight, close the backend and stop the loop thread. Idempotent."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("LLMClient.close() called from its own loop thread")
        with self._lock:  # after this no new work is submitted; earlier work is cancelled below
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        except Exception as exc:  # closing must not mask the caller's own error
            log.warning("llm client: backend did not close cleanly: %s", type(exc).__name__)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __del__(self) -> None:  # forgotten close(): at least do not leave the loop thread running
        loop = getattr(self, "_loop", None)
        if loop is not None and not getattr(self, "_closed", True) and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _submit(self, coro):
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync LLMClient call from its own loop would deadlock; await acomplete")
        with self._lock:  # so close() cannot slip between the check and the scheduling
            if self._closed:
                coro.close()
                raise RuntimeError("LLMClient is closed")
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._backend.aclose()

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, n in deltas.items():
                self._usage[name] += n

    async def _run_many(self, requests: list[LLMRequest]) -> list[LLMResponse | LLMFailure]:
        return list(await asyncio.gather(*(self._run(r) for r in requests)))

    async def _run(self, request: LLMRequest) -> LLMResponse | LLMFailure:
        call = BackendCall(key=self.key_for(request), replay_key=self.replay_key_for(request),
                           tag=request.tag, model=self.cfg.model,
                           messages=request.messages,
                           temperature=request.temperature if request.temperature is not None else self.cfg.temperature,
                           max_tokens=request.max_tokens if request.max_tokens is not None else self.cfg.max_tokens,
                           schema_name=request.schema_name, response_schema=request.response_schema)
        size = request_chars(request.messages)
        if size > self.cfg.max_request_chars:
            return self._fail(call, "llm_request_too_large", f"{size} characters of text in the request; "
                              f"at most {self.cfg.max_request_chars} (llm.max_request_chars)")
        hit = self._cached(call)
        if hit is not None:
            self._count(cache_hits=1)
            return hit
        self._count(calls=1)
        reply = await self._send_with_retries(call)
        if isinstance(reply, LLMFailure):
            return reply
        self._count(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        tokens = (reply.prompt_tokens, reply.completion_tokens)
        if not reply.text or not reply.text.strip():
            return self._fail(call, "llm_empty", f"no content (finish_reason={reply.finish_reason or '?'})",
                              tokens=tokens)
        if len(reply.text) > self.cfg.max_reply_chars:  # kept only as its head: it is not an answer
            return self._fail(call, "llm_reply_too_long", f"a reply of {len(reply.text)} characters; at most "
                              f"{self.cfg.max_reply_chars} (llm.max_reply_chars)", reply.text[:2000], tokens=tokens)
        data = None
        if call.schema_name is not None:
            try:
                data = parse_reply(call.schema_name, reply.text, call.response_schema)
            except ValueError as exc:
                cut = " (cut at max_tokens)" if reply.finish_reason == "length" else ""
                return self._fail(call, "llm_invalid_json", f"{exc}{cut}", reply.text, tokens=tokens)
        if self._cache is not None:
            try:
                self._cache.put(call.key, {"text": reply.text, "prompt_tokens": reply.prompt_tokens,
                                           "completion_tokens": reply.completion_tokens, "tag": call.tag,
                                           "model": call.model})
            except OSError as exc:  # a full or read-only disk costs a future re-ask, not this answer
                log.warning("llm cache: cannot write %s: %s", call.key[:12], exc)
        return LLMResponse(call.key, reply.text, data, reply.prompt_tokens, reply.completion_tokens)

    def _cached(self, call: BackendCall) -> LLMResponse | None:
        entry = self._cache.get(call.key) if self._cache is not None else None
        if entry is None:
            return None
        data = None
        if call.schema_name is not None:
            try:
                data = parse_reply(call.schema_name, entry["text"], call.response_schema)
            except ValueError:  # the schema changed since it was cached: ask again
                return None
        return LLMResponse(call.key, entry["text"], data, int(entry.get("prompt_tokens", 0)),
                           int(entry.get("completion_tokens", 0)), cached=True)

    async def _send_with_retries(self, call: BackendCall) -> BackendReply | LLMFailure:
        for attempt in range(self.cfg.max_retries + 1):
            try:
                async with self._sem:
                    return await self._backend.send(call)
            except BackendError as exc:
                if not exc.transient:
                    return self._fail(call, exc.reason, exc.detail)
                if attempt == self.cfg.max_retries:
                    return self._fail(call, exc.reason, f"{attempt + 1} attempts; last: {exc.detail}")
                wait_s = min(MAX_BACKOFF_S, self.cfg.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.5)
                if exc.retry_after_s is not None:
                    wait_s = max(wait_s, min(exc.retry_after_s, MAX_BACKOFF_S))
                self._count(retries=1)
                await asyncio.sleep(wait_s)
        raise AssertionError("unreachable")

    def _fail(self, call: BackendCall, reason: str, detail: str, text: str = "",
              tokens: tuple[int, int] = (0, 0)) -> LLMFailure:
        secret = resolve_api_key(self.cfg)
        if secret:  # a server may echo a header back in an error body
            detail, text = detail.replace(secret, "***"), text.replace(secret, "***")
        self._count(failures=1)
        log.debug("llm %s failed: %s", call.tag or call.key[:12], reason)
        return LLMFailure(call.key, reason, detail[:2000], text, *tokens)
