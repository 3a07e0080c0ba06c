"""`build-corpus`: manifest -> per-video stages -> results -> Parquet shards, card, figures.

Run directly with `python -m flows.build_corpus --config samples/sample.yaml` (Prefect's ephemeral
API) or as a deployment (`flows/serve.py`, then `prefect deployment run build-corpus/<name>`).

Task granularity: one Prefect task run per batch of videos, never one per video: a task run costs
milliseconds of API traffic and tens of thousands of them destabilise a self-hosted server
(FACTS.md, "Measured on these 2-core machines"). Inside a batch, `flows.video_pool` runs
`flows.video_pipeline.run_video` on bounded threads with separate bounds for downloads, CPU and LLM
work, and a watchdog over every stage. SIGTERM/SIGINT stop the run within seconds at any point
(`flows.stopping`): exit code 128 + the signal, finished videos kept, the published corpus left as
it was, and Prefect records the run Cancelled. One build per `output_dir` at a time
(`curation.corpus.build_lock`).

Resume is the project's own, not Prefect's result cache: a video's result is reused only when its
config fingerprint, manifest row, text and video file are those it was made from and none of its
reasons is retryable (`curation.corpus.reuse`). What is done comes from the results catalogue
(`curation.corpus.catalogue`), which reads only result files it has not seen, and the shard update
rewrites only the hash buckets that changed; shards, index, card and figures are released as one
swap (`flows.publish_build`, `curation.corpus.release`).

On Dask, every worker must see `output_dir` at the same path (shared storage): a batch checks the
flow's run marker there first (`curation.corpus.run_marker`) and refuses to run without it.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line is checked before Prefect is imported (a second of CPU)
    from flows.arguments import exit_on_bad_usage

    exit_on_bad_usage("build_corpus")

import flows.quiet  # noqa: F401  (must precede the Prefect import)

# isort: split

import functools
import hashlib
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from rich.console import Console

from curation.config import CorpusConfig, WorkerLimits, load_config
from curation.corpus.build_lock import CorpusBusy, corpus_lock
from curation.corpus.catalogue import sync_catalogue
from curation.corpus.release import finish_release
from curation.corpus.results import VideoResult, write_result
from curation.corpus.reuse import REDO_WHY, redo_reason
from curation.corpus.run_marker import unshared_output, write_run_marker
from curation.llm.client import LLMClient, LLMConfig
from curation.manifest import ManifestRow, require_usable
from curation.skips import Skip, declare_reasons
from curation.watchdog import STOP
from flows.arguments import build_corpus_args
from flows.ephemeral import start_tied_server
from flows.progress import RunProgress
from flows.publish_build import publish_build
from flows.quiet import quiet_prefect_handlers
from flows.stopping import StopRequest, exit_process, stop_on_signals
from flows.video_pipeline import OUTPUT_REFUSED, Limits, PipelineContext
from flows.video_pool import run_videos
from schemas.cli import output_console, run_cli
from schemas.records import Quarantine

declare_reasons(retryable=("unstorable_result",))  # a crash row: a value no stage should let through
_PROGRESS: RunProgress | None = None  # set in the flow's process; absent on Dask workers
_REFUSED = threading.Event()  # the output location refused a write: later batches do nothing


@functools.lru_cache(maxsize=4)
def _client(llm_json: str) -> LLMClient:
    return LLMClient(LLMConfig.model_validate_json(llm_json))


@functools.lru_cache(maxsize=4)
def _limits(workers_json: str) -> Limits:
    # One set of bounds per process and worker setting, shared by every batch it runs.
    return Limits.from_workers(WorkerLimits.model_validate_json(workers_json))


@task(name="process-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def process_batch(rows: list[dict[str, Any]], config_json: str, run_token: str) -> dict[str, Any]:
    """Process one batch; results go to disk, only counts come back (pass paths, not data)."""
    # The task's function is pickled by value for Dask (the module attribute is the Task), so
    # the work lives in a plain module function that pickles by reference, globals and all.
    return run_batch(rows, config_json, run_token)


def run_batch(rows: list[dict[str, Any]], config_json: str, run_token: str) -> dict[str, Any]:
    nothing = {"done": 0, "failed": 0, "llm_usage": {}, "local": _PROGRESS is not None, "refused": None,
               "interrupted": STOP.is_set()}
    if _REFUSED.is_set() or STOP.is_set():  # the disk is full, or the run is stopping: do nothing
        return nothing
    config = CorpusConfig.model_validate_json(config_json)
    # Before anything is written: results written where the flow cannot read them would be lost.
    unshared = unshared_output(config.output_dir, run_token)
    if unshared:
        return nothing | {"unshared": unshared}
    client = _client(config.llm.model_dump_json())
    usage_before = client.usage_snapshot()
    ctx = PipelineContext(config=config, corpus_root=Path(config.output_dir), client=client,
                          limits=_limits(config.workers.model_dump_json()),
                          fingerprint=config.fingerprint(),
                          on_event=_PROGRESS.on_event if _PROGRESS else (lambda e, v: None))
    results_dir = ctx.corpus_root / "work" / "results"
    workers = config.workers.downloads + config.workers.cpu + config.workers.llm
    counts = {"done": 0, "failed": 0}
    refused = None

    def keep(result: VideoResult) -> None:
        store_result(results_dir, result)
        counts["done" if result.dialogues else "failed"] += 1

    complete = True
    try:
        complete = run_videos([ManifestRow.model_validate(r) for r in rows], ctx, workers, keep)
    except OSError as error:
        if error.errno not in OUTPUT_REFUSED:
            raise
        # Returned, not raised: a task retry cannot free disk space, and a raised error would
        # only add Prefect's tracebacks around the one message the user needs.
        _REFUSED.set()
        refused = _refusal(error)
    usage = {k: v - usage_before.get(k, 0) for k, v in client.usage_snapshot().items()}
    return {**counts, "llm_usage": usage, "local": _PROGRESS is not None, "refused": refused,
            "interrupted": not complete}


def store_result(results_dir: Path, result: VideoResult) -> None:
    """Write a video's result; one that cannot be serialised (a value no stage should have let
    through) is replaced by a crash row naming why, so the batch and its other videos go on."""
    try:
        write_result(results_dir, result)
    except (ValueError, TypeError) as error:  # PydanticSerializationError is a ValueError
        row = Skip("results", "unstorable_result", f"{type(error).__name__}: {error}").to_quarantine(
            result.video_id, result.video_id, "error")
        write_result(results_dir, VideoResult(video_id=result.video_id, config_fingerprint=result.config_fingerprint,
                                              inputs=result.inputs, quarantine=[row],
                                              stage_durations_s=result.stage_durations_s))


def _refusal(error: OSError) -> dict[str, Any]:
    return {"errno": error.errno, "strerror": error.strerror, "filename": str(error.filename or "")}


def _manifest_skip_result(row: Quarantine, fingerprint: str) -> VideoResult:
    # Bad manifest rows may have unsafe ids: their result file is named by a hash instead.
    key = "manifest-" + hashlib.sha1(f"{row.item_id}|{row.reason}|{row.detail}".encode()).hexdigest()[:12]
    if row.reason == "duplicate_id":
        # The first row with this id owns the id in the quarantine table (its video may fail too).
        row = row.model_copy(update={"item_id": f"{row.item_id}@{row.detail.split(':', 1)[0].replace(' ', '-')}"})
    return VideoResult(video_id=key, config_fingerprint=fingerprint, quarantine=[row])


def _task_runner(config: CorpusConfig):
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # optional extra: pip install '.[dask]'

        if not config.dask_address:
            raise ValueError("task_runner: dask needs dask_address (tcp://scheduler:8786)")
        return DaskTaskRunner(address=config.dask_address)
    # Batches run one at a time locally: each already keeps every resource busy.
    return ThreadPoolTaskRunner(max_workers=1)


def _run(config: CorpusConfig, console: Console) -> dict[str, Any]:
    """The whole build: one per corpus folder, stopped by SIGTERM/SIGINT at any point."""
    with corpus_lock(config.output_dir), stop_on_signals(config.watchdog.stop_grace_s) as stop:
        return _build(config, console, stop)


def _build(config: CorpusConfig, console: Console, stop: StopRequest) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    corpus_root = Path(config.output_dir)
    results_dir = corpus_root / "work" / "results"
    fingerprint, limits = config.fingerprint(), config.verdict_limits()
    finish_release(corpus_root)  # what a killed build committed lands before anything is read

    read = require_usable(config.manifest)
    rows = read.rows[: config.limit] if config.limit else read.rows
    catalogue = sync_catalogue(results_dir)
    items = {row.video_id for row in rows}
    for skip in read.skips:
        result = _manifest_skip_result(skip, fingerprint)
        items.add(result.video_id)
        if result.video_id not in catalogue:
            write_result(results_dir, result)
    why: Counter[str] = Counter()
    todo = []
    for row in rows:
        reason = redo_reason(catalogue.get(row.video_id), row, fingerprint, corpus_root, limits)
        if reason is not None:
            todo.append(row)
            why[REDO_WHY[reason]] += 1
    # Counted as the summary counts ("items"): quarantined manifest rows are items too.
    logger.info("%d manifest items: %d quarantined at the manifest, %d to process%s, %d already finished",
                len(rows) + len(read.skips), len(read.skips), len(todo),
                f" ({', '.join(f'{n} {w}' for w, n in why.most_common())})" if why else "", len(rows) - len(todo))
    usage, refused, unshared = _process(todo, config, console, stop)
    if refused:  # no shards or card from a partial run: the re-run writes them
        return {"output_refused": refused}
    if stop.signum is None and not unshared:
        data = publish_build(config, console, items, len(todo), len(rows) - len(todo), usage, started)
        if data is not None:  # None: a stop request came while publishing; the old corpus stands
            return data
    if stop.signum is not None:  # finished videos are on disk, the re-run does the rest
        return {"interrupted": stop.name, "exit_code": stop.exit_code}
    return {"output_unshared": unshared | {"flow_host": socket.gethostname()}}


def _process(todo: list[ManifestRow], config: CorpusConfig, console: Console, stop: StopRequest
             ) -> tuple[dict[str, int], dict[str, Any] | None, dict[str, Any] | None]:
    """The batches: LLM usage, and why the run stopped early (a refused write, unshared storage)."""
    global _PROGRESS
    run_token = write_run_marker(Path(config.output_dir))
    batches = [todo[i: i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    config_json = config.model_dump_json()
    usage: dict[str, int] = {}
    refused = unshared = None
    _REFUSED.clear()
    with RunProgress(total=len(todo), console=console) as progress:
        _PROGRESS = progress if config.task_runner == "local" else None
        try:
            futures = [process_batch.submit([r.model_dump(mode="json") for r in batch], config_json, run_token)
                       for batch in batches]
            for future in futures:
                out = future.result()
                if not out["local"]:
                    progress.add_batch(out["done"], out["failed"])
                for key, value in out["llm_usage"].items():
                    usage[key] = usage.get(key, 0) + value
                refused = refused or out.get("refused")
                unshared = unshared or out.get("unshared")
            if stop.signum is not None:
                progress.stop_requested()
        finally:
            _PROGRESS = None
    return usage, refused, unshared


def _outcome(data: dict[str, Any]) -> Any:
    """What Prefect records: Cancelled for a stopped run, Failed for one the output location
    refused, Completed (the summary) otherwise; the data rides along for the command line."""
    if data.get("interrupted"):
        return Cancelled(message=f"stopped by {data['interrupted']}; finished videos are kept", data=data)
    if data.get("output_refused") or data.get("output_unshared"):
        return Failed(message="the output location refused a write or is not shared", data=data)
    return data


@flow(name="build-corpus", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def build_corpus(config: str = "samples/sample.yaml", overrides: dict[str, Any] | None = None) -> Any:
    """Build (or resume) a corpus. `overrides` takes dotted keys, e.g. {"llm.model": "..."}."""
    cfg = load_config(config, overrides)
    try:
        if cfg.task_runner == "local":
            return _outcome(_run(cfg, output_console(stderr=True)))
        # Dask: the same batches, submitted through a subflow whose task runner is the cluster.
        return _outcome(_run_batches.with_options(task_runner=_task_runner(cfg))(cfg.model_dump_json()))
    except OSError as error:  # a write of the flow itself (manifest skips, shards, card)
        if error.errno not in OUTPUT_REFUSED:
            raise
        return _outcome({"output_refused": _refusal(error)})


@flow(name="build-corpus-batches")
def _run_batches(config_json: str) -> dict[str, Any]:
    return _run(CorpusConfig.model_validate_json(config_json), output_console(stderr=True))


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, known=(CorpusBusy,))  # a busy output_dir: its message is the line


def _main(argv: list[str]) -> int:
    args, overrides, cfg = build_corpus_args(argv)
    with corpus_lock(cfg.output_dir):  # before Prefect starts: a busy folder costs no wait
        quiet_prefect_handlers()
        start_tied_server()
        state = build_corpus(config=args.config, overrides=overrides or None, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    if data.get("interrupted"):
        print(f"build-corpus stopped by {data['interrupted']}: finished videos are kept; run the same command "
              "again to do the rest and write the shards.", file=sys.stderr)
        return int(data["exit_code"])
    refused = data.get("output_refused")
    if refused:
        # Finished videos are on disk; a re-run once there is room does only the rest.
        print(f"build-corpus stopped: the output location refused a write: {refused['strerror']} "
              f"({refused['filename'] or 'unknown file'}). Free space or fix permissions, then run the same "
              "command again: finished videos are kept and not redone.", file=sys.stderr)
        return 3
    unshared = data.get("output_unshared")
    if unshared:
        print(f"build-corpus stopped: a worker on {unshared['host']} does not see this run's output folder "
              f"{unshared['output_dir']} (run marker there: {unshared['marker']!r}); the flow runs on "
              f"{unshared['flow_host']}. Every Dask worker must mount output_dir at the same path as the flow "
              "(NFS, Lustre, a shared volume). Results written where the flow can see them are kept.",
              file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    # Run the module under its importable name, not as __main__: Dask workers unpickle tasks by
    # module reference, and `__main__.process_batch` does not exist on a worker.
    from flows.build_corpus import main as _main

    exit_process(_main())
