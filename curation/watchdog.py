"""Wall-clock budgets for per-video stages, and the run-wide stop flag SIGTERM/SIGINT set.

A stage runs inside `stage_budget(stage, seconds)`; every loop that can run long (a decode, per
packet; a download, per chunk) calls `checkpoint()`, which raises `StageTimeout` once the budget
is spent and `Interrupted` once a stop was asked for. The budget lives in a context variable, so
the decoder, the scene pass and the fetchers check it without a deadline argument on every call,
and code outside a budget (the trainer's frame decoding, a CLI) runs unbounded as before.

A checkpoint cannot interrupt one long C call (one demuxer read, one HTTP read, one LLM wait);
`flows.video_pool` abandons a video whose stage overruns its budget by a grace period, and a
stop request ends the process after a grace period (ARCHITECTURE.md, "Watchdog").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

# Set once by the signal handler (flows.stopping); never cleared inside a process's run.
STOP = threading.Event()


class StageTimeout(Exception):
    """The stage spent its budget; the video is quarantined with reason `stage_timeout`."""

    def __init__(self, stage: str, budget_s: float):
        super().__init__(f"{stage} ran past its {budget_s:g} s budget")
        self.stage = stage
        self.budget_s = budget_s


class Interrupted(Exception):
    """The run is stopping (SIGTERM/SIGINT): the video is left unfinished and redone next run."""


@dataclass(frozen=True)
class Budget:
    stage: str
    seconds: float
    deadline: float  # time.monotonic() value

    def overrun_s(self) -> float:
        return time.monotonic() - self.deadline


_CURRENT: ContextVar[Budget | None] = ContextVar("curation_stage_budget", default=None)
_CANCEL: ContextVar[threading.Event | None] = ContextVar("curation_cancel", default=None)


@contextmanager
def cancelled_by(event: threading.Event) -> Iterator[None]:
    """Within the block, `checkpoint()` also raises `Interrupted` once `event` is set: a stop for
    one batch (its output disk refused a write), where `STOP` stops the whole process's run."""
    token = _CANCEL.set(event)
    try:
        yield
    finally:
        _CANCEL.reset(token)


@contextmanager
def stage_budget(stage: str, seconds: float | None) -> Iterator[Budget | None]:
    """Run the body under a budget of `seconds` (None: no budget, a stop request still counts)."""
    budget = None if seconds is None else Budget(stage, seconds, time.monotonic() + seconds)
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def checkpoint() -> None:
    """Raise if the run is stopping or the current stage's budget is spent; cheap enough per packet."""
    if STOP.is_set():
        raise Interrupted("the run is stopping")
    cancel = _CANCEL.get()
    if cancel is not None and cancel.is_set():
        raise Interrupted("the batch is stopping")
    budget = _CURRENT.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise StageTimeout(budget.stage, budget.seconds)


def remaining_s() -> float | None:
    """Seconds left in the current budget (None without one); for timeouts of blocking calls."""
    budget = _CURRENT.get()
    return None if budget is None else max(0.0, budget.deadline - time.monotonic())
