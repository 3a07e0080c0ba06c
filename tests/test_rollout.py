"""GRPO rollouts on the tiny preset: a seeded group, times per turn, and log-probs the trainer's
recomputation (same M-RoPE positions, padded batch) reproduces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import every_2s
from training.data.episodes import EpisodeConfig, build_episode
from training.rl.rollout import (
    RolloutConfig,
    collate_rollouts,
    rollout_group,
    token_logprobs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_group_of_rollouts_recomputes_to_the_same_logprobs(tiny_policy):
    model, bits, dialogue = tiny_policy
    episode = build_episode(dialogue, "v.mp4", EpisodeConfig(), every_2s)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (28, 56, 3), dtype=np.uint8) for _ in episode.frame_times_s]
    cfg = RolloutConfig(n=3, max_new_tokens_per_turn=5, context_turns=1, seed=7)
    assert model.training
    group = rollout_group(model, bits, episode, cfg, frames)
    assert model.training  # train mode restored after sampling
    assert len(group) == 3 and len({tuple(r.input_ids.tolist()) for r in group}) == 3  # seeds differ
    for r in group:
        assert r.episode_id == dialogue.dialogue_id
        assert [t.time_s for t in r.turns] == [t.time_s for t in episode.turns]
        assert r.turns[0].forced and r.turns[0].text == episode.turns[0].reply  # context turn
        assert [t for t, _ in r.replies()] == [t.time_s for t in episode.turns[1:]]
        assert r.reward_rollout().context_replies == (episode.turns[0].reply,)
        assert [(t.time_s, t.text) for t in r.reward_rollout().turns] == r.replies()
        assert r.input_ids[r.assistant_mask].tolist() == [x for t in r.turns for x in t.token_ids]
        assert r.position_ids.shape == (3, len(r.input_ids))
    assert [r.input_ids.tolist() for r in rollout_group(model, bits, episode, cfg, frames)] == \
        [r.input_ids.tolist() for r in group]  # reproducible from the seed

    batch = collate_rollouts(group, bits.renderer.tokenizer.pad_token_id)
    assert batch["position_ids"].shape == (3, 3, batch["input_ids"].shape[1])
    recomputed = token_logprobs(model, batch)
    mask = batch["assistant_mask"]
    assert torch.allclose(recomputed[mask], batch["old_logprobs"][mask], atol=1e-4)
    recomputed.sum().backward()  # the trainer's path carries gradients
    assert model.lm_head.weight.grad is not None


def test_group_decodes_the_real_video_or_skips(tiny_policy, samples_dir):
    model, bits, dialogue = tiny_policy
    cfg = RolloutConfig(n=1, max_new_tokens_per_turn=2)
    episode = build_episode(dialogue, samples_dir / "videos" / "bikes.mp4", EpisodeConfig(max_frames=4),
                            every_2s)
    (rollout,) = rollout_group(model, bits, episode, cfg)
    assert rollout.image_grid_thw.shape[0] == 4 and len(rollout.turns) == 2
    missing = build_episode(dialogue, samples_dir / "videos" / "nope.mp4", EpisodeConfig(max_frames=4), every_2s)
    assert rollout_group(model, bits, missing, cfg).reason == "video_missing"
