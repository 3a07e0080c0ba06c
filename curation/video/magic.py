"""Is this a video container? Answered from the first bytes, before any decoder sees the file.

Cheap and strict on purpose: an HTML error page, a JSON body or a text file saved under a video
name is refused at download time with `not_video`; whether a container really holds a decodable
video stream is the probe's question.
"""

from __future__ import annotations

from pathlib import Path

HEAD_BYTES = 64
_TS_PACKET = 188
_QUICKTIME_ATOMS = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg",
                  ".mpeg", ".flv", ".3gp"}


def container_of(head: bytes, ts_probe: bytes = b"") -> str | None:
    """A file suffix for the container the first bytes announce, or None if none is recognised.

    `ts_probe` is the byte at offset 188 (the second MPEG-TS sync byte), when the file is long enough."""
    if len(head) >= 12 and head[4:8] in _QUICKTIME_ATOMS:
        return ".mov" if head[4:8] == b"ftyp" and head[8:12] == b"qt  " else ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska and WebM
        return ".webm" if b"webm" in head else ".mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return ".avi"
    if head.startswith(b"FLV\x01"):
        return ".flv"
    if head.startswith(b"\x00\x00\x01\xba"):  # MPEG program stream pack header
        return ".mpg"
    if head[:1] == b"\x47" and (ts_probe in (b"", b"\x47")):  # MPEG-TS sync byte every 188 bytes
        return ".ts"
    return None


def sniff_container(path: str | Path) -> str | None:
    with Path(path).open("rb") as handle:
        head = handle.read(HEAD_BYTES)
        handle.seek(_TS_PACKET)
        ts_probe = handle.read(1)
    return container_of(head, ts_probe)
