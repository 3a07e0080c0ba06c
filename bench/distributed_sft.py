"""Tiny-preset SFT on CPU: one process vs a 2-process gloo world (configs/accelerate/ddp_cpu.yaml).

Both runs train the same corpus (generated dialogues over the sample's `bikes` clip) for the same
number of optimizer steps, one episode per process per step, each process on `--threads` torch
threads; the 2-process world therefore reads twice the episodes per step. Timed: the training
loop only (`train_s` in summary.json), not imports or the tiny model's construction. Printed:
steps/s of each and the ratio 2-process / 1-process (issue 17), and episodes/s, beside whether
both ran every step with no episode skipped and the 2 ranks ended with the same weights. On a
machine with fewer free cores than processes x threads the ratio measures contention, not scaling.

    .venv/bin/python -m bench.distributed_sft [--steps 20] [--threads 1] [--dialogues 16]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from schemas.cli import ArgumentParser
from tests.conftest import ROOT, dialogue_row, free_port
from tests.sample_corpus import build_corpus

ARGS = ["max_pixels=3136", "episodes.max_frames=8", "eval_split=null", "save_every_steps=100000"]


def run_sft(corpus: Path, out: Path, steps: int, threads: int, processes: int) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable, "-m", "training.run"] if processes == 1 else [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"), "--num_processes", str(processes),
        "--main_process_port", str(free_port()), "-m", "training.run"]
    proc = subprocess.run([*launcher, "sft", "--preset", "tiny", f"corpus={corpus}", f"output_dir={out}", f"max_steps={steps}", *ARGS],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sft with {processes} process(es) failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.distributed_sft", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--dialogues", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [dialogue_row(dialogue_id=f"bikes-mq-{i}") for i in range(args.dialogues)]
        corpus = build_corpus(Path(tmp) / "corpus", {"train": rows}, ["bikes"])
        results = {n: run_sft(corpus, Path(tmp) / f"run-{n}", args.steps, args.threads, n) for n in (1, 2)}
    print(f"tiny SFT on CPU, {args.steps} steps, 1 episode per process per step, {args.threads} thread(s) per process")
    print(f"{'processes':>9} {'loop s':>8} {'steps/s':>8} {'episodes/s':>10}")
    rate = {}
    for n, summary in results.items():
        rate[n] = summary["steps"] / summary["train_s"]
        print(f"{n:>9} {summary['train_s']:>8.2f} {rate[n]:>8.2f} {n * rate[n]:>10.2f}")
    steps = {n: summary["steps"] for n, summary in results.items()}
    skipped = {n: sum(summary["skipped"].values()) for n, summary in results.items()}
    synced = len(set(results[2]["weights_sha256_by_rank"])) == 1
    same = steps[1] == steps[2] == args.steps and not any(skipped.values()) and synced
    print(f"2-process / 1-process: steps/s x{rate[2] / rate[1]:.2f}, episodes/s x{2 * rate[2] / rate[1]:.2f}; "
          f"same work: {'yes' if same else 'NO'} (steps {steps[1]} and {steps[2]} of {args.steps}, episodes skipped "
          f"{skipped[1]} and {skipped[2]}, the 2 ranks' final weights {'identical' if synced else 'DIFFERENT'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
