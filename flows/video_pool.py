"""The videos of one batch on a bounded set of daemon threads, with a watchdog over their stages.

Each result is handed to `on_result` (which writes it) as soon as its video finishes, so a stop or a
crash loses only the videos in flight. A stage that checks its budget ends itself
(`curation.watchdog`); one stuck in a single native call (a demuxer read, a socket wait) is
abandoned here once it is `grace_s` past its budget: the video gets a `stage_timeout` quarantine
row, its resource slot is handed back, a fresh thread takes its place, and the stuck thread, a
daemon, can no longer delay the batch or the process's exit. Its late result, if any, is dropped.

Why threads and not processes: the stages share one LLM client and one set of resource bounds per
process, and a Dask worker may not start child processes. See ARCHITECTURE.md, "Watchdog".
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from curation.corpus.results import VideoResult
from curation.manifest import ManifestRow
from curation.skips import Skip, declare_reasons
from curation.watchdog import STOP, Budget, cancelled_by
from flows.stopping import VIDEO_THREAD
from flows.video_pipeline import PipelineContext, VideoRun, run_video

POLL_S = 0.5  # how often the watchdog looks at running stages; also the stop-request latency
declare_reasons(final=("stage_timeout",))


@dataclass
class _Running:
    row: ManifestRow
    run: VideoRun


def abandoned_result(running: _Running, budget: Budget, ctx: PipelineContext, grace_s: float) -> VideoResult:
    detail = (f"{budget.stage} did not return {grace_s:g} s after its {budget.seconds:g} s budget (stuck in a "
              "native call); the video was abandoned")
    row = Skip(budget.stage, "stage_timeout", detail).to_quarantine(running.row.video_id, running.row.video_id)
    return VideoResult(video_id=running.row.video_id, config_fingerprint=ctx.fingerprint,
                       inputs=running.run.inputs, quarantine=[row], stage_durations_s=dict(running.run.durations_s))


def run_videos(rows: list[ManifestRow], ctx: PipelineContext, workers: int,
               on_result: Callable[[VideoResult], None]) -> bool:
    """Run every row (at most `workers` at once) and pass each result to `on_result`, in the
    order they finish. Returns False when a stop request (SIGTERM/SIGINT) left rows undone. An
    exception from a video (only an output disk that refuses writes) or from `on_result` stops
    the batch and is raised here."""
    todo: queue.SimpleQueue[ManifestRow] = queue.SimpleQueue()
    for row in rows:
        todo.put(row)
    finished: queue.SimpleQueue[tuple[int, VideoResult | None | BaseException]] = queue.SimpleQueue()
    running: dict[int, _Running] = {}
    lock = threading.Lock()
    closing = threading.Event()  # the batch ended early: threads take no more rows
    grace_s = ctx.config.watchdog.grace_s
    tokens = iter(range(10**12))

    def work() -> None:
        while not (STOP.is_set() or closing.is_set()):
            try:
                row = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                token = next(tokens)
                running[token] = _Running(row, VideoRun(row.video_id, ctx.config.watchdog))
                run = running[token].run
            try:
                # An early end of the batch (the output disk refused a write) stops the other
                # videos at their next checkpoint, so no thread is left decoding at exit.
                with cancelled_by(closing):
                    outcome: VideoResult | None | BaseException = run_video(row, ctx, run)
            except BaseException as error:  # noqa: BLE001 - handed to the batch's thread to raise
                outcome = error
            finished.put((token, outcome))

    def start_thread() -> None:
        threading.Thread(target=work, name=VIDEO_THREAD, daemon=True).start()

    for _ in range(min(workers, max(1, len(rows)))):
        start_thread()
    left = len(rows)
    try:
        while left:
            try:
                token, outcome = finished.get(timeout=POLL_S)
            except queue.Empty:
                left -= _abandon_overruns(running, lock, ctx, grace_s, on_result, start_thread)
                with lock:
                    if STOP.is_set() and not running:
                        return False
                continue
            with lock:
                done = running.pop(token, None)
            if done is None:  # abandoned earlier: its row already has its result
                continue
            left -= 1
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is None:  # interrupted by a stop request: redone by the next run
                ctx.on_event("interrupted", done.row.video_id)
                continue
            on_result(outcome)
            # Here, not in the video's thread: an abandoned video's late result counts only once.
            ctx.on_event("done" if outcome.dialogues else "failed", outcome.video_id)
    finally:
        closing.set()
    return not STOP.is_set()


def _abandon_overruns(running: dict[int, _Running], lock: threading.Lock, ctx: PipelineContext,
                      grace_s: float, on_result: Callable[[VideoResult], None],
                      start_thread: Callable[[], None]) -> int:
    now = time.monotonic()
    with lock:
        stuck = []
        for token, item in running.items():
            budget = item.run.current  # read once: the stage's thread may clear it meanwhile
            if budget is not None and now > budget.deadline + grace_s:
                stuck.append((token, item, budget))
        for token, _, _ in stuck:
            del running[token]
    for _, item, budget in stuck:
        item.run.abandon()
        on_result(abandoned_result(item, budget, ctx, grace_s))
        ctx.on_event("failed", item.row.video_id)
        start_thread()
    return len(stuck)
