"""The dialogue yield report as rows and a line: shared by the run summary (flows) and the card.

The report itself (`flows.summary.RunSummary.dialogue_yield`, stored as `dialogue_yield` in
summary.json) counts dialogue requests: valid at the first try, valid after the one repair,
quarantined by reason, and tokens and seconds per request.
"""

from __future__ import annotations

from typing import Any


def yield_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """`RunSummary.dialogue_yield()` (or a summary.json's `dialogue_yield`) as table rows."""
    attempted = report.get("attempted", 0)
    rows = [("valid at the first try", report.get("valid_first_try", 0)),
            ("valid after one repair", report.get("valid_after_repair", 0))]
    rows += [(f"quarantined: {reason}", n) for reason, n in (report.get("quarantined_by_reason") or {}).items()]
    return [{"outcome": name, "dialogues": n, "share": f"{n / attempted:.0%}" if attempted else "-"}
            for name, n in rows]


def yield_line(report: dict[str, Any]) -> str:
    prompt, completion = report.get("prompt_tokens_per_dialogue", 0), report.get("completion_tokens_per_dialogue", 0)
    tokens = (f"{prompt} prompt tokens, {completion} completion tokens" if prompt or completion
              else "no tokens reported (replayed or cached answers)")
    return (f"{report.get('attempted', 0)} dialogue requests; per dialogue: {tokens}, "
            f"{report.get('seconds_per_dialogue', 0)} s; "
            f"{report.get('repairs_repeating_the_first_reply', 0)} repair replies repeated the first")
