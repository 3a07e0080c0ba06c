"""The `grpo` command's settings (`GRPOConfig`, the published run's values as defaults), its command
line, and the checks that run before torch is imported (`training.run` calls `check`, then imports
`training.rl.grpo`, whose `main` trains).

`python -m training.run grpo [--config FILE] [--corpus DIR] [--model PATH | --preset tiny]
[key=value ...]`: a mistake is one `error:` line before anything slow starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from training import checkpoints
from training.data.chat_template import DEFAULT_SYSTEM_PROMPT, TemplateConfig
from training.data.episodes import EpisodeConfig
from training.data.rl_prompts import RLPromptConfig
from training.rl.drift import DriftGuardConfig
from training.rl.grpo_loss import GuardConfig
from training.rl.judge import JudgeConfig
from training.rl.reward import RewardConfig
from training.rl.samplers import RolloutBackendConfig
from training.sft_config import LoraSettings


class GRPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: str = "corpus"
    split: str = "rl"  # the corpus split held out of SFT for RL (FACTS.md: 1,500 web + 400 ego videos)
    # A released MMDuet2 verl RL parquet (training.data.mmduet2): its rows are the RL prompts, with
    # their own context turns and references, instead of the corpus split's stretches. The user-turn
    # side file is `data_user_turns` (default: `<name>-user_turns.json` beside it); frame paths are
    # relative to `data_frames_root` (default: the parquet's folder).
    data: str | None = None
    data_user_turns: str | None = None
    data_frames_root: str | None = None
    max_dialogues: int | None = Field(None, ge=1)
    summary_sample: int = Field(2000, ge=1, description="dialogues the data summary and tiny tokenizer read")
    prompts: RLPromptConfig = RLPromptConfig()  # 20-60 s stretches with the dialogue before as context
    model: str = "runs/sft/final"  # FACTS.md: RL starts from the SFT checkpoint
    preset: Literal["tiny"] | None = None
    output_dir: str = "runs/grpo"
    max_pixels: int = Field(128 * 28 * 28, ge=28 * 28)  # FACTS.md: 128 visual tokens per frame
    rollouts_per_episode: int = Field(4, ge=2)  # FACTS.md: 4 rollouts per prompt
    temperature: float = Field(1.2, gt=0)  # FACTS.md: temperature 1.2
    top_k: int = Field(10, ge=0)  # FACTS.md: top-k 10 (0 = off)
    rollout: RolloutBackendConfig = RolloutBackendConfig()  # hf (default) or a vLLM engine that follows the policy
    draft_no_reply: bool = True  # rollouts verify `NO REPLY` in one forward (same samples; training.streaming)
    max_new_tokens_per_turn: int = Field(100, ge=1)  # FACTS.md: at most 100 new tokens per turn
    learning_rate: float = Field(1e-6, gt=0)  # FACTS.md: RL lr 1e-6
    kl_coef: float = Field(0.0, ge=0)  # FACTS.md: KL loss off; 0.005 (low-var KL) when on
    # FACTS.md: entropy coefficient 0 (the only value wired: a bonus would need the logits kept).
    entropy_coef: float = Field(0.0, ge=0, le=0)
    clip_ratio: float = Field(0.2, gt=0, lt=1)  # FACTS.md: PPO-style clipped ratio 0.2
    advantage_eps: float = Field(1e-6, gt=0)
    epochs: int = Field(1, ge=1)  # FACTS.md: 1 epoch
    max_steps: int | None = Field(None, ge=1, description="rollout batches; overrides epochs")
    episodes_per_step: int = Field(1, ge=1, description="episodes per process per step")
    micro_batch_rollouts: int = Field(1, ge=1, description="rollouts per forward/backward")
    updates_per_step: int = Field(1, ge=1, description="optimizer updates per rollout batch (PPO mini-batches)")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    freeze_vision_tower: bool = False  # FACTS.md: RL trains the vision tower
    # Activation checkpointing (recomputed in the backward), on for RL: an episode runs up to 180
    # frames (FACTS.md), and the activations of both towers grow with them (bench.grpo_memory)
    gradient_checkpointing: bool = True  # the language model's decoder layers
    vision_checkpointing: bool = True  # the vision tower's blocks
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    lora: LoraSettings = LoraSettings()
    seed: int = 0
    save_every_steps: int = Field(100, ge=1)
    # FACTS.md: validation decoding is greedy; on the RL split's held-out videos (prompts.validation_share)
    validate_every_steps: int = Field(0, ge=0, description="0: only after the last step")
    max_validation_prompts: int | None = Field(64, ge=1)
    resume: bool = True
    judge: Literal["offline", "openai"] = "offline"  # offline: token-overlap approximation
    judge_endpoint: JudgeConfig = JudgeConfig()
    # Published run weights 3/2/0.5/2 by default; the public code's 3/3/2/0 is REWARD_PRESETS["code_defaults"].
    reward: RewardConfig = RewardConfig()
    guard: GuardConfig = GuardConfig()
    drift_guard: DriftGuardConfig = DriftGuardConfig()  # sampler vs policy log-probs (training.rl.drift)
    episodes: EpisodeConfig = EpisodeConfig()
    # "auto": frames from `python -m training.run prepare`'s cache for this key when prepared
    # (training.data.frame_cache; same interval, frame cap and max_pixels as the SFT run), else decoded
    frame_cache: Literal["auto", "off"] = "auto"
    template: TemplateConfig = TemplateConfig(system_prompt=DEFAULT_SYSTEM_PROMPT)


def load_config(path: str | None, overrides: list[str], **flags) -> GRPOConfig:
    """YAML/JSON file, then `--model`/`--preset` flags, then dotted `key=value` overrides."""
    return checkpoints.load_config(GRPOConfig, path, overrides, **flags)


def add_arguments(parser) -> None:
    checkpoints.add_run_arguments(parser, GRPOConfig, "runs/sft/final")


def check(args) -> GRPOConfig:
    return checkpoints.check_run(GRPOConfig, args)
