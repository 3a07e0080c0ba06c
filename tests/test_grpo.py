"""GRPO: the pure pieces by hand (advantages, clipped token-mean loss, k3 KL, the guard), the
config's published defaults, and the loop on the tiny preset (reward rising on a synthetic task
whose best policy is known, resume, the judged reward path, the guard stopping a run)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.grpo_vllm_probe import shorter_replies_reward
from training.rl.grpo import GRPOConfig, load_config
from training.rl.grpo_loss import (
    GuardConfig,
    check_reward_hacking,
    clipped_policy_loss,
    group_advantages,
    k3_kl,
    reply_stats,
    sampled_forbidden,
)

# ---------------------------------------------------------------- advantages


def test_group_advantages_normalise_each_group_by_its_own_mean_and_std():
    adv = group_advantages([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0], group_size=4)
    std = math.sqrt(((1.5**2 + 0.5**2) * 2) / 3)  # sample std of 1..4 (mean 2.5)
    assert adv[:4] == pytest.approx([-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std], rel=1e-5)
    assert adv[4:] == [0.0, 0.0, 0.0, 0.0]  # equal rewards: no preference


def test_group_advantages_of_equal_tiny_rewards_are_zero_not_noise():
    assert group_advantages([0.1 + 1e-12] * 4, group_size=4) == [0.0] * 4


def test_group_advantages_reject_a_broken_group():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages([1.0, 2.0, 3.0], group_size=4)


# ---------------------------------------------------------------- the clipped token-mean loss


def loss_of(logp, old, adv, mask, n_tokens=None, **kw):
    logp = torch.tensor(logp, requires_grad=True)
    mask = torch.tensor(mask)
    parts = clipped_policy_loss(logp, torch.tensor(old), torch.tensor(adv), mask,
                                n_tokens or int(mask.sum()), **kw)
    parts.loss.backward()
    return parts, logp.grad


def test_on_policy_loss_is_minus_the_advantage_per_token():
    # ratio 1 everywhere: per token -A; row 0 has 2 tokens (A = 1), row 1 has 1 token (A = -2)
    parts, grad = loss_of([[0.0, -1.0, -2.0], [-1.0, -1.0, -1.0]], [[0.0, -1.0, -2.0], [-1.0, -1.0, -1.0]],
                          [1.0, -2.0], [[False, True, True], [False, False, True]])
    assert parts.loss.item() == pytest.approx((-1 - 1 + 2) / 3)
    assert parts.tokens == 3 and parts.clipped_tokens == 0
    # d loss / d logp = -A * ratio / n_tokens on masked tokens, 0 elsewhere
    assert grad.flatten().tolist() == pytest.approx([0.0, -1 / 3, -1 / 3, 0.0, 0.0, 2 / 3])


def test_ratio_is_clipped_at_0_2_in_the_direction_that_would_gain():
    up, down = math.log(1.5), math.log(0.5)
    # A > 0 and ratio 1.5: min(1.5, 1.2) * A -> loss -1.2, no gradient (clipped);
    # A < 0 and ratio 0.5: min(-0.5, -0.8) -> loss 0.8, no gradient;
    # A > 0 and ratio 0.5: unclipped side is smaller -> loss -0.5, gradient flows
    parts, grad = loss_of([[up], [down], [down]], [[0.0], [0.0], [0.0]], [1.0, -1.0, 1.0],
                          [[True], [True], [True]])
    assert parts.loss.item() == pytest.approx((-1.2 + 0.8 - 0.5) / 3)
    assert parts.clipped_tokens == 2
    assert grad[:2].abs().sum().item() == 0.0
    assert grad[2].item() == pytest.approx(-0.5 / 3)


def test_clip_ratio_is_configurable():
    parts, _ = loss_of([[math.log(1.5)]], [[0.0]], [1.0], [[True]], clip_ratio=0.4)
    assert parts.loss.item() == pytest.approx(-1.4)


def test_tokens_outside_the_assistant_mask_carry_no_loss():
    a, _ = loss_of([[5.0, -1.0]], [[0.0, -1.0]], [1.0], [[False, True]])
    b, _ = loss_of([[-7.0, -1.0]], [[0.0, -1.0]], [1.0], [[False, True]])
    assert a.loss.item() == b.loss.item() == pytest.approx(-1.0)


def test_micro_batches_sum_to_the_token_mean_of_the_whole_step():
    logp = [[-0.1, -0.2, -0.3], [-0.4, -0.5, -0.6]]
    old = [[-0.2, -0.2, -0.1], [-0.4, -0.9, -0.6]]
    mask = [[True, True, False], [False, True, True]]
    whole, _ = loss_of(logp, old, [0.7, -1.3], mask)
    first, _ = loss_of(logp[:1], old[:1], [0.7], mask[:1], n_tokens=4)
    second, _ = loss_of(logp[1:], old[1:], [-1.3], mask[1:], n_tokens=4)
    assert first.loss.item() + second.loss.item() == pytest.approx(whole.loss.item())


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -1.0, -2.0])
    ref = torch.tensor([-1.0, -2.0, -1.0])
    kl = k3_kl(logp, ref)
    assert kl[0].item() == 0.0
    assert kl[1].item() == pytest.approx(math.exp(-1) + 1 - 1)  # exp(d) - d - 1 with d = -1
    assert kl[2].item() == pytest.approx(math.exp(1) - 1 - 1)  # d = 1


def test_kl_term_adds_coef_times_k3_per_token_only_when_on():
    args = ([[-1.0]], [[-1.0]], [0.0], [[True]])
    off, _ = loss_of(*args)
    on = clipped_policy_loss(torch.tensor([[-1.0]]), torch.tensor([[-1.0]]), torch.tensor([0.0]),
                             torch.tensor([[True]]), 1, ref_logp=torch.tensor([[-2.0]]), kl_coef=0.005)
    assert off.loss.item() == 0.0
    assert on.loss.item() == pytest.approx(0.005 * math.exp(-1))
    assert on.kl == pytest.approx(math.exp(-1))


# ---------------------------------------------------------------- the reward-hacking guard


def test_guard_trips_on_repetition_or_reply_length_and_can_be_off():
    cfg = GuardConfig(action="stop", min_reward_repetition=-0.5, max_mean_reply_chars=300)
    assert not check_reward_hacking(-0.49, 299.0, cfg).tripped
    repetitive = check_reward_hacking(-0.5, 10.0, cfg)
    assert repetitive.tripped and "reward_repetition" in repetitive.reasons[0]
    long = check_reward_hacking(0.0, 301.0, cfg)
    assert long.tripped and "reply length" in long.reasons[0]
    assert not check_reward_hacking(-1.0, 1e6, GuardConfig(action="off")).tripped
    assert not check_reward_hacking(-1.0, 1e6, cfg.model_copy(update={
        "min_reward_repetition": None, "max_mean_reply_chars": None})).tripped


def test_reply_stats_count_replies_not_no_reply_turns():
    from training.rl.reward import NO_REPLY, Rollout, Turn

    rollouts = [Rollout((Turn(0, NO_REPLY), Turn(2, "abcd"))), Rollout((Turn(0, "ab"), Turn(2, NO_REPLY)))]
    assert reply_stats(rollouts) == {"mean_reply_chars": 3.0, "reply_rate": 0.5}
    assert reply_stats([Rollout((Turn(0, NO_REPLY),))]) == {"mean_reply_chars": 0.0, "reply_rate": 0.0}


def test_a_sampled_special_token_is_found_only_where_the_policy_sampled():
    from types import SimpleNamespace

    rollout = SimpleNamespace(input_ids=torch.tensor([5, 9, 7, 9]), assistant_mask=torch.tensor([0, 0, 1, 1]))
    assert sampled_forbidden(rollout, {9})
    assert not sampled_forbidden(rollout, {5})  # in the prompt, not sampled


# ---------------------------------------------------------------- config and CLI


def test_config_defaults_are_the_published_rl_settings():
    cfg = GRPOConfig()
    assert (cfg.rollouts_per_episode, cfg.temperature, cfg.top_k, cfg.max_new_tokens_per_turn) == (4, 1.2, 10, 100)
    assert (cfg.learning_rate, cfg.kl_coef, cfg.entropy_coef, cfg.clip_ratio, cfg.epochs) == (1e-6, 0.0, 0.0, 0.2, 1)
    r = cfg.reward
    assert (r.w_pauc, r.w_repetition, r.w_outspan, r.w_prefix) == (3.0, 2.0, 0.5, 2.0)
    assert cfg.freeze_vision_tower is False


def test_config_file_then_flags_then_dotted_overrides(tmp_path):
    path = tmp_path / "grpo.yaml"
    path.write_text("learning_rate: 2.0e-6\nreward:\n  w_prefix: 0\nkl_coef: 0.005\n")
    cfg = load_config(str(path), ["reward.w_outspan=2", "guard.action=stop", "top_k=0"], preset="tiny")
    assert (cfg.learning_rate, cfg.kl_coef, cfg.preset, cfg.top_k) == (2e-6, 0.005, "tiny", 0)
    assert (cfg.reward.w_prefix, cfg.reward.w_outspan, cfg.guard.action) == (0.0, 2.0, "stop")
    with pytest.raises(ValueError):
        load_config(None, ["no_such_field=1"])


def test_cli_lists_grpo_with_its_options():
    out = subprocess.run([sys.executable, "-m", "training.run", "grpo", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout and "--preset" in out.stdout


# ---------------------------------------------------------------- the loop on the tiny preset

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.conftest import dialogue_row
    from tests.sample_corpus import build_corpus

    return build_corpus(tmp_path_factory.mktemp("grpo-corpus"), {"rl": [dialogue_row()]}, ["bikes"])


def tiny_config(corpus, out, **overrides) -> GRPOConfig:
    # 2 turns of 2 frames at 56x56 pixels (4 visual tokens each), 4 rollouts of <= 4 tokens a turn
    base = {"corpus": str(corpus), "output_dir": str(out), "preset": "tiny", "max_pixels": 56 * 56,
            "episodes": {"max_frames": 4}, "max_new_tokens_per_turn": 4, "micro_batch_rollouts": 4,
            "learning_rate": 1e-2, "save_every_steps": 1000}
    return GRPOConfig.model_validate(base | overrides)


def weights_of(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_grpo_raises_the_reward_and_resumes_where_it_stopped(corpus, tmp_path):
    from training.rl.grpo import train_grpo

    out = tmp_path / "run"
    first = train_grpo(tiny_config(corpus, out, max_steps=3), reward_fn=shorter_replies_reward)
    assert first["steps"] == 3 and (out / "checkpoints" / "step-00000003" / "trainer_state.json").is_file()
    summary = train_grpo(tiny_config(corpus, out, max_steps=6), reward_fn=shorter_replies_reward)
    rewards = [h["reward_total"] for h in summary["history"]]
    print("reward curve", [round(r, 3) for r in rewards])
    # resume: the step count and the data order continue, nothing is replayed
    assert summary["steps"] == 6 and [h["step"] for h in summary["history"]] == [1, 2, 3, 4, 5, 6]
    order = [json.loads(line) for line in (out / "data_order.jsonl").read_text().splitlines()]
    assert [o["step"] for o in order] == [1, 2, 3, 4, 5, 6]
    assert summary["history"][:3] == first["history"]
    # learning: the mean reward of the last two steps beats the first two by a margin
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.05
    assert all(h["rollouts"] == 4 and h["reply_rate"] > 0 for h in summary["history"])
    # the HF sampler is the policy: its log-probs and the trainer's recomputation differ by float noise
    assert all(h["logprob_drift_max"] < 1e-4 for h in summary["history"])
    # every parameter moved (the vision tower trains in RL)
    before, after = weights_of(out / "tiny-model"), weights_of(out / "final")
    assert before.keys() == after.keys()
    assert [k for k in before if torch.equal(before[k], after[k])] == []


def test_grpo_reads_rl_stretches_and_their_context_replies_reach_the_reward(corpus, tmp_path):
    from training.rl.grpo import train_grpo
    from training.rl.judge import OfflineJudge
    from training.rl.reward import RewardConfig, compute_rewards

    seen = []

    def reward(rollouts, references):
        seen.extend(rollouts)
        breakdowns = compute_rewards(rollouts, references, OfflineJudge(), RewardConfig())
        return [b.as_log() for b in breakdowns]

    # 8 s streamed (4 frames at 2 s) cut into 4 s stretches: turns at 2 s and 6 s, one per stretch
    prompts = {"stretch_s": 4, "min_stretch_s": 2, "max_stretch_s": 6}
    summary = train_grpo(tiny_config(corpus, tmp_path / "run", max_steps=2, prompts=prompts), reward_fn=reward)
    assert summary["data"]["split"] == "rl" and summary["data"]["prompts_train"] == 2
    by_context = {r.context_replies for r in seen}
    # the second stretch was fed the first's reference reply; the reward saw it as an earlier reply
    assert by_context == {(), ("A man in a dark suit.",)}
    assert all(len(r.turns) == 1 for r in seen)  # only the stretch's own turn is generated


@pytest.mark.slow
def test_grpo_raises_the_reward_over_twelve_steps(corpus, tmp_path):
    from training.rl.grpo import train_grpo

    cfg = tiny_config(corpus, tmp_path / "run", max_steps=12, learning_rate=3e-2)
    rewards = [h["reward_total"] for h in train_grpo(cfg, reward_fn=shorter_replies_reward)["history"]]
    print("reward curve", [round(r, 3) for r in rewards])
    # measured: -0.70 -0.89 -0.54 ... -0.08 -0.01 0.00: the policy reaches the known optimum
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3
    assert sum(rewards[-3:]) / 3 > -0.2


def test_rollout_log_probs_match_the_trainers_recomputation(corpus, tmp_path):
    from curation.video.frames import frame_timeline
    from training.data.chat_template import TurnRenderer
    from training.data.corpus import read_split
    from training.data.episodes import EpisodeConfig, build_episode
    from training.model import (
        load_image_processor,
        load_model,
        load_tokenizer,
        prepare_tiny_checkpoint,
    )
    from training.rl.rollout import (
        ProcessorBits,
        RolloutConfig,
        collate_rollouts,
        rollout_group,
        token_logprobs,
    )

    split = read_split(corpus, "rl")
    dialogue = split.dialogues[0]
    path = prepare_tiny_checkpoint([dialogue.references[0].answer, "NO REPLY"], tmp_path / "tiny")
    tokenizer, model = load_tokenizer(str(path)), load_model(str(path))
    bits = ProcessorBits(TurnRenderer(tokenizer), load_image_processor(str(path), 56 * 56), 56 * 56)
    episode = build_episode(dialogue, split.video_path(dialogue.video_id), EpisodeConfig(max_frames=4), frame_timeline)
    group = rollout_group(model, bits, episode, RolloutConfig(n=2, max_new_tokens_per_turn=4))
    batch = collate_rollouts(group, tokenizer.pad_token_id)
    with torch.no_grad():
        recomputed = token_logprobs(model, batch, 1.0)
    mask = batch["assistant_mask"]
    assert mask.sum() > 0
    assert torch.allclose(recomputed[mask], batch["old_logprobs"][mask], atol=1e-4)


def test_cli_runs_the_judged_reward_and_the_guard_stops_with_a_checkpoint(corpus, tmp_path, capsys):
    from training.run import main

    out = tmp_path / "cli"  # in-process, so the sampling workaround applies; the parser is the CLI's
    argv = ["grpo", "--preset", "tiny", f"corpus={corpus}", f"output_dir={out}", "max_pixels=3136",
            "episodes.max_frames=4", "max_new_tokens_per_turn=4", "micro_batch_rollouts=2", "updates_per_step=2",
            "kl_coef=0.005", "max_steps=3", "judge=offline", "guard.action=stop", "guard.max_mean_reply_chars=0.5"]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "reward-hacking guard at step 1" in printed and "training stopped" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and "mean reply length" in summary["stopped"]
    logged = summary["history"][0]
    for term in ["reward_pauc", "reward_repetition", "reward_outspan", "reward_prefix", "reward_total"]:
        assert term in logged
    assert logged["reward_total"] == pytest.approx(
        3 * logged["reward_pauc"] + 2 * logged["reward_repetition"] + 0.5 * logged["reward_outspan"]
        + 2 * logged["reward_prefix"])
    assert logged["kl"] >= 0.0 and 0.0 <= logged["clip_fraction"] <= 1.0  # two updates, the KL term on
    assert (out / "checkpoints" / "step-00000001" / "trainer_state.json").is_file()
    assert list((out / "tensorboard").glob("events.*"))
