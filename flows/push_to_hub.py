"""`push-to-hub`: upload a built corpus (shards, index, card, figures) to a Hub dataset repo.

`python -m flows.push_to_hub --corpus CORPUS --repo-id USER/NAME [--dry-run]`. The token comes
from the environment (HF_TOKEN) or a stored `hf auth login`, never from a flow parameter, so it
never lands in Prefect's database. Re-running after a failure uploads only what the Hub lacks.
"""

from __future__ import annotations  # noqa: I001  (flows.quiet must come first)

if __name__ == "__main__":  # the command line is checked before Prefect is imported (a second of CPU)
    from flows.arguments import exit_on_bad_usage

    exit_on_bad_usage("push_to_hub")

import flows.quiet  # noqa: F401  (must precede the Prefect import)

# isort: split

import contextlib
import sys
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
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
from flows.arguments import push_args
from flows.ephemeral import start_tied_server
from schemas.cli import output_console, run_cli

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
                   TimeRemainingColumn(), console=output_console(stderr=True), disable=disable)
    with bar:
        yield bar, bar.add_task("upload", total=total_bytes)


@flow(name="push-to-hub", log_prints=True)
def push_to_hub(corpus: str, repo_id: str, private: bool = True, dry_run: bool = False,
                revision: str = "main", endpoint: str | None = None, delete_stale: bool = True) -> Any:
    """Upload the corpus at `corpus` to the dataset repo `repo_id` (created private by default).
    Returns the report (a dict), or a Failed state whose message says why the Hub refused.
    Not while a build writes the corpus (a deployed run too, not only the command line); a release
    a killed build committed lands first."""
    with corpus_lock(corpus):
        finish_release(corpus)
        return _push(corpus, repo_id, private, dry_run, revision, endpoint, delete_stale)


def _push(corpus: str, repo_id: str, private: bool, dry_run: bool, revision: str, endpoint: str | None,
          delete_stale: bool) -> Any:
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

        try:
            report = push_corpus(corpus, repo_id, private=private, revision=revision, dry_run=dry_run,
                                 endpoint=endpoint, delete_stale=delete_stale, on_commit=on_commit)
        except HubPushError as error:
            # The Hub's failure, already one scrubbed sentence: the run ends Failed with it as the
            # message, without the traceback Prefect logs for an exception.
            return Failed(message=" ".join(str(error).split()))
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
    return run_cli(_main, argv, known=(CorpusBusy,))  # a build holds the corpus: its message is the line


def _main(argv: list[str]) -> int:
    args = push_args(argv)
    # The flow takes the corpus lock too; taken here first, a busy corpus costs no Prefect start.
    with corpus_lock(args.corpus):
        start_tied_server()
        state = push_to_hub(corpus=args.corpus, repo_id=args.repo_id, private=not args.public,
                            dry_run=args.dry_run, revision=args.revision, endpoint=args.endpoint,
                            delete_stale=not args.keep_stale, return_state=True)
    report = state.result(raise_on_failure=False)
    if isinstance(report, BaseException):  # a bug: its traceback is the report
        raise report
    if state.is_failed():  # the Hub's failure, not a usage mistake: exit 1, one line
        print(f"error: push-to-hub: {state.message}", file=sys.stderr)
        return 1
    verb = "would upload" if report["dry_run"] else "uploaded"
    print(f"{verb} {len(report['uploaded'])} files ({report['bytes']} bytes), "
          f"{len(report['skipped_same'])} already on the Hub")
    return 0


if __name__ == "__main__":
    sys.exit(main())
