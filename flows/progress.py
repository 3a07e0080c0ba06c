"""One progress display for a run: videos done / quarantined / in flight, with an ETA.

"quarantined" is what the summary's quarantine table counts (a skip or a crash); the bar does not
say "failed", which the summary never does.
"""

from __future__ import annotations

import logging
import threading

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

TASK_RUN_LOGGER = logging.getLogger("prefect.task_runs")


class RunProgress:
    """Thread-safe; fed per video in local runs and per batch when batches run on Dask workers."""

    def __init__(self, total: int, console: Console | None = None):
        self._lock = threading.Lock()
        self.done = self.failed = self.in_flight = 0
        self._progress = Progress(
            # Fits 80 columns: rich cuts a wider line (a pipe or CI log is 80 wide).
            TextColumn("[bold]build-corpus"), BarColumn(bar_width=16), MofNCompleteColumn(),
            TextColumn("[green]{task.fields[done]} ok [yellow]{task.fields[failed]} quarantined "
                       "[cyan]{task.fields[in_flight]} running"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._task = self._progress.add_task("videos", total=total, done=0, failed=0, in_flight=0)

    def __enter__(self) -> RunProgress:
        # Prefect's "Task run ... Finished" lines would be printed into the live bar; the bar and
        # the summary after it say the same. Warnings and errors still show.
        self._task_runs_level = TASK_RUN_LOGGER.level
        TASK_RUN_LOGGER.setLevel(max(logging.WARNING, self._task_runs_level))
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()
        TASK_RUN_LOGGER.setLevel(self._task_runs_level)

    def on_event(self, event: str, video_id: str) -> None:
        with self._lock:
            if event == "start":
                self.in_flight += 1
            else:
                self.in_flight = max(0, self.in_flight - 1)
                self.done += event == "done"
                self.failed += event == "failed"
            self._refresh(advance=0 if event == "start" else 1)

    def add_batch(self, done: int, failed: int) -> None:
        with self._lock:
            self.done += done
            self.failed += failed
            self._refresh(advance=done + failed)

    def _refresh(self, advance: int) -> None:
        self._progress.update(self._task, advance=advance, done=self.done, failed=self.failed,
                              in_flight=self.in_flight)
