"""Serve `build-corpus` and `push-to-hub` as deployments for `prefect deployment run`.

Stop it with Ctrl-C before stopping the server: it pauses its deployments on the way out, which
needs the server (stopped the other way round, it retries for a while before it exits).

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

import sys
from pathlib import Path

from prefect import serve

from flows.arguments import serve_args
from flows.build_corpus import build_corpus
from flows.push_to_hub import push_to_hub
from flows.quiet import quiet_prefect_handlers
from schemas.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = serve_args(argv)
    config = str(Path(args.config).resolve())
    quiet_prefect_handlers()
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
