"""`python -m training.run {sft,...} ...`: one entry point, one module per subcommand.

A subcommand is a module with `add_arguments(parser)` and `main(args) -> int`; it is imported
only when chosen (so one command's heavy or optional dependencies never slow or break another).
Adding one is one line in `COMMANDS`, e.g. `"grpo": ("training.rl.grpo", "GRPO with the PAUC reward")`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from schemas.cli import add_cli_flags, run_cli

COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("training.sft", "supervised fine-tuning on streaming episodes"),
    "prepare": ("training.prepare", "decode every episode's frames once into the corpus's frame cache"),
    "grpo": ("training.rl.grpo", "multi-turn GRPO with the PAUC reward"),
    "eval": ("training.eval.evaluate", "stream a ProactiveVideoQA-format set through a model, write predictions"),
    "score": ("training.eval.score", "score a prediction file: PAUC at omega and duplicate rate, per category"),
    "ablate": ("training.ablate", "one GRPO run per variant (reward terms, NO REPLY weight), each evaluated and scored; one table"),
}


def main(argv: list[str] | None = None) -> int:
    """The error boundary around every subcommand: a usage mistake is one `error:` line, exit 2."""
    from curation.corpus.shards import CorpusError

    return run_cli(_main, argv, known=(CorpusError,))


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_cli_flags(command)
        if name == chosen:  # only the chosen command's module is imported
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(handler=module.main)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
