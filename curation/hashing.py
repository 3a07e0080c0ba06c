"""Content checksums: the one sha256 used for acquired videos and their sidecars."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20  # 1 MiB reads: large enough to be I/O bound, small enough to stay flat in memory


def sha256_file(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks so a 4 GiB video never sits in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
