"""Content checksums: the one sha256 used for acquired videos and their sidecars, and the cheap
state (size, mtime) that says whether a local file changed since."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

CHUNK_BYTES = 1 << 20  # 1 MiB reads: large enough to be I/O bound, small enough to stay flat in memory


def sha256_file(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks so a 4 GiB video never sits in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


ABSENT = "absent"


def file_state(path: str | Path) -> str:
    """A file's size and modification time (ns): what an edit, a replacement or a copy from
    elsewhere changes, read without opening the file; `absent` when it is not a file."""
    try:
        info = Path(path).stat()
    except OSError:
        return ABSENT
    # The one stat: the kind and the state come from the same look at the file.
    return f"{info.st_size}:{info.st_mtime_ns}" if stat.S_ISREG(info.st_mode) else ABSENT
