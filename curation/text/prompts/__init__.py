"""Versioned prompt templates, one file per prompt: `<name>.v<N>.md` in this folder.

A file holds a `## system` and a `## user` section; the user section is a `string.Template`
(`$name` placeholders, so JSON braces in the text need no escaping). The version comes from the
file name and goes into every request (`LLMRequest.prompt_version`) and into each record's
provenance, so changing a prompt means adding a new file, never editing an old one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template

PROMPTS_DIR = Path(__file__).parent
_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.md$")
_SECTION = re.compile(r"^## (system|user)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str  # "v1"
    system: str
    user_template: str

    @property
    def prompt_version(self) -> str:
        """What requests and provenance record, e.g. `single_question.v1`."""
        return f"{self.name}.{self.version}"

    def render_system(self, **values: object) -> str:
        return Template(self.system).substitute({k: str(v) for k, v in values.items()})

    def render_user(self, **values: object) -> str:
        return Template(self.user_template).substitute({k: str(v) for k, v in values.items()})


def prompt_versions(name: str) -> list[int]:
    return sorted(int(m["version"]) for p in PROMPTS_DIR.glob(f"{name}.v*.md")
                  if (m := _FILE.match(p.name)) and m["name"] == name)


def parse_prompt(name: str, version: str, text: str) -> Prompt:
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    parts = _SECTION.split(text)
    # parts: [preamble, "system", body, "user", body]
    sections = dict(zip(parts[1::2], (body.strip() for body in parts[2::2]), strict=True))
    if set(sections) != {"system", "user"}:
        raise ValueError(f"prompt {name}.{version} needs exactly a '## system' and a '## user' section")
    return Prompt(name, version, sections["system"], sections["user"])


@cache
def load_prompt(name: str, version: int | None = None) -> Prompt:
    """The prompt `name` at `version` (default: the newest file)."""
    versions = prompt_versions(name)
    if not versions:
        raise FileNotFoundError(f"no prompt file {name}.v<N>.md in {PROMPTS_DIR}")
    number = versions[-1] if version is None else version
    path = PROMPTS_DIR / f"{name}.v{number}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file {path.name} (have {versions})")
    return parse_prompt(name, f"v{number}", path.read_text(encoding="utf-8"))
