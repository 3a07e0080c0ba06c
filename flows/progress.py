"""One progress display for a run: videos done / quarantined / in flight, with an ETA.

"quarantined" is what the summary's quarantine table counts (a skip or a crash); the bar does not
say "failed", which the summary never does. The counts add up: completed = ok + quarantined; a
video a stop interrupted is not completed (it has no result and the next run does it), and once a
run is stopping the line says how many are left for the next run.
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
        self.total = total
        self.done = self.failed = self.in_flight = 0
        self.stopping = False
        self._progress = Progress(
            # Fits 80 columns: rich cuts a wider line (a pipe or CI log is 80 wide).
            TextColumn("[bold]build-corpus"), BarColumn(bar_width=16), MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._task = self._progress.add_task("videos", total=total, counts=self.counts_text())

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

    def counts_text(self) -> str:
        text = (f"[green]{self.done} ok [yellow]{self.failed} quarantined "
                f"[cyan]{self.in_flight} running")
        if self.stopping:
            left = self.total - self.done - self.failed - self.in_flight
            text += f" [red]{left} left for the next run"
        return text

    def on_event(self, event: str, video_id: str) -> None:
        with self._lock:
            if event == "start":
                self.in_flight += 1
            else:
                self.in_flight = max(0, self.in_flight - 1)
                self.done += event == "done"
                self.failed += event == "failed"
                self.stopping |= event == "interrupted"
            self._refresh(advance=int(event in ("done", "failed")))

    def add_batch(self, done: int, failed: int) -> None:
        with self._lock:
            self.done += done
            self.failed += failed
            self._refresh(advance=done + failed)

    def stop_requested(self) -> None:
        """The run is stopping: from now on the line counts what is left for the next run."""
        with self._lock:
            self.stopping = True
            self._refresh(advance=0)

    def _refresh(self, advance: int) -> None:
        self._progress.update(self._task, advance=advance, counts=self.counts_text())
