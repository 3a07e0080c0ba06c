"""Tolerant reading of an LLM's JSON reply: servers without structured output wrap JSON in code
fences, prose, or stop mid-object; each of those gets a precise reason instead of a crash."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
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
        errs = "; ".join(f"{describe_location(e['loc'])}: {e['msg']}" for e in exc.errors()[:8])
        raise ValueError(f"does not match {schema_name}: {errs}") from None
    return model.model_dump(mode="json")


_LIST_NOUNS = {"questions": "question", "answers": "answer", "replies": "reply", "segment_ids": "cited id"}
_FIELD_WORDS = {"question": "question text", "answer": "answer text"}


def describe_location(path) -> str:
    """A place in a reply in words, as a person or a model reads it: `("questions", 0, "answers", 2,
    "segment_ids")` is "question 1, answer 3, segment_ids" (not `questions.0.answers.2...`)."""
    items, words = list(path), []
    i = 0
    while i < len(items):
        key = items[i]
        nxt = items[i + 1] if i + 1 < len(items) else None
        if key in _LIST_NOUNS and isinstance(nxt, int):
            words.append(f"{_LIST_NOUNS[key]} {nxt + 1}")
            i += 2
            continue
        words.append(f"item {key + 1}" if isinstance(key, int) else _FIELD_WORDS.get(key, str(key)))
        i += 1
    return ", ".join(words) or "the reply"


def _schema_message(error: jsonschema.ValidationError) -> str:
    value, bound = error.instance, error.validator_value
    if error.validator == "enum":
        return f"{value!r} is not one of the listed segment ids"
    if error.validator in ("maxLength", "minLength"):
        return f"{len(value)} characters; write {'at most' if error.validator == 'maxLength' else 'at least'} {bound}"
    if error.validator in ("maxItems", "minItems"):
        return f"{len(value)} items; give {'at most' if error.validator == 'maxItems' else 'at least'} {bound}"
    if error.validator == "anyOf":
        return "is neither a text within its length bound nor null"
    return error.message if len(error.message) <= 200 else error.message[:199] + "\u2026"


def schema_errors(data: Any, schema: dict[str, Any]) -> list[str]:
    """Where `data` breaks a request's JSON Schema, in words (see `describe_location`)."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{describe_location(e.absolute_path)}: {_schema_message(e)}" for e in errors]


def parse_reply(schema_name: str, text: str, response_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """`parse_output`, then the request's own schema (when it has one); ValueError says where."""
    data = parse_output(schema_name, text)
    if response_schema is not None:
        errors = schema_errors(data, response_schema)
        if errors:
            raise ValueError(f"does not match this request's {schema_name} schema: " + "; ".join(errors[:8]))
    return data
