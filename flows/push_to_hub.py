"""`push-to-hub`: upload a built corpus (shards, index, card, figures) to a Hub dataset repo.

`python -m flows.push_to_hub --corpus CORPUS --repo-id USER/NAME [--dry-run]`. The token comes
from the environment (HF_TOKEN) or a stored `hf auth login`, never from a flow parameter, so it
never lands in Prefect's database. Re-running after a failure uploads only what the Hub lacks.
"""

from __future__ import annotations  # noqa: I001  (flows.quiet must come first)

import flows.quiet  # noqa: F401  (must precede the Prefect import)

# isort: split

import argparse
import contextlib
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from curation.corpus.build_lock import CorpusBusy, corpus_lock
from curation.corpus.hub_upload import HubPushError, plan_upload, push_corpus
from curation.corpus.release import finish_release
from flows.ephemeral import start_tied_server
from schemas.cli import UsageError, add_cli_flags, run_cli

LOGGED_FILES = 100  # the log names this many; the plan artifact lists every file


def plan_markdown(corpus: str, repo_id: str, items: list) -> str:
    lines = [f"# push-to-hub plan: `{corpus}` -> `{repo_id}`", "",
             f"{len(items)} files, {sum(i.bytes for i in items)} bytes (videos/, work/ and llm_cache/ "
             "are never sent)", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| `{i.path_in_repo}` | {i.bytes} | `{i.sha256[:12]}` |" for i in items]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def upload_progress(total_bytes: int, disable: bool):
    """Bytes committed so far, with rate and ETA (huggingface_hub's own per-file bars are off)."""
    bar = Progress(TextColumn("[bold]push-to-hub"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=disable)
    with bar:
        yield bar, bar.add_task("upload", total=total_bytes)


@flow(name="push-to-hub", log_prints=True)
def push_to_hub(corpus: str, repo_id: str, private: bool = True, dry_run: bool = False,
                revision: str = "main", endpoint: str | None = None, delete_stale: bool = True) -> dict[str, Any]:
    """Upload the corpus at `corpus` to the dataset repo `repo_id` (created private by default)."""
    logger = get_run_logger()
    items = plan_upload(corpus)
    logger.info("plan: %d files, %d bytes, to %s (%s)", len(items), sum(i.bytes for i in items), repo_id,
                "dry run" if dry_run else f"revision {revision}")
    for item in items[:LOGGED_FILES]:
        logger.info("  %s  %d bytes  sha256 %s", item.path_in_repo, item.bytes, item.sha256[:12])
    if len(items) > LOGGED_FILES:
        logger.info("  ... and %d more (all listed in the push-to-hub-plan artifact)", len(items) - LOGGED_FILES)
    create_markdown_artifact(key="push-to-hub-plan", markdown=plan_markdown(corpus, repo_id, items),
                             description="Files the push would send")

    sizes = {i.path_in_repo: i.bytes for i in items}
    with upload_progress(sum(sizes.values()), disable=dry_run) as (bar, task):
        def on_commit(number: int, paths: list[str]) -> None:
            logger.info("committed chunk %d: %d files", number, len(paths))
            bar.update(task, advance=sum(sizes.get(p, 0) for p in paths))

        report = push_corpus(corpus, repo_id, private=private, revision=revision, dry_run=dry_run,
                             endpoint=endpoint, delete_stale=delete_stale, on_commit=on_commit)
        bar.update(task, completed=sum(sizes.values()))  # files already on the Hub count as sent
    verb = "would upload" if dry_run else "uploaded"
    logger.info("%s %d files (%d bytes); %d already on the Hub with the same content%s", verb,
                len(report.uploaded), report.bytes, len(report.skipped_same),
                "" if report.remote_checked else "; repo not readable, every file counted as new")
    if report.deleted:
        logger.info("%s %d files of an older build: %s", "would delete" if dry_run else "deleted",
                    len(report.deleted), ", ".join(report.deleted[:20]))
    create_markdown_artifact(key="push-to-hub-report", markdown=report.markdown(repo_id),
                             description="What the push sent or would send")
    return asdict(report)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.push_to_hub", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="corpus folder (with index.json)")
    parser.add_argument("--repo-id", "--repo", dest="repo_id", required=True, help="dataset repo, e.g. USER/proactive-video")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--keep-stale", action="store_true",
                        help="keep data/ and figures/ files on the Hub that this build does not have")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default: huggingface_hub's, HF_ENDPOINT)")
    add_cli_flags(parser)
    args = parser.parse_args(argv)
    if not (Path(args.corpus) / "index.json").is_file():  # before Prefect's server starts
        raise UsageError(f"{args.corpus}: no index.json", "build the corpus first, e.g. make sample, or fix --corpus")
    try:
        # Not while a build writes the corpus; a release a killed build committed lands first.
        with corpus_lock(args.corpus):
            finish_release(args.corpus)
            start_tied_server()
            report = push_to_hub(corpus=args.corpus, repo_id=args.repo_id, private=not args.public,
                                 dry_run=args.dry_run, revision=args.revision, endpoint=args.endpoint,
                                 delete_stale=not args.keep_stale)
    except CorpusBusy as error:
        raise UsageError(str(error)) from None
    except HubPushError as error:  # the Hub's failure, not a usage mistake: exit 1, one line
        print(f"error: push-to-hub: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    verb = "would upload" if report["dry_run"] else "uploaded"
    print(f"{verb} {len(report['uploaded'])} files ({report['bytes']} bytes), "
          f"{len(report['skipped_same'])} already on the Hub")
    return 0


if __name__ == "__main__":
    sys.exit(main())
