"""The end-of-run summary: counts per stage, skip reasons, durations and LLM tokens.

Computed from the results catalogue (what the result files on disk hold), shown on the terminal and
published as Prefect table and markdown artifacts (keys: lowercase letters, digits, dashes).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from curation.corpus.catalogue import CatalogueEntry
from curation.corpus.dialogue_yield import yield_line, yield_rows
from curation.speech.route import route_rows

# Dialogue-stage quarantine reasons that stand for a video, not for one dialogue request.
VIDEO_LEVEL_DIALOGUE_REASONS = frozenset({"no_segments", "no_valid_dialogue", "too_many_segments"})
STAGES = ("manifest", "acquire", "probe", "admit", "asr", "scenes", "frames", "source_text", "descriptions",
          "dialogues", "results")


@dataclass
class RunSummary:
    videos: int = 0
    with_dialogues: int = 0
    dialogues: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)  # (stage, reason, kind) -> count
    durations_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wait_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # part of durations_s
    cpu_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # the cost, apart from queueing
    llm_usage: Counter = field(default_factory=Counter)
    # Per-video counters summed: what the text filter caught (`text_filter_flagged`, `_repaired`,
    # `_quarantined` for dialogues; `captions_forbidden_text` for captions), caption failures.
    counts: Counter = field(default_factory=Counter)
    new_this_run: int = 0
    reused: int = 0

    def add(self, entry: CatalogueEntry) -> None:
        self.videos += 1
        self.with_dialogues += entry.with_dialogues
        self.dialogues.update(entry.dialogue_kinds)
        self.quarantined.update(entry.quarantine)
        stats = entry.stage_stats
        for name, into in (("durations_s", self.durations_s), ("wait_s", self.wait_s), ("cpu_s", self.cpu_s)):
            for stage, seconds in stats[name].items():
                into[stage] += seconds
        self.counts.update(stats["counts"])

    def stage_rows(self) -> list[dict[str, Any]]:
        stopped = Counter()
        for (stage, _, _), n in self.quarantined.items():
            stopped[stage] += n
        return [{"stage": s, "quarantined": stopped.get(s, 0),
                 "seconds": round(self.durations_s.get(s, 0.0), 2), "wait_s": round(self.wait_s.get(s, 0.0), 2),
                 "cpu_s": round(self.cpu_s.get(s, 0.0), 2)} for s in STAGES
                if s in stopped or s in self.durations_s]

    def reason_rows(self) -> list[dict[str, Any]]:
        return [{"stage": s, "reason": r, "kind": k, "count": n}
                for (s, r, k), n in sorted(self.quarantined.items())]

    def dialogue_yield(self) -> dict[str, Any]:
        """What the dialogue requests gave: valid at the first try, valid after the one repair,
        quarantined (by reason), and tokens and seconds per attempted dialogue. Seconds are the
        dialogue stage's wall time over the videos' results (waits for an LLM slot included)."""
        c = self.counts
        attempted = c.get("dialogues_attempted", 0)
        reasons = Counter()
        for (stage, reason, _), n in self.quarantined.items():
            if stage == "dialogues" and reason not in VIDEO_LEVEL_DIALOGUE_REASONS:
                reasons[reason] += n

        def per(value: float) -> float:  # two decimals, or two digits of a smaller value (replay: ms, not 0.0 s)
            return (round(value / attempted, 2) or float(f"{value / attempted:.2g}")) if attempted else 0.0

        return {"attempted": attempted, "valid_first_try": c.get("dialogues_valid_first_try", 0),
                "valid_after_repair": c.get("dialogues_valid_after_repair", 0),
                "quarantined": c.get("dialogues_quarantined", 0),
                "quarantined_by_reason": dict(sorted(reasons.items())),
                "repairs_repeating_the_first_reply": c.get("dialogues_repair_repeated", 0),
                "prompt_tokens_per_dialogue": per(c.get("dialogues_prompt_tokens", 0)),
                "completion_tokens_per_dialogue": per(c.get("dialogues_completion_tokens", 0)),
                "seconds_per_dialogue": per(self.durations_s.get("dialogues", 0.0))}

    def yield_rows(self) -> list[dict[str, Any]]:
        """The yield as (outcome, dialogues, share) rows: the summary's and the card's table."""
        return yield_rows(self.dialogue_yield())

    def as_dict(self) -> dict[str, Any]:
        data = {"videos": self.videos, "with_dialogues": self.with_dialogues,
                "new_this_run": self.new_this_run, "reused": self.reused}
        data["dialogues"] = dict(self.dialogues)
        data["quarantined"] = self.reason_rows()
        data["durations_s"] = {k: round(v, 3) for k, v in self.durations_s.items()}
        data["wait_s"] = {k: round(v, 3) for k, v in self.wait_s.items()}
        data["cpu_s"] = {k: round(v, 3) for k, v in self.cpu_s.items()}
        data["llm_usage"] = dict(self.llm_usage)
        data["counts"] = dict(sorted(self.counts.items()))
        data["dialogue_yield"] = self.dialogue_yield()
        data["text_routes"] = route_rows(self.counts)
        return data

    def markdown(self) -> str:
        lines = [
            "# build-corpus summary", "",
            f"- manifest items: {self.videos} ({self.new_this_run} processed this run, {self.reused} reused)",
            f"- videos with at least one dialogue: {self.with_dialogues}",
            f"- dialogues: {dict(self.dialogues) or 0}",
            f"- LLM usage: {dict(self.llm_usage) or 'none'}",
            f"- counts: {dict(sorted(self.counts.items())) or 'none'}", "",
            "| stage | reason | kind | count |", "|---|---|---|---|",
        ]
        lines += [f"| {r['stage']} | {r['reason']} | {r['kind']} | {r['count']} |" for r in self.reason_rows()]
        lines += ["", "## text routes", "", "| route | reason | videos |", "|---|---|---|"]
        lines += [f"| {r['route']} | {r['reason']} | {r['videos']} |" for r in route_rows(self.counts)]
        lines += ["", "## dialogue yield", "", yield_line(self.dialogue_yield()), "",
                  "| outcome | dialogues | share |", "|---|---|---|"]
        lines += [f"| {r['outcome']} | {r['dialogues']} | {r['share']} |" for r in self.yield_rows()]
        return "\n".join(lines) + "\n"

    def print(self, console: Console) -> None:
        console.print(f"[bold]items[/] {self.videos} ({self.new_this_run} new, {self.reused} reused)  "
                      f"[bold]with dialogues[/] {self.with_dialogues}  "
                      f"[bold]dialogues[/] {dict(self.dialogues)}  [bold]LLM[/] {dict(self.llm_usage)}")
        stages = Table(title="stages")
        for col in ("stage", "quarantined", "seconds", "wait_s", "cpu_s"):
            stages.add_column(col)
        for row in self.stage_rows():
            stages.add_row(*(str(v) for v in row.values()))
        reasons = Table(title="quarantine reasons")
        for col in ("stage", "reason", "kind", "count"):
            reasons.add_column(col)
        for row in self.reason_rows():
            reasons.add_row(*(str(v) for v in row.values()))
        console.print(stages)
        console.print(reasons)
        if self.counts.get("dialogues_attempted"):
            table = Table(title="dialogue yield")
            for col in ("outcome", "dialogues", "share"):
                table.add_column(col)
            for row in self.yield_rows():
                table.add_row(*(str(v) for v in row.values()))
            console.print(table)
            console.print(yield_line(self.dialogue_yield()))

