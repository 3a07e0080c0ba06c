"""Prefect's temporary API server for a command-line run, tied to the process that needs it.

Without `PREFECT_API_URL`, Prefect starts a uvicorn subprocess on first use and stops it from an
`atexit` hook, which a process ended by a signal's default action, `os._exit` or SIGKILL never
runs: the server lived on with parent 1. Here it is started up front, from the main thread, with
the kernel told to send it SIGTERM when this process ends, however it ends (Linux's
`PR_SET_PDEATHSIG`; elsewhere the atexit hook and `stop_temporary_servers` remain). Prefect then
finds it running and uses it.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def arm() -> None:  # runs in the child between fork and exec: nothing but the one call
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return arm


@contextmanager
def _children_tied_to_this_process():
    arm = _die_with_parent()
    real = subprocess.Popen
    if arm is None:
        yield
        return

    class TiedPopen(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("preexec_fn", arm)
            super().__init__(*args, **kwargs)

    subprocess.Popen = TiedPopen  # only for the start below, from the main thread
    try:
        yield
    finally:
        subprocess.Popen = real


def start_tied_server() -> None:
    """Start the temporary server now, tied to this process, unless a server is configured (or
    this is not the main thread: the signal follows the thread that started the child)."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url or threading.current_thread() is not threading.main_thread():
        return
    from prefect.server.api.server import SubprocessASGIServer

    with _children_tied_to_this_process():
        SubprocessASGIServer().start()


def stop_temporary_servers() -> None:
    """Stop every temporary server this process started (best effort: used on the way out)."""
    try:
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()
    except Exception:  # noqa: BLE001 - the exit must happen regardless
        pass
