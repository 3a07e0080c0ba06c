"""`python -m training.run {sft,...} ...`: one entry point, one module per subcommand.

A subcommand is a module with `main(args) -> int`, imported only when chosen (so one command's
heavy or optional dependencies never slow or break another), and a module with
`add_arguments(parser)` and, optionally, `check(args)`: the same module for light commands, a
torch-free one for those that train or run a model (`training.sft_config` holds SFTConfig and the
checks of `training.sft`). `check` runs before the command's module is imported, so a usage mistake
is answered in well under a second, and only once: its result is `main`'s second argument
(`main(args, checked)`). Adding one is one line in `COMMANDS`, e.g.
`"grpo": ("training.rl.grpo", "training.rl.grpo_config", "GRPO with the PAUC reward")`.
"""

from __future__ import annotations

import importlib
import sys

from schemas.cli import ArgumentParser, add_cli_flags, run_cli

# name -> (module with main, module with add_arguments [and check], help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sft": ("training.sft", "training.sft_config", "supervised fine-tuning on streaming episodes"),
    "prepare": ("training.prepare", "training.prepare", "decode every episode's frames once into the corpus's frame cache"),
    "grpo": ("training.rl.grpo", "training.rl.grpo_config", "multi-turn GRPO with the PAUC reward"),
    "eval": ("training.eval.evaluate", "training.eval.eval_config",
             "stream a ProactiveVideoQA-format set through a model, write predictions"),
    "score": ("training.eval.score", "training.eval.score",
              "score a prediction file: PAUC at omega and duplicate rate, per category"),
    "ablate": ("training.ablate", "training.ablate",
               "one GRPO run per variant (reward terms, NO REPLY weight), each evaluated and scored; one table"),
}


def main(argv: list[str] | None = None) -> int:
    """The error boundary around every subcommand: a usage mistake is one `error:` line, exit 2."""
    from curation.corpus.shards import CorpusError

    return run_cli(_main, argv, known=(CorpusError,))


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m training.run")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, arguments_module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_cli_flags(command)
        if name == chosen:  # only the chosen command's modules are imported
            importlib.import_module(arguments_module).add_arguments(command)
            parser.hints_from = command
    args = parser.parse_args(argv)
    main_module, arguments_module, _ = COMMANDS[args.command]
    check = getattr(importlib.import_module(arguments_module), "check", None)
    checked = () if check is None else (check(args),)  # before the command's own (heavy) imports
    code = importlib.import_module(main_module).main(args, *checked)
    from training.distributed import exit_if_in_group

    exit_if_in_group(code)  # a launched process ends here: see its docstring
    return code

if __name__ == "__main__":
    sys.exit(main())
