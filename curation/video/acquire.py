"""Acquire one manifest row's video into `<videos_dir>/<video_id><ext>`, with its sha256.

Sources: a local path or file:// (hard-linked when possible, else copied), http(s):// (streamed,
resumed with `Range`, see `curation.video.http_fetch`), any fsspec scheme such as hf://, s3://, gs://
(s3fs/gcsfs come with the `cloud` extra), and YouTube (`youtube:ID` or a youtube.com / youtu.be
URL) through the yt-dlp command of the `youtube` extra. Every fetch writes a hidden temp file in
`videos_dir`, checks it (not empty, a video container by its first bytes, under the size cap),
hashes it and renames it into place, so a crash never leaves a half file under the final name.
A sidecar `<video_id>.acquired.json` records what was fetched; a later run whose file still
matches the expected checksum (the manifest's `sha256`, else the sidecar's) fetches nothing, unless
the row names another URI or its local source changed size or mtime since the copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from curation.hashing import file_state, sha256_file
from curation.manifest import ManifestRow, local_path
from curation.skips import Skip, declare_reasons
from curation.video.config import AcquireConfig
from curation.video.http_fetch import fetch_http
from curation.video.magic import VIDEO_SUFFIXES, sniff_container
from curation.watchdog import checkpoint, remaining_s
from schemas.records import check_safe_id

STAGE = "acquire"
# A local file that appears or changes later is a changed input (curation.corpus.reuse), not a retry.
declare_reasons(final=("not_found", "too_large", "unsupported_scheme", "bad_uri", "empty_file", "not_video",
                       "checksum_mismatch", "unsafe_id", "scheme_not_allowed"),
                retryable=("missing_extra", "fetch_failed", "youtube_failed", "timeout"))
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "youtu.be", "music.youtube.com"}


@dataclass(frozen=True)
class AcquiredVideo:
    path: Path
    sha256: str
    bytes: int


def scheme_of(uri: str) -> str:
    """`file`, `http`, `https`, `youtube` or the URI's own scheme (`hf`, `s3`, `gs`, ...)."""
    if uri.startswith("youtube:"):
        return "youtube"
    if "://" not in uri:
        return "file"
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme in ("http", "https") and (parsed.hostname or "").lower() in _YOUTUBE_HOSTS:
        return "youtube"
    return parsed.scheme.lower()


def youtube_url(uri: str) -> str | None:
    if uri.startswith("youtube:"):
        video = uri.removeprefix("youtube:").lstrip("/")
        return f"https://www.youtube.com/watch?v={video}" if _YOUTUBE_ID.match(video) else None
    return uri


def youtube_command(url: str, out_dir: Path, cfg: AcquireConfig) -> list[str]:
    """The yt-dlp argument list (never a shell string); `--` keeps the URL from reading as an option."""
    return [sys.executable, "-m", "yt_dlp", "--no-playlist", "--no-progress", "--quiet",
            "--format", cfg.youtube_format, "--max-filesize", str(cfg.max_bytes),
            "--socket-timeout", str(cfg.timeout_s), "--retries", str(cfg.retries),
            "--output", str(out_dir / "video.%(ext)s"), "--", url]


def _inside(videos_dir: Path, name: str) -> Path | None:
    path = (videos_dir / name).resolve()
    return path if path.parent == videos_dir.resolve() else None


def _sidecar(videos_dir: Path, video_id: str) -> Path:
    return videos_dir / f"{video_id}.acquired.json"


def _source_state(uri: str) -> str | None:
    """A local source's size and mtime (None for a remote one): a copy is only as current as it."""
    path = local_path(uri)
    return None if path is None else file_state(path)


def find_present(row: ManifestRow, videos_dir: Path) -> AcquiredVideo | None:
    """The already-acquired file, if its checksum still matches what we expect of it."""
    sidecar = _sidecar(videos_dir, row.video_id)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        names, expected = [str(record["file"])], row.sha256 or str(record["sha256"])
        if record.get("uri") != row.uri and not row.sha256:
            return None  # the manifest now points elsewhere and gives no checksum: fetch again
        if not row.sha256 and record.get("source_state") != _source_state(row.uri):
            return None  # the local file was replaced or edited since it was copied: copy again
    except (OSError, ValueError, KeyError, TypeError):
        if not row.sha256:
            return None
        names, expected = [f"{row.video_id}{ext}" for ext in sorted(VIDEO_SUFFIXES)], row.sha256
    for name in names:
        path = _inside(videos_dir, name)
        if path is None or not path.is_file() or not path.name.startswith(f"{row.video_id}."):
            continue
        if sha256_file(path) == expected:
            return AcquiredVideo(path, expected, path.stat().st_size)
    return None


def _copy_local(uri: str, part: Path, cfg: AcquireConfig) -> Skip | None:
    source = local_path(uri)
    if not source.is_file():
        return Skip(STAGE, "not_found", f"no such file: {source}")
    size = source.stat().st_size
    if size > cfg.max_bytes:
        return Skip(STAGE, "too_large", f"{size} bytes; the cap is {cfg.max_bytes}")
    part.unlink(missing_ok=True)
    if cfg.hardlink_local:
        try:
            os.link(source, part)
            return None
        except OSError:
            pass  # another filesystem, or links not allowed: copy instead
    shutil.copyfile(source, part)
    return None


def _fetch_fsspec(uri: str, part: Path, cfg: AcquireConfig) -> Skip | None:
    import fsspec

    scheme = scheme_of(uri)
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as error:
        return Skip(STAGE, "missing_extra", f"{scheme}:// needs the `cloud` extra "
                    f"(pip install 'proactive-video[cloud]'): {error}")
    except ValueError as error:
        return Skip(STAGE, "unsupported_scheme", f"{uri}: {error}")
    try:
        size = fs.size(path)
        if size is not None and size > cfg.max_bytes:
            return Skip(STAGE, "too_large", f"{size} bytes; the cap is {cfg.max_bytes}")
        copied = 0
        with fs.open(path, "rb") as src, part.open("wb") as out:
            while chunk := src.read(cfg.chunk_bytes):
                checkpoint()
                copied += len(chunk)
                if copied > cfg.max_bytes:
                    return Skip(STAGE, "too_large", f"more than {cfg.max_bytes} bytes read")
                out.write(chunk)
    except FileNotFoundError as error:
        return Skip(STAGE, "not_found", f"{uri}: {error}")
    except (OSError, TimeoutError, ValueError) as error:
        return Skip(STAGE, "fetch_failed", f"{uri}: {type(error).__name__}: {error}")
    return None


def _fetch_youtube(uri: str, part: Path, cfg: AcquireConfig) -> Skip | None:
    if importlib.util.find_spec("yt_dlp") is None:
        return Skip(STAGE, "missing_extra", "YouTube needs the `youtube` extra (pip install 'proactive-video[youtube]')")
    url = youtube_url(uri)
    if url is None:
        return Skip(STAGE, "bad_uri", f"not a YouTube video id: {uri!r}")
    out_dir = part.with_suffix(".ytdlp")
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    limit_s = cfg.timeout_s * (cfg.retries + 1) * 10
    left_s = remaining_s()
    limit_s = limit_s if left_s is None else max(1.0, min(limit_s, left_s))
    try:
        done = subprocess.run(youtube_command(url, out_dir, cfg), capture_output=True, text=True,
                              timeout=limit_s, check=False)
        files = [p for p in out_dir.iterdir() if p.is_file() and not p.name.endswith(".part")]
        if done.returncode != 0 or len(files) != 1:
            tail = (done.stderr or done.stdout).strip()[-500:]
            return Skip(STAGE, "youtube_failed", f"yt-dlp exit {done.returncode}, {len(files)} files: {tail}")
        files[0].replace(part)
    except subprocess.TimeoutExpired:
        return Skip(STAGE, "timeout", f"yt-dlp took longer than {limit_s:g} s")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return None


def _fetch(row: ManifestRow, scheme: str, part: Path, cfg: AcquireConfig) -> Skip | None:
    if scheme == "file":
        return _copy_local(row.uri, part, cfg)
    if scheme in ("http", "https"):
        return fetch_http(row.uri, part, cfg)
    if scheme == "youtube":
        return _fetch_youtube(row.uri, part, cfg)
    return _fetch_fsspec(row.uri, part, cfg)


def _admit_file(row: ManifestRow, part: Path, videos_dir: Path, source_state: str | None) -> AcquiredVideo | Skip:
    """Check the fetched temp file and move it under its final name."""
    size = part.stat().st_size
    if size == 0:
        return Skip(STAGE, "empty_file", f"{row.uri} has zero bytes")
    container = sniff_container(part)
    if container is None:
        return Skip(STAGE, "not_video", f"{row.uri}: first bytes are not a known video container")
    digest = sha256_file(part)
    if row.sha256 and digest != row.sha256:
        return Skip(STAGE, "checksum_mismatch", f"got sha256 {digest}, the manifest says {row.sha256}")
    suffix = Path(urllib.parse.urlsplit(row.uri).path).suffix.lower()
    dest = _inside(videos_dir, f"{row.video_id}{suffix if suffix in VIDEO_SUFFIXES else container}")
    if dest is None:
        return Skip(STAGE, "unsafe_id", f"{row.video_id!r} would leave {videos_dir}")
    part.replace(dest)
    sidecar = _sidecar(videos_dir, row.video_id)
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    record = {"file": dest.name, "sha256": digest, "bytes": size, "uri": row.uri, "source_state": source_state}
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(sidecar)
    return AcquiredVideo(dest, digest, size)


def acquire_video(row: ManifestRow, videos_dir: Path, cfg: AcquireConfig | None = None) -> AcquiredVideo | Skip:
    """The video as a local file under `videos_dir`, with sha256 and size; or a Skip saying why not."""
    cfg = cfg or AcquireConfig()
    try:
        check_safe_id(row.video_id)
    except ValueError as error:
        return Skip(STAGE, "unsafe_id", str(error))
    scheme = scheme_of(row.uri)
    if scheme not in cfg.allowed_schemes:
        return Skip(STAGE, "scheme_not_allowed", f"{scheme!r} is not in {sorted(cfg.allowed_schemes)}")
    videos_dir = Path(videos_dir)
    videos_dir.mkdir(parents=True, exist_ok=True)
    present = find_present(row, videos_dir)
    if present is not None:
        return present
    part = _inside(videos_dir, f".{row.video_id}.part")
    if part is None:
        return Skip(STAGE, "unsafe_id", f"{row.video_id!r} would leave {videos_dir}")
    source_state = _source_state(row.uri)  # before the copy: an edit during it shows next time
    try:
        skip = _fetch(row, scheme, part, cfg)
        if skip is not None:
            return skip
        return _admit_file(row, part, videos_dir, source_state)
    finally:
        part.unlink(missing_ok=True)
