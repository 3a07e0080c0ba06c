"""One build per corpus folder: an advisory lock on `<output_dir>/work/build.lock`.

Two builds writing one `output_dir` would overwrite each other's run marker, catalogue and
shards (the second one's marker made the first one's batches refuse to run). The build holds an
exclusive `flock` for its whole life; a second build is refused at once with a message that names
the holder (pid, host, start time, command), which the holder writes into the file. The kernel
drops the lock when the holder's process ends, however it ends, so a killed build never leaves a
stale lock. The lock is re-entrant within a process (the command line takes it before Prefect
starts, the flow again inside). Local-filesystem semantics: on NFS without lock support it may
not exclude.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_PATH = Path("work") / "build.lock"
_held: dict[Path, list[int]] = {}  # resolved lock path -> [descriptor, depth]


class CorpusBusy(RuntimeError):
    """Another build holds the corpus folder; the message names it."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0][:300] if text else "a process that has not written its name yet"


@contextmanager
def corpus_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold the corpus folder for the block; raises `CorpusBusy` when another build holds it."""
    path = (Path(output_dir) / LOCK_PATH).resolve()
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CorpusBusy(f"{output_dir} is being built by another run ({_holder(path)}); wait for it to "
                         "finish, or give this run another output_dir") from None
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    command = " ".join(sys.argv)[:200]
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}: {command}\n".encode(), 0)
    _held[path] = [fd, 1]
    try:
        yield
    finally:
        _held[path][1] -= 1
        if _held[path][1] == 0:
            del _held[path]
            os.close(fd)  # releases the lock; the file stays (deleting it would race a waiting build)
