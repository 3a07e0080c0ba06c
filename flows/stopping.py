"""SIGTERM and SIGINT during a build: stop within seconds, keep every finished video.

The first signal sets `curation.watchdog.STOP`: no video starts, running stages end at their next
checkpoint (a packet, a chunk) without writing a result, so the next run redoes exactly those, and
the flow returns without building shards. If the process is still alive `grace_s` later (a stage
stuck in native code, an LLM call waiting on its server) it exits hard, after stopping Prefect's
temporary API server; a second signal does that at once. A hard exit is safe for the same reason
SIGKILL is (tests/test_kill_resume.py): results, shards and the index are written atomically.

Prefect installs its own SIGTERM handler for a flow run, which raises in the main thread and leaves
the batch threads running; ours replaces it for the span of the batches and puts it back after.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from curation.watchdog import STOP
from flows.ephemeral import stop_temporary_servers

SIGNALS = (signal.SIGTERM, signal.SIGINT)
VIDEO_THREAD = "video"  # the name `flows.video_pool` gives the threads that run stages


@dataclass
class StopRequest:
    signum: int | None = None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)


def hard_exit(request: StopRequest) -> None:
    print(f"build-corpus: still running after {request.name}: exiting now; finished videos are kept and the "
          "rest is redone by the next run", file=sys.stderr, flush=True)
    stopper = threading.Thread(target=stop_temporary_servers, daemon=True)
    stopper.start()
    stopper.join(timeout=6)
    os._exit(request.exit_code)


@contextmanager
def stop_on_signals(grace_s: float) -> Iterator[StopRequest]:
    """Within the block, SIGTERM/SIGINT ask the run to stop (see the module docstring). Outside the
    main thread (a served deployment's worker thread) signals cannot be caught: nothing changes."""
    request = StopRequest()
    STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame) -> None:
        if STOP.is_set():  # asked twice: no more waiting
            hard_exit(request)
        request.signum = signum
        STOP.set()
        print(f"build-corpus: {request.name} received: no new video starts; running ones stop at their next "
              f"checkpoint (at most {grace_s:g} s)", file=sys.stderr, flush=True)
        timer = threading.Timer(grace_s, hard_exit, args=(request,))
        timer.daemon = True
        timer.start()

    previous = {sig: signal.signal(sig, handle) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


EXIT_JOIN_S = 3.0  # a video thread at a checkpoint ends within milliseconds; one in native code may never


def exit_process(code: int) -> None:
    """End the process with `code`. An interpreter that exits while a video thread (a daemon) is
    still inside OpenCV or FFmpeg can abort in their C++ teardown ("terminate called without an
    active exception", exit 134): the threads get `EXIT_JOIN_S` to end (a stopping run ends its
    stages at the next checkpoint); any still running then, the process ends with `os._exit`
    after flushing its output and stopping Prefect's temporary server, which is safe for the
    reason SIGKILL is (results, shards and releases are atomic)."""
    deadline = time.monotonic() + EXIT_JOIN_S
    for thread in [t for t in threading.enumerate() if t.name.startswith(VIDEO_THREAD)]:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.name.startswith(VIDEO_THREAD) and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        stop_temporary_servers()
        os._exit(code)
    sys.exit(code)
