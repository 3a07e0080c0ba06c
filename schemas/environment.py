"""Refuse, in one line, to run under a Python that lacks the project's dependencies.

`schemas` is imported first by every package, and this module first by `schemas`, so a command run
with the system's `python3` instead of the virtualenv's (`python3 -m training.run sft --help` from
the repository root) says what to do instead of ending in a missing-module traceback.
"""

import importlib.util
import sys

REQUIRED = ("pyarrow", "pydantic", "yaml")

_missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
if _missing:
    print(f"error: {sys.executable} lacks the project's dependencies ({', '.join(_missing)}) (run the command "
          "with .venv/bin/python, or activate the virtualenv first: source .venv/bin/activate; `make install` "
          "creates it)", file=sys.stderr)
    raise SystemExit(2)
