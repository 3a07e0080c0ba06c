"""`python -m training.run score`: the ProactiveVideoQA benchmark's PAUC and duplicate rate.

This is the benchmark variant, not the RL reward (FACTS.md): per gold answer, the model replies
whose time lies in its `reply_timespan`; for each new distinct reply the judge sees the
concatenation of all distinct in-span replies so far, on the 3-level rubric mapped to 0..2;
judgements after the answer's `related_timespan` ends that are lower than the last score inside
it are dropped; then the shared step area (training.rl.pauc) with max_y = 2 and start score 0.5 (no
judged reply scores 0.25). Reported at omega 0, 0.5 and 1; a row is the mean over its gold answers, so a
question with no prediction line counts, at 0.25 per answer.

The table is the paper's: one row per category (WEB, EGO, TV, VAD for the benchmark's
`<TASK>/anno.json` files), PAUC at omega 0 / 0.5 / 1 and the duplicate rate, then `mean`, the
unweighted mean of the category rows (the paper's average), and `overall`, pooled over every
gold answer.

Duplicate rate (our definition; FACTS.md only says it is LLM-judged): the share of a question's
replies whose information is all in its earlier replies, an exact duplicate counted without a
judge call. Failed judge calls are dropped from both metrics and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.cli import ArgumentParser, UsageError, output_console, run_cli
from training.eval.proactive_format import (
    GoldRecord,
    Predictions,
    gold_files,
    read_gold,
    read_predictions,
)
from training.rl.judge import Judge, JudgeConfig, RepetitionItem, ScoreItem, make_judge
from training.rl.pauc import window_pauc

REPORTED_OMEGAS = (0.0, 0.5, 1.0)  # ProactiveVideoQA reports PAUC at these omegas
BENCH_SCALE = 3  # ProactiveVideoQA rubric: 3 mostly covered, 2 partially, 1 incorrect -> 0..2
BENCH_START_SCORE = 0.5  # ProactiveVideoQA: step curve starts at 0.5


@dataclass
class AnswerScore:
    question_id: str
    category: str
    judged: list[tuple[float, int]]  # (reply time, 0..2) after the related-span drop rule
    reply_span_s: tuple[float, float]

    def pauc(self, omega: float) -> float:
        return window_pauc(self.judged, self.reply_span_s, BENCH_SCALE - 1, BENCH_START_SCORE, omega)


def drop_late_regressions(judged: Sequence[tuple[float, int]], related_end_s: float) -> list[tuple[float, int]]:
    """Drop judgements after the related span that score below the last one inside it."""
    if len(judged) <= 1:
        return list(judged)
    kept, last_inside = [], 0
    for time_s, score in sorted(judged, key=lambda j: j[0]):
        if time_s <= related_end_s:
            last_inside = score
        elif score < last_inside:
            continue
        kept.append((time_s, score))
    return kept


def plan_answer_items(record: GoldRecord, replies: Sequence[tuple[float, str]]):
    """Per answer: the (time, ScoreItem) list the judge must see, one per new distinct in-span reply."""
    for answer in record.answers:
        start_s, end_s = answer.reply_span_s
        seen: list[str] = []
        items = []
        for time_s, text in replies:
            if start_s <= time_s <= end_s and text not in seen:
                seen.append(text)
                items.append((time_s, ScoreItem(record.question, answer.content, " ".join(seen), BENCH_SCALE)))
        yield answer, items


def plan_repetition_items(replies: Sequence[tuple[float, str]]):
    """(fixed verdict or None, RepetitionItem or None) per reply, in time order."""
    for i, (_, text) in enumerate(replies):
        earlier = tuple(dict.fromkeys(t for _, t in replies[:i]))
        if text in earlier:
            yield True, None
        elif not earlier:
            yield False, None
        else:
            yield None, RepetitionItem(earlier, text)


def score_predictions(
    gold: Sequence[GoldRecord], predictions: Predictions, judge: Judge,
    omegas: Sequence[float] = REPORTED_OMEGAS,
) -> dict[str, Any]:
    """Every metric as plain data, PAUC in percent at each omega: per category and overall."""
    score_items, rep_items, answer_plans, rep_plans = [], [], [], []
    for record in gold:
        replies = predictions.replies.get(record.question_id, [])
        for answer, items in plan_answer_items(record, replies):
            answer_plans.append((record, answer, [t for t, _ in items]))
            score_items.extend(item for _, item in items)
        for fixed, item in plan_repetition_items(replies):
            rep_plans.append((record.category, fixed))
            if item is not None:
                rep_items.append(item)
    scores, verdicts = judge.judge_batch(score_items, rep_items)

    answers: list[AnswerScore] = []
    at = 0
    for record, answer, times in answer_plans:
        got = scores[at:at + len(times)]
        at += len(times)
        judged = [(t, s - 1) for t, s in zip(times, got, strict=True) if s is not None]
        answers.append(AnswerScore(record.question_id, record.category,
                                   drop_late_regressions(judged, answer.related_span_s[1]), answer.reply_span_s))
    duplicates: list[tuple[str, bool]] = []
    asked = iter(verdicts)
    for category, fixed in rep_plans:
        verdict = fixed if fixed is not None else next(asked)
        if verdict is not None:
            duplicates.append((category, verdict))

    known = set(predictions.replies)
    categories = sorted({r.category for r in gold})
    table = {c: _metrics([a for a in answers if a.category == c], [d for k, d in duplicates if k == c],
                         [r for r in gold if r.category == c], known, omegas) for c in categories}
    return {
        "categories": table,
        "mean": category_mean(table),
        "overall": _metrics(answers, [d for _, d in duplicates], list(gold), known, omegas),
        "judge_failures": sum(s is None for s in scores) + sum(v is None for v in verdicts),
        "judge_calls": len(score_items) + len(rep_items),
        "bad_prediction_lines": predictions.bad_lines,
        "duplicate_prediction_ids": predictions.duplicate_ids,
        "predictions_without_gold": sorted(known - {r.question_id for r in gold}),
    }


def _metrics(answers: list[AnswerScore], dups: list[bool], gold: list[GoldRecord], known: set[str],
             omegas: Sequence[float]) -> dict[str, Any]:
    paucs = {pauc_key(w): (100 * sum(a.pauc(w) for a in answers) / len(answers) if answers else 0.0)
             for w in omegas}
    return {
        **paucs,
        "duplicate_rate": 100 * sum(dups) / len(dups) if dups else 0.0,
        "questions": len(gold),
        "questions_without_prediction": sum(r.question_id not in known for r in gold),
        "answers": len(answers),
        "replies_judged_for_duplicates": len(dups),
    }


def category_mean(table: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The unweighted mean of the category rows' PAUCs and duplicate rates (the paper's average)."""
    if not table:
        return {}
    keys = [k for k in next(iter(table.values())) if k.startswith("pauc_omega_") or k == "duplicate_rate"]
    return {k: sum(row[k] for row in table.values()) / len(table) for k in keys}


def pauc_key(omega: float) -> str:
    return f"pauc_omega_{omega:g}"


def render_table(result: dict[str, Any], omega: float) -> None:
    from rich.table import Table

    omegas = sorted(float(k.removeprefix("pauc_omega_")) for k in result["overall"] if k.startswith("pauc_omega_"))
    table = Table(title=f"ProactiveVideoQA: PAUC x100 at omega (* = {omega:g}) and reply duplicate rate")
    table.add_column("category")
    for name in ("questions", "answers", *(f"PAUC w={w:g}{'*' if w == omega else ''}" for w in omegas), "dup %"):
        table.add_column(name, justify="right")

    def cells(m: dict[str, Any]) -> list[str]:
        return [*(f"{m[pauc_key(w)]:.1f}" for w in omegas), f"{m['duplicate_rate']:.1f}"]

    for name, m in result["categories"].items():
        table.add_row(name or "-", str(m["questions"]), str(m["answers"]), *cells(m))
    if len(result["categories"]) > 1:
        table.add_section()
        table.add_row("mean", "", "", *cells(result["mean"]))
    overall = result["overall"]
    table.add_row("overall (pooled)", str(overall["questions"]), str(overall["answers"]), *cells(overall))
    console = output_console()
    console.print(table)
    console.print(f"{len(result['bad_prediction_lines'])} malformed prediction line(s); "
                  f"{result['judge_failures']} of {result['judge_calls']} judge call(s) failed (dropped); "
                  f"{result['overall']['questions_without_prediction']} question(s) without a prediction")


def check_coverage(gold: list[GoldRecord], predictions: Predictions, path: Path) -> None:
    """Predictions that name no gold question are another set's (PAUC would be the no-reply 25.0 at
    every omega): a UsageError. Some questions or lines unmatched: a warning with the counts."""
    gold_ids = {r.question_id for r in gold}
    matched = gold_ids & set(predictions.replies)
    if not matched:
        lines = f"none of its {len(predictions.replies)} question ids" if predictions.replies else "no prediction line"
        raise UsageError(f"{path}: {lines} matches the {len(gold_ids)} questions of the references",
                         "score the file `eval --out` wrote against the gold files `eval --data` read")
    missing, extra = len(gold_ids - matched), len(set(predictions.replies) - gold_ids)
    if missing or extra:
        print(f"warning: {len(matched)} of {len(gold_ids)} questions have a prediction line; {missing} without "
              f"one score the no-reply value; {extra} prediction line(s) name no question of the references",
              file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", type=Path, required=True, help="prediction JSONL")
    parser.add_argument("--references", type=Path, required=True, nargs="+",
                        help="gold files (JSON list or JSONL) or folders of <TASK>/anno.json; category from "
                             "--category, a record field, the folder of an anno.json, or the file name")
    parser.add_argument("--category", default=None, help="category of every gold record")
    parser.add_argument("--judge", choices=["offline", "openai"], default="offline",
                        help="offline = token-overlap approximation; openai = LLM endpoint")
    parser.add_argument("--judge-base-url", default=JudgeConfig.model_fields["base_url"].default)
    parser.add_argument("--judge-model", default=JudgeConfig.model_fields["model"].default)
    parser.add_argument("--judge-api-key", default=None)
    parser.add_argument("--omega", type=float, default=0.5, help="PAUC omega shown first (default 0.5)")
    parser.add_argument("--json", type=Path, default=None, help="write all metrics as JSON here")


def main(args: argparse.Namespace) -> int:
    """`python -m training.run score ...` (training.run parses the arguments)."""
    if not 0.0 <= args.omega <= 1.0:
        raise UsageError(f"--omega must lie in [0, 1], got {args.omega}")
    missing = [p for p in [args.predictions, *args.references] if not p.exists()]
    if missing:
        raise UsageError(f"no such file: {', '.join(map(str, missing))}", "check --predictions and --references")
    try:
        gold = [r for path in gold_files(args.references) for r in read_gold(path, args.category)]
    except (ValueError, json.JSONDecodeError) as error:
        raise UsageError(f"bad gold file: {error}") from None
    judge = make_judge(args.judge, JudgeConfig(base_url=args.judge_base_url, model=args.judge_model,
                                               api_key=args.judge_api_key))
    omegas = tuple(sorted({*REPORTED_OMEGAS, args.omega}))
    predictions = read_predictions(args.predictions)
    check_coverage(gold, predictions, args.predictions)
    result = score_predictions(gold, predictions, judge, omegas)
    result["omega"] = args.omega
    render_table(result, args.omega)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.eval.score", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(lambda rest: main(parser.parse_args(rest)), argv)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
