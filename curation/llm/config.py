"""The LLM client's settings: backend, model, endpoint, bounds, retries, cache. Its own module so
the backends and the client both read it without importing each other."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "vllm", "replay"] = "openai"
    model: str = "Qwen/Qwen2.5-72B-Instruct"
    base_url: str | None = None  # else env OPENAI_BASE_URL, else http://localhost:8000/v1
    api_key: SecretStr | None = None  # else the env variable named by api_key_env
    api_key_env: str = "OPENAI_API_KEY"
    max_in_flight: int = Field(16, ge=1)
    timeout_s: float = Field(120.0, gt=0)  # per attempt
    max_retries: int = Field(4, ge=0)  # on 429 / 5xx / timeout / connection error
    backoff_s: float = Field(1.0, ge=0)  # first wait; doubles per retry, with jitter
    temperature: float = 0.7
    max_tokens: int = Field(2048, ge=1)
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    # Bounds on what crosses the wire: a request with more text is refused before it is sent
    # (~100k tokens), a reply longer than this is a failure, never parsed or stored in a record.
    max_request_chars: int = Field(400_000, ge=1000)
    max_reply_chars: int = Field(100_000, ge=1000)
    replay_path: str | None = None  # JSONL for backend=replay
    cache_dir: str | None = None  # content-addressed response cache; None = no cache

    @model_validator(mode="after")
    def _replay_needs_path(self) -> LLMConfig:
        if self.backend == "replay" and not self.replay_path:
            raise ValueError("backend 'replay' needs replay_path")
        return self
