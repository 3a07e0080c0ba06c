"""Serve `build-corpus` and `push-to-hub` as deployments for `prefect deployment run`.

    prefect server start                      # SQLite by default; PREFECT_SERVER_DATABASE_CONNECTION_URL for PostgreSQL
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve --name sample --config samples/sample.yaml
    prefect deployment run build-corpus/sample --param overrides='{"limit": 2}' --watch
"""

from __future__ import annotations

import flows.quiet  # noqa: F401  (must precede the Prefect import)

# isort: split

import argparse
from pathlib import Path

from prefect import serve

from flows.build_corpus import build_corpus
from flows.push_to_hub import push_to_hub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve")
    parser.add_argument("--name", default="sample", help="deployment name: build-corpus/<name>")
    parser.add_argument("--config", default="samples/sample.yaml",
                        help="default config for runs of this deployment (absolute path stored)")
    args = parser.parse_args(argv)
    config = str(Path(args.config).resolve())
    serve(
        build_corpus.to_deployment(name=args.name, parameters={"config": config}),
        push_to_hub.to_deployment(name=args.name),
    )


if __name__ == "__main__":
    main()
