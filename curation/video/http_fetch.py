"""Streaming an http(s) URL to a local file: resume with `Range`, retries with backoff, a size cap.

Returns None when the whole body is in `part`, or a Skip. Retried: 5xx, 408, 429, timeouts, resets
and bodies cut short; a retry after a partial body asks for the rest (`Range: bytes=N-`) and starts
over when the server answers 200 instead of 206. Not retried: 404/410 (`http_404`), other 4xx.
Final, as no re-run can change them: a redirect to a scheme other than http(s) such as file:// or
ftp:// (`redirect_refused`), a redirect loop or chain longer than httpx's limit (`redirect_loop`),
a URL that is not one (`bad_uri`). The stage's watchdog budget is checked per chunk and caps each
read's timeout, so a server that trickles a byte a minute cannot hold a download for ever.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from curation.skips import Skip, declare_reasons
from curation.video.config import AcquireConfig
from curation.watchdog import checkpoint, remaining_s

STAGE = "acquire"
# http_error (a 4xx other than 404/410, or a refusal httpx names) stays retryable: access rules change.
declare_reasons(final=("http_404", "not_video", "too_large", "redirect_loop", "redirect_refused", "bad_uri"),
                retryable=("http_5xx", "http_retry", "http_range", "timeout", "connection_reset",
                           "http_error"))
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
# Bodies that announce themselves as documents are error pages or APIs, never videos.
_NOT_VIDEO_TYPES = ("text/", "image/", "application/json", "application/xml", "application/xhtml",
                    "application/javascript")


class _Retry(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _refuse_content_type(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower().startswith(_NOT_VIDEO_TYPES)


def _fetch_once(client: httpx.Client, url: str, part: Path, cfg: AcquireConfig,
                validator: dict[str, str]) -> Skip | None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have and validator.get("tag"):
        # If-Range: a server whose file changed since the first attempt sends all of it, not a splice
        headers["If-Range"] = validator["tag"]
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status in (404, 410):
            return Skip(STAGE, "http_404", f"HTTP {status} for {url}")
        if status in _RETRY_STATUS:
            raise _Retry("http_5xx" if status >= 500 else "http_retry", f"HTTP {status} for {url}")
        if status == 416 and have:  # our partial file is not a prefix the server knows: start over
            part.unlink()
            raise _Retry("http_range", f"HTTP 416 for a resume at byte {have}")
        if status >= 400:
            return Skip(STAGE, "http_error", f"HTTP {status} for {url}")
        tag = response.headers.get("etag") or response.headers.get("last-modified")
        if tag and not (tag.startswith("W/")):  # weak ETags are not allowed in If-Range
            validator["tag"] = tag
        content_type = response.headers.get("content-type", "")
        if cfg.check_content_type and _refuse_content_type(content_type):
            return Skip(STAGE, "not_video", f"server says content-type {content_type!r}")
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if status == 206 and not (match and int(match.group(1)) == have):
            part.unlink(missing_ok=True)  # a part we did not ask for: start over rather than splice
            raise _Retry("http_range", f"asked for bytes {have}-, got {response.headers.get('content-range')!r}")
        if status == 206:
            total = None if match.group(2) == "*" else int(match.group(2))
        else:  # a full body: the server ignored the range, or the file changed (If-Range)
            have = 0
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and total > cfg.max_bytes:
            return Skip(STAGE, "too_large", f"{total} bytes announced; the cap is {cfg.max_bytes}")
        with part.open("ab" if have else "wb") as out:
            # raw bytes as they arrive: a buffered chunk would be lost when the connection drops
            for chunk in response.iter_raw():
                checkpoint()
                have += len(chunk)
                if have > cfg.max_bytes:
                    return Skip(STAGE, "too_large", f"more than {cfg.max_bytes} bytes streamed")
                out.write(chunk)
        if total is not None and have < total:
            raise _Retry("connection_reset", f"body ended at byte {have} of {total}")
    return None


def fetch_http(url: str, part: Path, cfg: AcquireConfig, sleep=time.sleep) -> Skip | None:
    """Download `url` into `part` (created or replaced), retrying up to `cfg.retries` times."""
    part.unlink(missing_ok=True)
    left_s = remaining_s()
    timeout = httpx.Timeout(cfg.timeout_s if left_s is None else max(0.1, min(cfg.timeout_s, left_s)))
    last = Skip(STAGE, "http_error", "no attempt made")
    validator: dict[str, str] = {}
    # identity: byte ranges and the size cap count the bytes on the wire, never a decoded body
    headers = {"User-Agent": cfg.user_agent, "Accept-Encoding": "identity"}
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers) as client:
        for attempt in range(cfg.retries + 1):
            if attempt:
                sleep(cfg.backoff_s * 2 ** (attempt - 1))
            checkpoint()
            try:
                return _fetch_once(client, url, part, cfg, validator)
            except _Retry as error:
                last = Skip(STAGE, error.reason, str(error))
            except httpx.TimeoutException as error:
                last = Skip(STAGE, "timeout", f"{type(error).__name__} after {cfg.timeout_s:g} s: {url}")
            except (httpx.NetworkError, httpx.RemoteProtocolError) as error:
                last = Skip(STAGE, "connection_reset", f"{type(error).__name__}: {error}")
            except httpx.TooManyRedirects as error:
                return Skip(STAGE, "redirect_loop", f"{url}: {error}")
            except httpx.UnsupportedProtocol as error:
                # httpx follows http(s) redirects only: anything else is a redirect we refuse.
                return Skip(STAGE, "redirect_refused", f"{url}: a redirect to a scheme other than http(s): {error}")
            except (httpx.InvalidURL, httpx.LocalProtocolError) as error:
                return Skip(STAGE, "bad_uri", f"{type(error).__name__}: {error}")
            except httpx.HTTPError as error:  # anything else httpx refuses: retrying will not help
                return Skip(STAGE, "http_error", f"{type(error).__name__}: {error}")
    return Skip(last.stage, last.reason, f"{last.detail} (gave up after {cfg.retries + 1} attempts)")
