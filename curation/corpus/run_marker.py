"""Proof that a worker writes into the same corpus folder as the flow that builds the shards.

Workers write results (and videos, and the LLM cache) under `output_dir`; the flow then builds
shards from its own view of that folder. On a multi-machine Dask cluster a path that is not on
shared storage exists on each machine's own disk (a worker would even create it), so without a
check the run "succeeds" and the shards silently lack every video done elsewhere.

The flow writes a fresh random token to `<output_dir>/work/run-marker` before it sends any
batch; a batch first reads that file through its own `output_dir` and refuses to run when the
token is not there. Nothing is created on the worker's side before the check.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

MARKER = Path("work") / "run-marker"


def write_run_marker(corpus_root: str | Path) -> str:
    """A new token for this run, written where every worker must be able to read it."""
    path = Path(corpus_root) / MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(token)
    os.replace(tmp, path)
    return token


def unshared_output(corpus_root: str | Path, token: str) -> dict[str, str] | None:
    """None when this process sees the flow's token under `corpus_root`; else what it saw, for the
    flow's message (which host, which folder, what was there)."""
    path = Path(corpus_root) / MARKER
    try:
        found = path.read_text().strip()
    except OSError as error:
        found = f"unreadable ({error.strerror or type(error).__name__})"
    if found == token:
        return None
    return {"host": socket.gethostname(), "output_dir": str(corpus_root),
            "marker": found if len(found) <= 80 else found[:80] + "..."}
