"""`python -m training.run ablate --config ablate.yaml`: reward-term and `NO REPLY`-weight ablations as one command.

Every variant starts from one base GRPO config (the same start checkpoint, seed and RL prompts) and
changes only what it names: reward weights (`reward: {w_outspan: 0}`), other GRPO fields (`grpo:`),
or, for an SFT variant, the SFT run its GRPO starts from (`no_reply_loss_weight: 0.3`, other SFT
fields in `sft:`). `term_ablations: true` adds `all-terms` and `no-<term>` for each reward term whose
base weight is not 0. Per variant, in `<output_dir>/<name>/`: SFT (`sft/`, SFT variants only), GRPO
(`grpo/`), `eval` of GRPO's final checkpoint on the one evaluation file (`predictions.jsonl`),
`score` of it (`score.json`); then one table (`ablation.md`, `ablation.csv`) and one figure
(`ablation.png`) over all variants, read back from those files (training.ablation_report).

Reuse: `<name>/stages.json` records each stage's settings key (its whole config and the key of the
stage it reads from), whether it finished and its wall time. A finished stage with the same key is
not run again; an interrupted one is resumed (SFT and GRPO from their checkpoints, eval from the
questions already written). A training folder made with other settings (or not by `ablate`) is
refused before anything runs, since resuming it would mix two runs: remove it or rename the
variant. Eval and score made with other settings are redone. Every action is a line of
`<output_dir>/ablate_log.jsonl` (run, reuse, redo, failed); a variant that fails is logged with its
error and the others go on (exit code 1).

Runs in one process (eval and score are single-process); wall time is the sum over a stage's
attempts that finished (a killed attempt's time is not known).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.cli import UsageError
from training import checkpoints
from training.ablate_plan import (
    AblateConfig,
    EvalSettings,
    ScoreSettings,
    VariantPlan,
    plan_variants,
    read_eval_gold,
    stage_keys,
)

TRAINING_STAGES = ("sft", "grpo")


class StageBook:
    """A variant's `stages.json`: per stage {key, done, wall_s}, written whole after each change."""

    def __init__(self, folder: Path):
        self.path = folder / "stages.json"
        self.records: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=2) + "\n")
        tmp.replace(self.path)


def check_training_folders(plans: list[VariantPlan], cfg: AblateConfig) -> None:
    """Refuse, before anything runs, a training folder this variant's settings did not make."""
    for plan in plans:
        book, keys = StageBook(plan.folder), stage_keys(plan, cfg)
        for stage in TRAINING_STAGES:
            folder = plan.folder / stage
            record = book.records.get(stage)
            made_elsewhere = record is None and folder.exists() and any(folder.iterdir())
            if made_elsewhere or (record is not None and record["key"] != keys[stage]):
                raise UsageError(f"variant {plan.variant.name}: {folder} was trained with other settings"
                                 f"{' (not by ablate)' if made_elsewhere else ''}",
                                 "remove that folder to train it again, or give the variant another name")


def run_stage(book: StageBook, stage: str, key: str, work: Callable[[], None], outputs: tuple[Path, ...],
              log: Callable[..., None]) -> None:
    """Run `work` unless this stage finished with this key. Outputs made with another key, or not
    recorded at all, go first (eval would otherwise resume from someone else's predictions)."""
    record = book.records.get(stage)
    if record is not None and record["key"] == key and record["done"]:
        log(stage, "reuse")
        return
    if record is None or record["key"] != key:
        for path in outputs:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        if record is not None:
            log(stage, "redo")
        record = None
    record = record or {"key": key, "done": False, "wall_s": 0.0}
    book.records[stage] = record
    book.save()  # before the work: a killed attempt leaves a record with this key, so a re-run resumes it
    started = time.monotonic()
    work()
    record.update(done=True, wall_s=round(record["wall_s"] + time.monotonic() - started, 3))
    book.save()
    log(stage, "run", wall_s=record["wall_s"])
    free_memory()


def free_memory() -> None:
    """Let the finished stage's model go before the next one loads (accelerate holds references in cycles)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_variant(settings: EvalSettings, model_dir: Path, out: Path) -> None:
    """`eval` of a checkpoint on the evaluation file: predictions (resumable) and the latency file."""
    from training.eval.evaluate import evaluate, latency_path, load_eval_model

    cfg = settings.eval_config()
    model, renderer, image_processor = load_eval_model(str(model_dir), settings.device, cfg)
    summary = evaluate(read_eval_gold(settings), Path(settings.videos), out, model, renderer, image_processor, cfg)
    latency_path(out).write_text(json.dumps({**summary, "config": cfg.model_dump()}, indent=2) + "\n")


def score_variant(eval_settings: EvalSettings, settings: ScoreSettings, predictions: Path, out: Path) -> None:
    from training.eval.proactive_format import read_predictions
    from training.eval.score import REPORTED_OMEGAS, score_predictions
    from training.rl.judge import make_judge

    result = score_predictions(read_eval_gold(eval_settings), read_predictions(predictions),
                               make_judge(settings.judge, settings.judge_endpoint), REPORTED_OMEGAS, settings.judge_parse)
    out.write_text(json.dumps(result, indent=2) + "\n")


def run_variant(plan: VariantPlan, cfg: AblateConfig, log: Callable[..., None]) -> None:
    from training.eval.evaluate import latency_path
    from training.rl.grpo import train_grpo
    from training.sft import train

    book, keys = StageBook(plan.folder), stage_keys(plan, cfg)
    if plan.sft is not None:
        run_stage(book, "sft", keys["sft"], lambda: train(plan.sft), (), log)
    run_stage(book, "grpo", keys["grpo"], lambda: train_grpo(plan.grpo), (), log)
    run_stage(book, "eval", keys["eval"],
              lambda: evaluate_variant(cfg.eval, Path(plan.grpo.output_dir) / "final", plan.predictions),
              (plan.predictions, latency_path(plan.predictions)), log)
    run_stage(book, "score", keys["score"], lambda: score_variant(cfg.eval, cfg.score, plan.predictions, plan.score),
              (plan.score,), log)


def run_ablation(cfg: AblateConfig) -> dict[str, Any]:
    """Every variant's stages (finished ones reused), then the table and the figure. Returns the
    table rows, the paths written and the variants that failed."""
    from training.ablation_report import collect_rows, draw_figure, write_tables

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("ablate runs in one process", "run it without accelerate launch")
    plans = plan_variants(cfg)
    for plan in plans:
        for stage_cfg in filter(None, (plan.sft, plan.grpo)):
            checkpoints.require_corpus(stage_cfg.corpus, stage_cfg.data)
    missing = [p for p in [*cfg.eval.data, cfg.eval.videos] if not Path(p).exists()]
    if missing:
        raise UsageError(f"eval: no such file or folder: {', '.join(missing)}", "check eval.data and eval.videos")
    check_training_folders(plans, cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    with (out / "ablate_log.jsonl").open("a") as log_file:
        for plan in plans:
            def log(stage: str, action: str, plan: VariantPlan = plan, **extra: Any) -> None:
                line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "variant": plan.variant.name,
                        "stage": stage, "action": action, **extra}
                log_file.write(json.dumps(line) + "\n")
                log_file.flush()
                print(f"ablate {plan.variant.name}: {stage} {action}", flush=True)

            try:
                run_variant(plan, cfg, log)
            except Exception as error:  # noqa: BLE001 - one variant's failure is recorded; the others go on
                traceback.print_exc()
                failed[plan.variant.name] = f"{type(error).__name__}: {error}"
                log("variant", "failed", error=failed[plan.variant.name])
    done = [p for p in plans if p.variant.name not in failed]
    rows = collect_rows(done, cfg)
    paths = write_tables(rows, out)
    if rows:
        paths["figure"] = draw_figure(rows, out / "ablation.png")
    return {"rows": rows, "paths": paths, "failed": failed}


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML of AblateConfig fields (variants, eval, score)")
    parser.add_argument("--preset", choices=["tiny"], help="tiny: every run on a random tiny Qwen2.5-VL")
    parser.add_argument("--model", help="GRPO's start checkpoint for every non-SFT variant")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. grpo.max_steps=1 output_dir=runs/abl")


def main(args) -> int:
    flags = (["grpo.preset=tiny", "sft.preset=tiny"] if args.preset else []) + (
        [f"grpo.model={args.model}"] if args.model else [])
    cfg = checkpoints.load_config(AblateConfig, args.config, flags + list(args.overrides))
    result = run_ablation(cfg)
    if "markdown" in result["paths"]:
        print(Path(result["paths"]["markdown"]).read_text())
    print(json.dumps({"variants": len(result["rows"]), "failed": result["failed"],
                      **{k: str(v) for k, v in result["paths"].items()}}))
    return 1 if result["failed"] else 0
