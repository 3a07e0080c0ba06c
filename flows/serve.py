"""Serve `build-corpus` and `push-to-hub` as deployments for `prefect deployment run`.

Serving needs a Prefect server that other processes reach: without `PREFECT_API_URL` (environment
or profile) Prefect would start a temporary one inside this process, where no `prefect deployment
run` could find the deployments, so that is refused, as is a URL where no server answers. Stop it
with Ctrl-C (or SIGTERM) before stopping the server: it pauses its deployments on the way out. If
the server is gone by then, Ctrl-C says so and ends at once instead of retrying for a minute.

    prefect server start                      # SQLite by default; PREFECT_SERVER_DATABASE_CONNECTION_URL for PostgreSQL
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve --name sample --config samples/sample.yaml
    prefect deployment run build-corpus/sample --param overrides='{"limit": 2}' --watch
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line is checked before Prefect is imported (a second of CPU)
    from flows.arguments import exit_on_bad_usage

    exit_on_bad_usage("serve")

import flows.quiet  # noqa: F401  (must precede the Prefect import)

# isort: split

import os
import signal
import sys
from pathlib import Path

import httpx
from prefect import serve
from prefect.settings import get_current_settings

from flows.arguments import serve_args
from flows.build_corpus import build_corpus
from flows.push_to_hub import push_to_hub
from flows.quiet import quiet_prefect_handlers
from schemas.cli import UsageError, run_cli

START_HINT = "start one with `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api"


def _answers(api_url: str, timeout_s: float = 3.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def check_server() -> str:
    """The configured API URL, once a server answers there; a UsageError otherwise. Read through
    Prefect's settings (environment, profile, .env, pyproject), so after Prefect's import."""
    api_url = get_current_settings().api.url
    if not api_url:
        raise UsageError("flows.serve needs a Prefect server other processes can reach, and PREFECT_API_URL "
                         "is not set (a temporary server would live and die inside this process)", START_HINT)
    if not _answers(api_url):
        raise UsageError(f"no Prefect server answers at PREFECT_API_URL={api_url}", START_HINT)
    return api_url


def stop_on_interrupt(api_url: str) -> None:
    """Ctrl-C: Prefect's own shutdown (pausing the deployments) when the server still answers;
    one line and exit 130 when it does not (Prefect would retry for about a minute, then fail)."""
    def handle(signum, frame) -> None:
        if _answers(api_url, timeout_s=2.0):
            raise KeyboardInterrupt
        print(f"serve: stopped; the Prefect server at {api_url} no longer answers, so the deployments were "
              "not paused", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, handle)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = serve_args(argv)
    config = str(Path(args.config).resolve())
    api_url = check_server()
    quiet_prefect_handlers()
    stop_on_interrupt(api_url)
    try:
        serve(
            build_corpus.to_deployment(name=args.name, parameters={"config": config}),
            push_to_hub.to_deployment(name=args.name),
        )
    except KeyboardInterrupt:  # Ctrl-C is how serving ends; Prefect has paused the deployments
        print("serve: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
