"""What every command line of the project shares: one error boundary, one argument parser
(`ArgumentParser`: one `error:` line per mistake, config keys under `--help`) and a quiet terminal.

A mistake the user can fix (a config key that does not exist, an override that is not
`key=value`, a file or corpus that is not there, a value out of range) ends the command with one
line on stderr, `error: <what> (<what to do>)`, and exit code 2, before anything slow starts.
`--debug` (or `PROACTIVE_VIDEO_DEBUG=1`) prints the traceback as well. Anything else is a bug and
keeps its traceback (exit 1).

Third-party progress bars and chatter (Hugging Face downloads, transformers' weight loading and
saving) are off unless `--verbose`; the project's own progress bars are not affected.

It lives in `schemas`, the package every other one may import, so `curation`, `flows` and
`training` share one boundary without importing each other.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

EXIT_USAGE = 2
DEBUG_ENV = "PROACTIVE_VIDEO_DEBUG"
DEBUG_FLAG, VERBOSE_FLAG = "--debug", "--verbose"
NON_TTY_WIDTH = 160  # columns for tables written to a file or pipe (rich would use 80)

# Defaults only: a user's own environment wins. Read by huggingface_hub and transformers when they
# are imported, which every command does after the boundary is set up.
QUIET_THIRD_PARTY = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # also transformers' "Loading weights" / "Writing model shards"
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",  # its fork warning after a tokenizer was used
}


class UsageError(ValueError):
    """A mistake the user can fix; printed as one line, exit code 2 (a ValueError: a bad value)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(f"{message} ({hint})" if hint else message)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the boundary's manners: a usage mistake is one `error:` line naming the fix and
    exit code 2 (argparse's own exit), never argparse's usage block. Every command line uses it.

    `config_model`: the command's config (a pydantic model set by `key=value`); its keys are listed
    under `--help`, and an unknown `--some-key` that names one is answered `did you mean some_key=...`.
    Subparsers are of this class too (argparse's default), with their own `config_model`."""

    def __init__(self, *args: Any, config_model: type[BaseModel] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config_model = None
        self.hints_from: ArgumentParser | None = None  # the chosen subcommand's parser (it knows its keys)
        if config_model is not None:
            self.set_config_model(config_model)

    def set_config_model(self, model: type[BaseModel]) -> None:
        """The command's config: its keys go under --help and into the hints for unknown flags."""
        self.config_model = model
        self.formatter_class = argparse.RawDescriptionHelpFormatter
        self.epilog = "\n\n".join(x for x in (self.epilog, config_keys_help(model)) if x)

    def error(self, message: str):  # argparse's hook: it must not return
        print(f"error: {self.prog}: {' '.join(message.split())} ({self._hint(message)})", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    def _hint(self, message: str) -> str:
        if self.hints_from is not None:  # argparse reports a subcommand's unknown arguments at the top
            return self.hints_from._hint(message)
        if message.startswith("unrecognized arguments:") and self.config_model is not None:
            keys = dict(config_keys(self.config_model))
            for word in message.split(":", 1)[1].split():
                name = word.lstrip("-").split("=", 1)[0].replace("-", "_")
                if word.startswith("--") and name in keys:
                    return f"did you mean {name}=VALUE? config keys are set as key=value; {self.prog} --help lists them"
        return f"{self.prog} --help lists the options"


def add_corpus_argument(parser: argparse.ArgumentParser) -> None:
    """`--corpus DIR`, the one style for a command's corpus; a bare `DIR` is still taken."""
    parser.add_argument("corpus", nargs="?", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", dest="corpus_flag", type=Path, metavar="DIR",
                        help="corpus folder (the one holding index.json)")


def corpus_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    if args.corpus_flag is not None and args.corpus is not None and args.corpus_flag != args.corpus:
        parser.error(f"two corpora given: {args.corpus} and --corpus {args.corpus_flag}")
    corpus = args.corpus_flag or args.corpus
    if corpus is None:
        parser.error("the following arguments are required: --corpus")
    return corpus


def output_console(stderr: bool = False):
    """A rich console for the project's tables: the terminal's width on a terminal, and wide enough
    that a table is not wrapped into unreadable columns when output goes to a file or a pipe
    (rich assumes 80 columns there); `COLUMNS` still wins."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    chosen = stream.isatty() or os.environ.get("COLUMNS")  # a terminal, or a width the user set
    return Console(stderr=stderr, width=None if chosen else NON_TTY_WIDTH)


def config_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, `type = default  description`) for every settable key of a config, nested ones
    dotted (`episodes.seconds_per_frame`)."""
    keys = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys += config_keys(kind, f"{prefix}{name}.")
            continue
        default = repr(field.get_default(call_default_factory=True))
        default = default if len(default) <= 40 else default[:37] + "..."
        shown = kind.__name__ if isinstance(kind, type) else re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(kind))
        text = f"{shown} = {default}" + (f"  {field.description}" if field.description else "")
        keys.append((f"{prefix}{name}", text))
    return keys


def config_keys_help(model: type[BaseModel]) -> str:
    """The `--help` section listing a config's keys (set with `key=value` or in `--config FILE`)."""
    rows = config_keys(model)
    width = max((len(k) for k, _ in rows), default=0)
    lines = [f"  {key:<{width}}  {text}" for key, text in rows]
    return "config keys (key=value on the command line, or in the --config YAML file):\n" + "\n".join(lines)


def add_cli_flags(parser: argparse.ArgumentParser) -> None:
    """`--debug` and `--verbose` on a parser; `run_cli` reads them from argv before parsing."""
    parser.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS,
                        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    parser.add_argument(VERBOSE_FLAG, action="store_true", default=argparse.SUPPRESS,
                        help="let third-party libraries print their own progress bars and warnings")


def quiet_third_party(verbose: bool = False) -> None:
    if verbose:
        return
    for key, value in QUIET_THIRD_PARTY.items():
        os.environ.setdefault(key, value)
    if "huggingface_hub" in sys.modules:  # imported before us: the variable was read already
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _suggest(name: str, model: type[BaseModel] | None, loc: Sequence[Any]) -> str:
    """' (did you mean X?)' for an unknown key, from the fields of the model it was given to."""
    for part in loc[:-1]:  # walk down to the nested model that got the key
        field = model.model_fields.get(str(part)) if model else None
        model = field.annotation if field and isinstance(field.annotation, type) and issubclass(
            field.annotation, BaseModel) else None
    if model is None:
        return ""
    close = difflib.get_close_matches(name, list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def describe_validation_error(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """All of pydantic's complaints on one line: `a.b: unknown key (did you mean c?); x: ...`."""
    parts = []
    for err in error.errors():
        loc = [p for p in err["loc"] if not isinstance(p, int)] or ["<config>"]
        where = ".".join(str(p) for p in err["loc"]) or "<config>"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key{_suggest(str(loc[-1]), model, loc)}")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def config_error(error: ValidationError, model: type[BaseModel], source: str) -> UsageError:
    """A config that does not validate, as the one line the boundary prints."""
    return UsageError(f"{source}: {describe_validation_error(error, model)}",
                      "fix the key or value in the file or the override; --help lists the options")


def message_of(error: BaseException) -> str:
    """The one line for a known error, or "" when the error is not one the user can fix."""
    if isinstance(error, UsageError):
        return str(error)
    if isinstance(error, ValidationError):
        return describe_validation_error(error)
    if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        if error.filename:
            return f"{error.filename}: {error.strerror or error} (check the path)"
        return f"{error} (check the path)"
    return ""


def run_cli(main: Callable[[list[str]], int], argv: Sequence[str] | None = None,
            known: tuple[type[BaseException], ...] = ()) -> int:
    """Run `main(argv)` inside the error boundary; its return value is the exit code.

    `known`: further exception types whose message is already the line a user needs (for example
    a corpus reader's "no corpus index (build the corpus first)")."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    quiet_third_party(verbose=VERBOSE_FLAG in argv)
    try:
        return main([a for a in argv if a not in (DEBUG_FLAG, VERBOSE_FLAG)])
    except Exception as error:
        line = message_of(error) or (str(error) if isinstance(error, known) else "")
        if not line:
            raise  # a bug: its traceback is the report
        if debug:
            traceback.print_exc()
        print(f"error: {' '.join(line.split())}", file=sys.stderr)
        return EXIT_USAGE
