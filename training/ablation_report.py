"""The ablation's table and figure, read back from each variant's own files (training.ablate).

One row per variant:
- its settings: the reward weights of its GRPO config, the `NO REPLY` loss weight of its SFT (SFT
  variants; none otherwise) and the share of SFT's loss weight on `NO REPLY` tokens (its data summary);
- `score.json`: PAUC x100 at omega 0 / 0.5 / 1 per category and their category mean, the duplicate
  rate (pooled over every reply);
- `predictions.jsonl` and the evaluation file: the reply rate (replies in the prediction file over
  the turns the questions with a prediction line were streamed as) and the mean reply length (chars);
- `grpo/summary.json`: the mean of each reward term over the training steps, the steps whose record
  tripped the reward-hacking guard (training.rl.grpo.guard_message with the run's guard settings),
  the steps run and whether the guard stopped the run;
- `stages.json`: wall time of training (SFT + GRPO) and of evaluation (eval + score).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from curation.skips import Skip
from training.ablate_plan import REWARD_TERMS, AblateConfig, VariantPlan, read_eval_gold
from training.eval.evaluate import EvalConfig, gold_episode
from training.eval.proactive_format import GoldRecord, read_predictions
from training.eval.score import REPORTED_OMEGAS, pauc_key
from training.rl.grpo import guard_message


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def reply_figures(predictions: Path, gold: list[GoldRecord], cfg: EvalConfig) -> dict[str, float]:
    """Reply rate and mean reply length (chars) over the questions with a prediction line."""
    replies = read_predictions(predictions).replies
    turns = said = chars = 0
    for record in gold:
        episode = gold_episode(record, "", cfg)
        if record.question_id not in replies or isinstance(episode, Skip):
            continue
        turns += len(episode.turns)
        said += len(replies[record.question_id])
        chars += sum(len(text) for _, text in replies[record.question_id])
    return {"reply_rate": said / turns if turns else 0.0, "mean_reply_chars": chars / said if said else 0.0}


def variant_row(plan: VariantPlan, gold: list[GoldRecord], cfg: AblateConfig) -> dict[str, Any]:
    grpo = read_json(Path(plan.grpo.output_dir) / "summary.json")
    score = read_json(plan.score)
    stages = read_json(plan.folder / "stages.json")
    history = grpo["history"]
    row: dict[str, Any] = {"variant": plan.variant.name}
    row |= {f"w_{term}": getattr(plan.grpo.reward, f"w_{term}") for term in REWARD_TERMS}
    row["no_reply_loss_weight"] = plan.sft.template.no_reply_loss_weight if plan.sft else None
    row["sft_no_reply_loss_share"] = (read_json(Path(plan.sft.output_dir) / "summary.json")["data"]
                                      .get("no_reply_loss_share") if plan.sft else None)
    for omega in REPORTED_OMEGAS:
        row |= {f"pauc_w{omega:g}_{name}": metrics[pauc_key(omega)] for name, metrics in score["categories"].items()}
        row[f"pauc_w{omega:g}_mean"] = (score["mean"] or score["overall"])[pauc_key(omega)]
    row["duplicate_rate"] = score["overall"]["duplicate_rate"]
    row |= reply_figures(plan.predictions, gold, cfg.eval.eval_config())
    for key in [f"reward_{term}" for term in REWARD_TERMS] + ["reward_total"]:
        values = [h[key] for h in history if key in h]
        row[key] = sum(values) / len(values) if values else None
    row["guard_triggers"] = sum(guard_message(h, plan.grpo.guard) is not None for h in history)
    row["grpo_steps"] = grpo["steps"]
    row["stopped"] = bool(grpo["stopped"])
    row["train_wall_s"] = sum(stages[s]["wall_s"] for s in ("sft", "grpo") if s in stages)
    row["eval_wall_s"] = stages["eval"]["wall_s"] + stages["score"]["wall_s"]
    return row


def collect_rows(plans: list[VariantPlan], cfg: AblateConfig) -> list[dict[str, Any]]:
    gold = read_eval_gold(cfg.eval)
    return [variant_row(plan, gold, cfg) for plan in plans]


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_tables(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """`ablation.csv` (every value as computed) and `ablation.md` (rounded to 4 significant digits)."""
    columns = columns_of(rows)
    csv_path, md_path = out / "ablation.csv", out / "ablation.md"
    with csv_path.open("w", newline="", encoding="utf-8") as sink:
        writer = csv.DictWriter(sink, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    md_path.write_text("# Ablation\n\nPAUC x100 and duplicate rate (%) from `score`; reply rate and length "
                       "from the predictions; reward terms are means over GRPO steps; wall times in seconds.\n\n"
                       + "\n".join(lines) + "\n", encoding="utf-8")
    return {"csv": csv_path, "markdown": md_path}


def draw_figure(rows: list[dict[str, Any]], path: Path) -> Path:
    """One figure, a panel per figure of the table: PAUC per category at each omega, reply rate,
    duplicate rate, mean reply length, reward terms, guard triggers, wall time."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    width = 0.8 / len(rows)

    def grouped(ax, groups: list[str], value_of, title: str) -> None:
        x = np.arange(len(groups))
        for i, row in enumerate(rows):
            ax.bar(x + i * width - 0.4 + width / 2, [value_of(row, g) or 0.0 for g in groups], width, label=row["variant"])
        ax.set_xticks(x, groups)
        ax.set_title(title)

    def single(ax, key: str, title: str) -> None:
        ax.bar(names, [r.get(key) or 0.0 for r in rows], color=[f"C{i}" for i in range(len(rows))])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)

    for ax, omega in zip(axes[0], REPORTED_OMEGAS, strict=True):
        prefix = f"pauc_w{omega:g}_"
        groups = [k.removeprefix(prefix) for k in rows[0] if k.startswith(prefix)]
        grouped(ax, groups, lambda row, g, p=prefix: row.get(p + g), f"PAUC x100, omega {omega:g}")
    single(axes[1][0], "reply_rate", "reply rate (eval)")
    single(axes[1][1], "duplicate_rate", "duplicate rate % (score)")
    single(axes[1][2], "mean_reply_chars", "mean reply length, chars (eval)")
    grouped(axes[2][0], [*REWARD_TERMS, "total"], lambda row, g: row.get(f"reward_{g}"), "reward terms, mean over GRPO steps")
    single(axes[2][1], "guard_triggers", "reward-hacking guard triggers (steps)")
    axes[2][2].bar(names, [r["train_wall_s"] for r in rows], label="training")
    axes[2][2].bar(names, [r["eval_wall_s"] for r in rows], bottom=[r["train_wall_s"] for r in rows], label="eval + score")
    axes[2][2].set_title("wall time, s")
    axes[2][2].tick_params(axis="x", rotation=30)
    axes[2][2].legend()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(rows), 6), title="variant")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
