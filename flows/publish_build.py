"""The end of a build: the shards, index, summary, card and figures of this manifest's items,
released as one swap (`curation.corpus.build_release`), then copied to `shards.publish_url`.

What is published is the items of this run's manifest (its rows, after `limit`, and its
quarantined rows), not everything the result store holds: a row removed from the manifest or
renamed leaves no row behind, and a fixed bad row leaves no old quarantine row. Results of other
items stay in the store (a cache) and come back if their rows do.

A stop request (SIGTERM/SIGINT) between buckets or before the release leaves the corpus as it was;
the new shard files written so far are unlisted and go with the next release.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from rich.console import Console

from curation.config import CorpusConfig
from curation.corpus.build_release import release_build
from curation.corpus.catalogue import sync_catalogue
from curation.corpus.shards import publish
from curation.watchdog import Interrupted, checkpoint
from flows.summary import RunSummary


def _add_usage(path: Path, usage: dict[str, int]) -> dict[str, int]:
    """LLM usage over every run that built this corpus (a result file cannot carry its own share:
    one client serves many videos at once). A damaged file starts the count again."""
    try:
        total = json.loads(path.read_text())
        total = {str(k): int(v) for k, v in total.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        total = {}
    for key, value in usage.items():
        total[key] = total.get(key, 0) + value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(total, sort_keys=True))
    tmp.replace(path)
    return total


def publish_build(config: CorpusConfig, console: Console, items: set[str], new: int, reused: int,
                  usage: dict[str, int], started: float) -> dict[str, Any] | None:
    """Release this build; the summary data, or None when a stop request came first."""
    logger = get_run_logger()
    corpus_root = Path(config.output_dir)
    results_dir = corpus_root / "work" / "results"
    catalogue = sync_catalogue(results_dir).only(items)  # reads only what the batches wrote
    summary = RunSummary(new_this_run=new, reused=reused)
    for entry in catalogue:
        summary.add(entry)
    summary.llm_usage.update(_add_usage(corpus_root / "work" / "llm_usage.json", usage))
    data = summary.as_dict() | {
        "llm_usage_this_run": usage, "seconds": round(time.perf_counter() - started, 2),
        "corpus": str(corpus_root), "config_fingerprint": config.fingerprint(), "llm_model": config.llm.model}
    try:
        data = release_build(results_dir, corpus_root, config.shards, catalogue, data, config.llm.backend,
                             checkpoint=checkpoint, on_shards=lambda shards: logger.info(
                                 "shards: %d files written, %d unchanged", len(shards.written), shards.kept))
    except Interrupted:
        return None
    logger.info("released: index.json, README.md, figures and summary.json; %d old shard files removed",
                data["shards_this_run"]["removed"])
    # Publishing waits for the release, so a remote copy never names a card it lacks.
    if config.shards.publish_url:
        publish(corpus_root, config.shards.publish_url)
    summary.print(console)
    create_table_artifact(key="build-corpus-stages", table=summary.stage_rows() or [{"stage": "-"}],
                          description="Quarantined items and time per stage")
    create_table_artifact(key="build-corpus-quarantine", table=summary.reason_rows() or [{"reason": "-"}],
                          description="Quarantine reasons")
    create_markdown_artifact(key="build-corpus-summary", markdown=summary.markdown())
    return data
