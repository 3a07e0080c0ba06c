"""The flows' command lines, parsed and checked before Prefect is imported.

Importing Prefect costs over a second of CPU (and starting its temporary server many more), so a
usage mistake (an unknown option, a config key that does not exist, a manifest or corpus that is
not there or not usable) must be answered first: each flow module runs `exit_on_bad_usage` as the
first thing it does when it is the program (`python -m flows.build_corpus ...`), and its `main`
parses with the same parser. One style for every command of the project: inputs as `--corpus`,
`--config` flags, dotted `key=value` config overrides as plain arguments (`--set key=value` is
the same thing, kept).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from schemas.cli import ArgumentParser, UsageError, add_cli_flags, run_cli

DEFAULT_CONFIG = "samples/sample.yaml"


def build_corpus_parser() -> ArgumentParser:
    from curation.config import CorpusConfig

    parser = ArgumentParser(prog="python -m flows.build_corpus", config_model=CorpusConfig,
                            description="Build (or resume) a corpus: manifest -> per-video stages -> "
                                        "Parquet shards, card, figures.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set limit=10 (same as a plain limit=10)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted config overrides, e.g. limit=10 llm.model=Qwen/Qwen2.5-72B-Instruct")
    add_cli_flags(parser)
    return parser


def parse_overrides(items: list[str]) -> dict[str, str]:
    bad = [item for item in items if "=" not in item]
    if bad:
        raise UsageError(f"override {bad[0]} is not KEY=VALUE", "e.g. limit=10 or --set limit=10")
    return dict(item.split("=", 1) for item in items)


def check_config(config: str, overrides: dict[str, Any] | None):
    """The config and its manifest (`curation.manifest.require_usable`), checked before Prefect's
    server starts: a typo, a misnamed column or a broken file costs no wait."""
    from curation.config import load_config
    from curation.manifest import require_usable

    cfg = load_config(config, overrides)
    manifest = Path(cfg.manifest)
    if not manifest.is_file():
        raise UsageError(f"manifest {manifest} not found",
                         "point `manifest:` in the config, or manifest=PATH, at a .jsonl, .csv or .parquet file")
    require_usable(manifest)
    if cfg.asr.model is not None and cfg.asr.enabled and importlib.util.find_spec("faster_whisper") is None:
        raise UsageError(f"asr.model is {cfg.asr.model!r} but faster-whisper is not installed",
                         "pip install '.[asr]', or set asr.enabled=false to caption videos without text")
    return cfg


def build_corpus_args(argv: list[str]) -> tuple[Any, dict[str, str], Any]:
    """(parsed arguments, overrides, the config they give), the config and manifest checked."""
    args = build_corpus_parser().parse_args(argv)
    overrides = parse_overrides([*args.set, *args.overrides])
    return args, overrides, check_config(args.config, overrides or None)


def push_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m flows.push_to_hub",
                            description="Upload a built corpus (shards, index, card, figures) to a Hub dataset repo.")
    parser.add_argument("--corpus", required=True, help="corpus folder (with index.json)")
    parser.add_argument("--repo-id", "--repo", dest="repo_id", required=True,
                        help="dataset repo, e.g. USER/proactive-video")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--keep-stale", action="store_true",
                        help="keep data/ and figures/ files on the Hub that this build does not have")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default: huggingface_hub's, HF_ENDPOINT)")
    add_cli_flags(parser)
    return parser


def push_args(argv: list[str]):
    args = push_parser().parse_args(argv)
    if not (Path(args.corpus) / "index.json").is_file():
        raise UsageError(f"{args.corpus}: no index.json", "build the corpus first, e.g. make sample, or fix --corpus")
    return args


def serve_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m flows.serve",
                            description="Serve build-corpus and push-to-hub as deployments.")
    parser.add_argument("--name", default="sample", help="deployment name: build-corpus/<name>")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="default config for runs of this deployment (absolute path stored)")
    add_cli_flags(parser)
    return parser


def serve_args(argv: list[str]):
    args = serve_parser().parse_args(argv)
    check_config(args.config, None)  # a deployment with a broken default config would fail every run
    return args


CHECKS = {"build_corpus": build_corpus_args, "push_to_hub": push_args, "serve": serve_args}


def exit_on_bad_usage(command: str) -> None:
    """Parse and check `sys.argv` for a flow's command; a mistake exits here with its one line
    (exit code 2), `--help` with the help, before the caller goes on to import Prefect."""
    def check(argv: list[str]) -> int:
        CHECKS[command](argv)
        return 0

    code = run_cli(check)
    if code:
        sys.exit(code)
