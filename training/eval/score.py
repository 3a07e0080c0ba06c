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

Judge replies are read as the benchmark's scorer reads them (the first character) unless
`--judge-parse` names another published parser (training.rl.judge.SCORE_PARSERS);
`--compare-parsers` reads one round of judge calls under all of them, side by side.
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
from training.rl.judge import (
    BENCHMARK_PARSE,
    SCORE_PARSERS,
    Judge,
    JudgeConfig,
    RepetitionItem,
    ScoreItem,
    make_judge,
    parse_score,
)
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


@dataclass
class JudgingPlan:
    """What the judge must see for a set of predictions, and where each answer goes back."""
    score_items: list[ScoreItem]
    repetition_items: list[RepetitionItem]
    answers: list[tuple[GoldRecord, Any, list[float]]]  # (record, gold answer, reply time per score item)
    repetitions: list[tuple[str, bool | None]]  # (category, fixed verdict or None = the judge's next one)


def plan_judging(gold: Sequence[GoldRecord], predictions: Predictions) -> JudgingPlan:
    plan = JudgingPlan([], [], [], [])
    for record in gold:
        replies = predictions.replies.get(record.question_id, [])
        for answer, items in plan_answer_items(record, replies):
            plan.answers.append((record, answer, [t for t, _ in items]))
            plan.score_items.extend(item for _, item in items)
        for fixed, item in plan_repetition_items(replies):
            plan.repetitions.append((record.category, fixed))
            if item is not None:
                plan.repetition_items.append(item)
    return plan


def score_predictions(
    gold: Sequence[GoldRecord], predictions: Predictions, judge: Judge,
    omegas: Sequence[float] = REPORTED_OMEGAS, parse: str = BENCHMARK_PARSE,
) -> dict[str, Any]:
    """Every metric as plain data, PAUC in percent at each omega: per category and overall, with
    the judge's score replies read by the parser named `parse`."""
    return score_under_parsers(gold, predictions, judge, omegas, (parse,))["parsers"][parse]


def score_under_parsers(
    gold: Sequence[GoldRecord], predictions: Predictions, judge: Judge,
    omegas: Sequence[float], parsers: Sequence[str],
) -> dict[str, Any]:
    """One round of judge calls read under each parser: `parsers` maps each name to its metrics,
    `disagreements` lists the judge replies the parsers read differently."""
    plan = plan_judging(gold, predictions)
    texts, verdicts = judge.judge_texts(plan.score_items, plan.repetition_items)
    scores = {p: [None if t is None else parse_score(t, i.scale, p) for t, i in zip(texts, plan.score_items, strict=True)]
              for p in parsers}
    owners = [(record, answer) for record, answer, times in plan.answers for _ in times]
    disagreements = [
        {"question_id": record.question_id, "reference": answer.content, "replies": item.reply,
         "judge_reply": text, "scores": {p: scores[p][k] for p in parsers}}
        for k, (text, item, (record, answer)) in enumerate(zip(texts, plan.score_items, owners, strict=True))
        if len({scores[p][k] for p in parsers}) > 1]
    result = {p: assemble_metrics(gold, predictions, plan, scores[p], verdicts, omegas)
              | {"judge_parse": p, "unparsed_judge_replies": sum(t is not None and s is None
                                                                 for t, s in zip(texts, scores[p], strict=True))}
              for p in parsers}
    return {"parsers": result, "disagreements": disagreements}


def assemble_metrics(gold: Sequence[GoldRecord], predictions: Predictions, plan: JudgingPlan,
                     scores: list[int | None], verdicts: list[bool | None], omegas: Sequence[float]) -> dict[str, Any]:
    answers: list[AnswerScore] = []
    at = 0
    for record, answer, times in plan.answers:
        got = scores[at:at + len(times)]
        at += len(times)
        judged = [(t, s - 1) for t, s in zip(times, got, strict=True) if s is not None]
        answers.append(AnswerScore(record.question_id, record.category,
                                   drop_late_regressions(judged, answer.related_span_s[1]), answer.reply_span_s))
    duplicates: list[tuple[str, bool]] = []
    asked = iter(verdicts)
    for category, fixed in plan.repetitions:
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
        "judge_calls": len(scores) + len(verdicts),
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
                  f"{result['judge_failures']} of {result['judge_calls']} judge call(s) failed or unparsed (dropped; "
                  f"score replies read by {result['judge_parse']}); "
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


def render_comparison(compared: dict[str, Any], omega: float) -> None:
    """Every figure under each parser side by side, then each judge reply the parsers read
    differently (grouped by its text, with how often it came)."""
    from collections import Counter

    from rich.table import Table

    results = compared["parsers"]
    names = list(results)
    first = results[names[0]]
    omegas = sorted(float(k.removeprefix("pauc_omega_")) for k in first["overall"] if k.startswith("pauc_omega_"))
    table = Table(title=f"ProactiveVideoQA under each judge-reply parser: PAUC x100 (* = omega {omega:g}), "
                        "duplicate rate, judge calls failed or unparsed")
    table.add_column("category")
    table.add_column("figure")
    for name in names:
        table.add_column(name, justify="right")
    rows = [*first["categories"], *(["mean"] if len(first["categories"]) > 1 else []), "overall"]
    for row in rows:
        def at(result: dict[str, Any], row: str = row) -> dict[str, Any]:
            return result[row] if row in ("mean", "overall") else result["categories"][row]
        for w in omegas:
            table.add_row(row or "-", f"PAUC w={w:g}{'*' if w == omega else ''}",
                          *(f"{at(results[n])[pauc_key(w)]:.1f}" for n in names))
        table.add_row(row or "-", "dup %", *(f"{at(results[n])['duplicate_rate']:.1f}" for n in names),
                      end_section=True)
    table.add_row("all", "judge calls dropped", *(f"{results[n]['judge_failures']} of {results[n]['judge_calls']}"
                                              for n in names))
    table.add_row("all", "unparsed replies", *(str(results[n]["unparsed_judge_replies"]) for n in names))
    console = output_console()
    console.print(table)
    differing = compared["disagreements"]
    if not differing:
        console.print("The parsers read every judge reply alike.")
        return
    counts = Counter(d["judge_reply"] for d in differing)
    console.print(f"{len(differing)} judge repl(ies) read differently, {len(counts)} distinct "
                  f"(reply, times, an example question: reading per parser, - = failed):")
    for text, n in counts.most_common():
        example = next(d for d in differing if d["judge_reply"] == text)
        readings = ", ".join(f"{p} {'-' if example['scores'][p] is None else example['scores'][p]}" for p in names)
        console.print(f"  {text!r} x{n} ({example['question_id']}): {readings}", markup=False, highlight=False,
                      soft_wrap=True)


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
    parser.add_argument("--judge-parse", choices=sorted(SCORE_PARSERS), default=BENCHMARK_PARSE,
                        help="how a judge reply is read as a score: first-char = ProactiveVideoQA's scorer "
                             "(default), last-number = the third-party port, lenient = this project's reading")
    parser.add_argument("--compare-parsers", action="store_true",
                        help="read one round of judge replies under every parser: figures side by side and "
                             "the replies they read differently (the JSON holds each parser's metrics)")
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
    if args.compare_parsers:
        order = [args.judge_parse, *(p for p in SCORE_PARSERS if p != args.judge_parse)]
        result = score_under_parsers(gold, predictions, judge, omegas, order)
        render_comparison(result, args.omega)
    else:
        result = score_predictions(gold, predictions, judge, omegas, args.judge_parse)
        render_table(result, args.omega)
    result["omega"] = args.omega
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.eval.score", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(lambda rest: main(parser.parse_args(rest)), argv)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
