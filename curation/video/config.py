"""Download settings (size cap, timeouts, retries, schemes). Their own module so the acquire stage
and its HTTP fetcher both read them without importing each other."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AcquireConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(4 * 2**30, gt=0, description="size cap; larger files are skipped (too_large)")
    timeout_s: float = Field(60.0, gt=0, description="connect/read timeout per request")
    retries: int = Field(4, ge=0, description="extra attempts after a retryable failure")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay, doubled each retry")
    allowed_schemes: set[str] = Field(default_factory=lambda: {"file", "http", "https", "hf", "s3", "gs", "youtube"})
    chunk_bytes: int = Field(1 << 20, gt=0)
    check_content_type: bool = True
    hardlink_local: bool = Field(True, description="link local files instead of copying when on one filesystem")
    youtube_format: str = Field("b[height<=720][ext=mp4]/b[height<=720]/b",
                                description="yt-dlp -f selector; single-file formats need no ffmpeg merge")
    user_agent: str = "proactive-video-curation/0.1"
