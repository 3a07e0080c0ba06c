"""The three ways an `LLMClient` gets an answer: an OpenAI-compatible server, an in-process vLLM
engine, or a replay file. A backend makes one attempt; the client owns retries, the in-flight
bound, the cache and the counters, so every backend behaves the same way under them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from dataclasses import dataclass
from typing import Any

from curation.llm.cache import load_replay
from curation.llm.config import LLMConfig

DEFAULT_BASE_URL = "http://localhost:8000/v1"
CONNECTIONS_PER_POOL = 8


@dataclass(frozen=True)
class BackendCall:
    """One request with every parameter resolved."""

    key: str
    replay_key: str
    tag: str
    model: str
    messages: list[dict[str, Any]]
    temperature: float
    max_tokens: int
    schema_name: str | None
    response_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class BackendReply:
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


class BackendError(Exception):
    """An attempt that produced no reply. `transient` ones (429, 5xx, timeout, connection) are
    retried by the client; the others become an `LLMFailure` with `reason` at once."""

    def __init__(self, reason: str, detail: str, transient: bool = False, retry_after_s: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.transient = transient
        self.retry_after_s = retry_after_s


def resolve_api_key(cfg: LLMConfig) -> str | None:
    if cfg.api_key is not None:
        return cfg.api_key.get_secret_value()
    return os.environ.get(cfg.api_key_env) or None


class ReplayBackend:
    """Answers from a JSONL file keyed by request key: the bundled sample runs without a model."""

    def __init__(self, cfg: LLMConfig):
        self.answers = load_replay(cfg.replay_path)

    async def send(self, call: BackendCall) -> BackendReply:
        row = self.answers.get(call.replay_key)
        if row is None:
            raise BackendError("replay_missing", f"no replay answer for tag {call.tag!r} (key {call.key[:12]})")
        return BackendReply(row["text"], int(row.get("prompt_tokens", 0)), int(row.get("completion_tokens", 0)))

    async def aclose(self) -> None:
        return None


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions server (vllm serve, SGLang, hosted APIs)."""

    def __init__(self, cfg: LLMConfig):
        import openai

        self._openai = openai
        self.cfg = cfg
        base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        # Several SDK clients, each with its own connection pool, used in turn: httpx scans the
        # pooled connections on each request, so one pool of C connections costs O(C) CPU per
        # request (at 64 in flight, pools of 8 cut the client's CPU per request by ~40%: bench/).
        shards = max(1, math.ceil(cfg.max_in_flight / CONNECTIONS_PER_POOL))
        # Local servers take any key; the SDK refuses None, so an absent key is a placeholder.
        self.clients = [openai.AsyncOpenAI(api_key=resolve_api_key(cfg) or "EMPTY", base_url=base_url,
                                           max_retries=0, timeout=cfg.timeout_s) for _ in range(shards)]
        self._turn = itertools.count()
        # Set once a server has refused `response_format` with a 400 and answered without it.
        self.plain_only = False
        self._formats: dict[str, dict[str, Any]] = {}

    def response_format(self, schema_name: str | None, schema: dict[str, Any] | None = None) -> dict[str, Any] | None:
        from schemas.llm_output import json_schema

        mode = self.cfg.structured_output
        if schema_name is None or mode == "none" or self.plain_only:
            return None
        if mode == "json_object":
            return {"type": "json_object"}
        if schema is not None:  # narrowed to this request (enum of its ids, bounds)
            return {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema, "strict": True}}
        if schema_name not in self._formats:  # pydantic rebuilds a schema on every call: keep one
            self._formats[schema_name] = {"type": "json_schema", "json_schema": {
                "name": schema_name, "schema": json_schema(schema_name), "strict": True}}
        return self._formats[schema_name]

    async def send(self, call: BackendCall) -> BackendReply:
        fmt = self.response_format(call.schema_name, call.response_schema)
        try:
            return await self._create(call, fmt)
        except BackendError as exc:
            if fmt is None or exc.reason != "llm_rejected" or not exc.detail.startswith("http 400"):
                raise
        # A 400 with response_format set: the server may not support it; ask once in plain text.
        reply = await self._create(call, None)
        self.plain_only = True
        return reply

    async def _create(self, call: BackendCall, fmt: dict[str, Any] | None) -> BackendReply:
        openai = self._openai
        body: dict[str, Any] = {"model": call.model, "messages": call.messages,
                                "temperature": call.temperature, "max_tokens": call.max_tokens}
        if fmt is not None:
            body["response_format"] = fmt
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                # The SDK's raw `post` (its documented way to reach any endpoint) rather than
                # `chat.completions.create`: the typed path re-walks messages and the JSON Schema on
                # every call, which costs more CPU than the whole rest of a request (bench/llm_client.py).
                client = self.clients[next(self._turn) % len(self.clients)]
                resp = await client.post("/chat/completions", cast_to=object, body=body,
                                              options={"timeout": self.cfg.timeout_s})
        except (TimeoutError, openai.APITimeoutError):
            raise BackendError("llm_failed", f"timeout after {self.cfg.timeout_s:g} s", transient=True) from None
        except openai.APIConnectionError as exc:
            raise BackendError("llm_failed", f"connection error: {exc}", transient=True) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = f"http {status}: {exc.message}"
            if status == 429 or status >= 500:
                raise BackendError("llm_failed", detail, transient=True,
                                   retry_after_s=_retry_after_s(exc.response)) from None
            raise BackendError("llm_rejected", detail) from None
        except openai.OpenAIError as exc:  # malformed body and the like: the server is misbehaving
            raise BackendError("llm_failed", f"{type(exc).__name__}: {exc}", transient=True) from None
        except UnicodeDecodeError as exc:  # a body that is not UTF-8: this request's answer is unreadable
            raise BackendError("llm_bad_encoding", f"the reply is not UTF-8 ({exc.reason} at byte {exc.start})") from None
        except ValueError as exc:  # a 200 whose body is not JSON
            raise BackendError("llm_failed", f"malformed completion body: {type(exc).__name__}: {exc}",
                               transient=True) from None
        return _read_completion(resp)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


def _read_completion(resp: Any) -> BackendReply:
    """The first choice of a chat-completion body; a body of another shape is a server fault."""
    try:
        choice = resp["choices"][0] if resp["choices"] else {}
        usage = resp.get("usage") or {}
        content = (choice.get("message") or {}).get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not a string")
        return BackendReply(content, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                            str(choice.get("finish_reason") or ""))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise BackendError("llm_failed", f"malformed completion body: {type(exc).__name__}: {exc}",
                           transient=True) from None


def _retry_after_s(response: Any) -> float | None:
    try:
        return float(response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


class VLLMBackend:
    """In-process `vllm.LLM` offline engine (optional extra `vllm`) with guided JSON decoding.

    Requests arriving together are sent to the engine as one batch: the engine is synchronous and
    batches internally, so one `chat` call per batch keeps the GPU saturated.
    """

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        try:
            import vllm
        except ImportError as exc:
            self.vllm, self.missing = None, f"backend 'vllm' needs the optional extra: pip install vllm ({exc})"
            return
        self.vllm, self.missing = vllm, ""
        self.engine = vllm.LLM(model=cfg.model)
        self.pending: list[tuple[BackendCall, asyncio.Future]] = []
        self.flushing: asyncio.Task | None = None

    async def send(self, call: BackendCall) -> BackendReply:
        if self.vllm is None:
            raise BackendError("missing_extra", self.missing)
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((call, fut))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        await asyncio.sleep(0.01)  # let the rest of a burst join the batch
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                outs = await asyncio.to_thread(self.engine.chat, [c.messages for c, _ in batch],
                                               [self._sampling(c) for c, _ in batch], use_tqdm=False)
            except Exception as exc:  # an engine error fails the batch; the client may retry it
                for _, fut in batch:
                    fut.set_exception(BackendError("llm_failed", f"vllm: {type(exc).__name__}: {exc}", True))
                continue
            for (_, fut), out in zip(batch, outs, strict=True):
                comp = out.outputs[0] if out.outputs else None
                fut.set_result(BackendReply(comp.text if comp else None, len(out.prompt_token_ids or []),
                                            len(comp.token_ids) if comp else 0, str(comp.finish_reason or "")
                                            if comp else ""))

    def _sampling(self, call: BackendCall) -> Any:
        from schemas.llm_output import json_schema

        params: dict[str, Any] = {"temperature": call.temperature, "max_tokens": call.max_tokens}
        if call.schema_name is not None and self.cfg.structured_output != "none":
            # Exactly one constraint: vllm rejects a params object with two set (even json_object=False).
            schema = call.response_schema or json_schema(call.schema_name)
            want = {"json": schema} if self.cfg.structured_output == "json_schema" else {"json_object": True}
            sp = self.vllm.sampling_params
            if hasattr(sp, "StructuredOutputsParams"):  # vllm >= 0.11
                params["structured_outputs"] = sp.StructuredOutputsParams(**want)
            else:
                params["guided_decoding"] = sp.GuidedDecodingParams(**want)
        return self.vllm.SamplingParams(**params)

    async def aclose(self) -> None:
        return None


def make_backend(cfg: LLMConfig) -> ReplayBackend | OpenAIBackend | VLLMBackend:
    return {"replay": ReplayBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}[cfg.backend](cfg)
