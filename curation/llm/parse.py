"""Tolerant reading of an LLM's JSON reply: servers without structured output wrap JSON in code
fences, prose, or stop mid-object; each of those gets a precise reason instead of a crash."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from schemas.llm_output import LLM_OUTPUTS

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)


def extract_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's reply: the whole text, a fenced block, or the first balanced
    `{...}`. Raises ValueError saying why not (truncated, not an object, not JSON)."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the reply")
    block = _balanced_block(text, start)
    if block is None:
        raise ValueError("truncated JSON: the first '{' is never closed")
    try:
        obj = json.loads(block)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ValueError("the JSON is not an object")
    return obj


def _balanced_block(text: str, start: int) -> str | None:
    depth, in_str, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            escaped, in_str = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def parse_output(schema_name: str, text: str) -> dict[str, Any]:
    """Tolerantly parsed and validated against `LLM_OUTPUTS[schema_name]`; ValueError says why not."""
    obj = extract_json_object(text)
    try:
        model = LLM_OUTPUTS[schema_name].model_validate(obj)
    except RecursionError:
        raise ValueError(f"does not match {schema_name}: nested too deeply") from None
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:8])
        raise ValueError(f"does not match {schema_name}: {errs}") from None
    return model.model_dump(mode="json")
