"""`build-corpus`: manifest -> per-video stages -> results -> Parquet shards, card, figures.

Run directly with `python -m flows.build_corpus --config samples/sample.yaml` (Prefect's ephemeral
API) or as a deployment (`flows/serve.py`, then `prefect deployment run build-corpus/<name>`).

Task granularity: one Prefect task run per batch of videos, never one per video: a task run costs
milliseconds of API traffic and tens of thousands of them destabilise a self-hosted server
(FACTS.md, "Measured on these 2-core machines"). Inside a batch, `flows.video_pool` runs
`flows.video_pipeline.run_video` on bounded threads with separate bounds for downloads, CPU and LLM
work, and a watchdog over every stage. SIGTERM/SIGINT stop the run within seconds
(`flows.stopping`): exit code 128 + the signal, finished videos kept, no shards written.

Resume is the project's own, not Prefect's result cache: a video whose result file exists for the
same config fingerprint is skipped; retryable failures (crashes, network, LLM outages) are redone.
What is done comes from the results catalogue (`curation.corpus.catalogue`), which reads only
result files it has not seen, and the shard update rewrites only the hash buckets that changed.

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
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from rich.console import Console

from curation.config import CorpusConfig, WorkerLimits, load_config
from curation.corpus.card import write_dataset_card
from curation.corpus.catalogue import CatalogueEntry, sync_catalogue
from curation.corpus.results import VideoResult, write_result
from curation.corpus.run_marker import unshared_output, write_run_marker
from curation.corpus.shards import publish, update_shards
from curation.llm.client import LLMClient, LLMConfig
from curation.manifest import ManifestRow, require_usable
from curation.skips import Skip
from curation.watchdog import STOP
from flows.arguments import build_corpus_args
from flows.progress import RunProgress
from flows.quiet import quiet_prefect_handlers
from flows.stopping import stop_on_signals
from flows.summary import RunSummary
from flows.video_pipeline import OUTPUT_REFUSED, Limits, PipelineContext
from flows.video_pool import run_videos
from schemas.cli import output_console, run_cli
from schemas.records import Quarantine

# Reasons worth another try on a re-run: the cause may be gone (a server back up, a bug fixed).
# Final, by contrast: whatever the input itself decides, e.g. a redirect loop or a redirect to a
# refused scheme (`redirect_loop`, `redirect_refused`), a malformed URL (`bad_uri`), a stage over
# its watchdog budget (`stage_timeout`: the same file would hang again; delete its result file, or
# raise `watchdog.*`, to try again).
RETRYABLE_REASONS = {"crash", "http_error", "http_5xx", "timeout", "connection_error", "llm_failed",
                     "llm_empty", "missing_extra"}

_PROGRESS: RunProgress | None = None  # set in the flow's process; absent on Dask workers
_REFUSED = threading.Event()  # the output location refused a write: later batches do nothing


@functools.lru_cache(maxsize=4)
def _client(llm_json: str) -> LLMClient:
    return LLMClient(LLMConfig.model_validate_json(llm_json))


@functools.lru_cache(maxsize=4)
def _limits(workers_json: str) -> Limits:
    # One set of bounds per process and worker setting, shared by every batch it runs.
    return Limits.from_workers(WorkerLimits.model_validate_json(workers_json))


def is_final(entry: CatalogueEntry, fingerprint: str) -> bool:
    return entry.config_fingerprint == fingerprint and not any(
        kind == "error" or reason in RETRYABLE_REASONS for _, reason, kind in entry.quarantine)


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
                                              quarantine=[row], stage_durations_s=result.stage_durations_s))


def _refusal(error: OSError) -> dict[str, Any]:
    return {"errno": error.errno, "strerror": error.strerror, "filename": str(error.filename or "")}


def _manifest_skip_result(row: Quarantine, fingerprint: str) -> VideoResult:
    # Bad manifest rows may have unsafe ids: their result file is named by a hash instead.
    key = "manifest-" + hashlib.sha1(f"{row.item_id}|{row.reason}|{row.detail}".encode()).hexdigest()[:12]
    if row.reason == "duplicate_id":
        # The first row with this id owns the id in the quarantine table (its video may fail too).
        row = row.model_copy(update={"item_id": f"{row.item_id}@{row.detail.split(':', 1)[0].replace(' ', '-')}"})
    return VideoResult(video_id=key, config_fingerprint=fingerprint, quarantine=[row])


def _add_usage(path: Path, usage: dict[str, int]) -> dict[str, int]:
    """LLM usage over every run that built this corpus (a result file cannot carry its own share:
    one client serves many videos at once)."""
    total: dict[str, int] = {}
    if path.exists():
        try:
            total = json.loads(path.read_text())
        except (OSError, ValueError):
            total = {}
    for key, value in usage.items():
        total[key] = total.get(key, 0) + value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(total, sort_keys=True))
    tmp.replace(path)
    return total


def _task_runner(config: CorpusConfig):
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # optional extra: pip install '.[dask]'

        if not config.dask_address:
            raise ValueError("task_runner: dask needs dask_address (tcp://scheduler:8786)")
        return DaskTaskRunner(address=config.dask_address)
    # Batches run one at a time locally: each already keeps every resource busy.
    return ThreadPoolTaskRunner(max_workers=1)


def _run(config: CorpusConfig, console: Console) -> dict[str, Any]:
    global _PROGRESS
    logger = get_run_logger()
    started = time.perf_counter()
    corpus_root = Path(config.output_dir)
    results_dir = corpus_root / "work" / "results"
    fingerprint = config.fingerprint()

    read = require_usable(config.manifest)
    rows = read.rows[: config.limit] if config.limit else read.rows
    catalogue = sync_catalogue(results_dir)
    for skip in read.skips:
        result = _manifest_skip_result(skip, fingerprint)
        if result.video_id not in catalogue:
            write_result(results_dir, result)
    todo = []
    for row in rows:
        previous = catalogue.get(row.video_id)
        if previous is None or not is_final(previous, fingerprint):
            todo.append(row)
    # Counted as the summary counts ("items"): quarantined manifest rows are items too.
    logger.info("%d manifest items: %d quarantined at the manifest, %d to process, %d already finished",
                len(rows) + len(read.skips), len(read.skips), len(todo), len(rows) - len(todo))
    run_token = write_run_marker(corpus_root)

    batches = [todo[i: i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    config_json = config.model_dump_json()
    usage: dict[str, int] = {}
    refused = unshared = None
    _REFUSED.clear()
    with RunProgress(total=len(todo), console=console) as progress, \
            stop_on_signals(config.watchdog.stop_grace_s) as stop:
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
        finally:
            _PROGRESS = None
    if refused:  # no shards or card from a partial run: the re-run writes them
        return {"output_refused": refused}
    if stop.signum is not None:  # the same: finished videos are on disk, the re-run does the rest
        return {"interrupted": stop.name, "exit_code": stop.exit_code}
    if unshared:
        return {"output_unshared": unshared | {"flow_host": socket.gethostname()}}

    catalogue = sync_catalogue(results_dir)  # reads only what the batches wrote
    summary = RunSummary(new_this_run=len(todo), reused=len(rows) - len(todo))
    for entry in catalogue:
        summary.add(entry)
    summary.llm_usage.update(_add_usage(corpus_root / "work" / "llm_usage.json", usage))
    # Publishing waits for the card, so a remote copy never names a card it lacks.
    shards = update_shards(results_dir, corpus_root, config.shards.model_copy(update={"publish_url": None}),
                           catalogue=catalogue)
    index = shards.index
    logger.info("shards: %d files written, %d unchanged, %d removed", len(shards.written), shards.kept,
                len(shards.removed))
    data = summary.as_dict() | {"llm_usage_this_run": usage, "seconds": round(time.perf_counter() - started, 2),
                                "shards_this_run": {"written": shards.written, "kept": shards.kept,
                                                    "removed": len(shards.removed)},
                                "corpus": str(corpus_root), "config_fingerprint": fingerprint,
                                "llm_model": config.llm.model}
    (corpus_root / "summary.json").write_text(json.dumps(data, indent=2, default=str))
    write_dataset_card(corpus_root, index, data, llm_backend=config.llm.backend)
    if config.shards.publish_url:
        publish(corpus_root, config.shards.publish_url)
    summary.print(console)
    create_table_artifact(key="build-corpus-stages", table=summary.stage_rows() or [{"stage": "-"}],
                          description="Quarantined items and time per stage")
    create_table_artifact(key="build-corpus-quarantine", table=summary.reason_rows() or [{"reason": "-"}],
                          description="Quarantine reasons")
    create_markdown_artifact(key="build-corpus-summary", markdown=summary.markdown())
    return data


@flow(name="build-corpus", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def build_corpus(config: str = "samples/sample.yaml", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build (or resume) a corpus. `overrides` takes dotted keys, e.g. {"llm.model": "..."}."""
    cfg = load_config(config, overrides)
    try:
        if cfg.task_runner == "local":
            return _run(cfg, output_console(stderr=True))
        # Dask: the same batches, submitted through a subflow whose task runner is the cluster.
        return _run_batches.with_options(task_runner=_task_runner(cfg))(cfg.model_dump_json())
    except OSError as error:  # a write of the flow itself (manifest skips, shards, card)
        if error.errno not in OUTPUT_REFUSED:
            raise
        return {"output_refused": _refusal(error)}


@flow(name="build-corpus-batches")
def _run_batches(config_json: str) -> dict[str, Any]:
    return _run(CorpusConfig.model_validate_json(config_json), output_console(stderr=True))


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args, overrides = build_corpus_args(argv)
    quiet_prefect_handlers()
    data = build_corpus(config=args.config, overrides=overrides or None)
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

    sys.exit(_main())
