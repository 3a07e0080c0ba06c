"""Where GRPO's rollouts come from: the trainer's own model (`hf`, the default and the reference)
or a vLLM engine kept on the policy's weights (`vllm`, colocated or a server: training.rl.vllm_engine).

A sampler gives the loop four things: `session()` (a context in which `sample(episode, cfg,
frames)` rolls out one group), `before_update()` / `after_update(step)` around each optimizer
update, and, for vLLM, the weight sync: at the start (a resumed policy is not the checkpoint the
engine loaded) and after every `sync_every_steps` updates. In server mode one process pushes (the
DDP replicas are equal) and every process waits for it before sampling again; colocated, each
process loads its own engine.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RolloutBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["hf", "vllm"] = "hf"  # FACTS.md: the published run sampled with SGLang
    vllm_mode: Literal["colocate", "server"] = "colocate"
    # server mode: a running `vllm serve` (VLLM_SERVER_DEV_MODE=1, --enable-scale-out) and the folder
    # it reads pushed weights from (default <output_dir>/engine-weights; must be visible to the server)
    server_url: str = "http://127.0.0.1:8000"
    weights_dir: str | None = None
    gpu_memory_utilization: float = Field(0.3, gt=0, lt=1)  # colocate: the engine's share of the device
    sleep_during_update: bool = True  # colocate, where vLLM has sleep mode (not on the CPU)
    lora_sync: Literal["merge", "adapter"] = "merge"  # a LoRA policy: merged weights, or the adapter itself
    # 1: every step's rollouts come from the policy being trained; more: staler rollouts, fewer
    # pushes (the drift guard bounds how stale)
    sync_every_steps: int = Field(1, ge=1)
    engine: dict[str, Any] = {}  # more `vllm.LLM` arguments (dtype, max_model_len, enforce_eager, ...)


class HFSampler:
    """Rollouts from the trainer's model (training.rl.rollout.rollout_group)."""

    def __init__(self, accelerator, model, bits):
        self.accelerator, self.model, self.bits = accelerator, model, bits

    @contextlib.contextmanager
    def session(self):
        from training.distributed import sampling_policy
        from training.rl.rollout import rollout_group

        with sampling_policy(self.accelerator, self.model) as policy:  # FSDP: a collective, on every rank
            yield lambda episode, cfg, frames: rollout_group(policy, self.bits, episode, cfg, frames)

    def before_update(self) -> None:
        pass

    def after_update(self, step: int) -> None:
        pass


class VLLMSampler:
    """Rollouts from a vLLM engine that follows the policy (module docstring)."""

    def __init__(self, cfg: RolloutBackendConfig, accelerator, model, bits, model_path: str, output_dir: Path,
                 lora_rank: int | None = None):
        from training.rl.rollout import VLLMRollouts
        from training.rl.vllm_engine import ColocatedEngine, ServerEngine

        self.cfg, self.accelerator, self.model, self.output_dir = cfg, accelerator, model, output_dir
        self.adapter = cfg.lora_sync == "adapter" and lora_rank is not None
        if cfg.vllm_mode == "server":
            engine = ServerEngine(cfg.server_url, Path(cfg.weights_dir or output_dir / "engine-weights"))
        else:
            engine = ColocatedEngine(model_path, bits.image_processor, cfg.gpu_memory_utilization,
                                     cfg.sleep_during_update, lora_rank if self.adapter else None, **cfg.engine)
        self.engine = engine
        self.rollouts = VLLMRollouts(model_path, bits, engine=engine)
        self.pushes = cfg.vllm_mode == "colocate" or accelerator.is_main_process
        self.sync(0)

    @contextlib.contextmanager
    def session(self):
        yield self.rollouts.rollout_group

    def before_update(self) -> None:
        self.engine.sleep()

    def after_update(self, step: int) -> None:
        self.engine.wake_up()
        if step % self.cfg.sync_every_steps == 0:
            self.sync(step)

    def sync(self, version: int) -> None:
        """Put the policy's current weights into the engine (every rank calls it)."""
        from training.rl.vllm_engine import policy_weights

        policy = self.accelerator.unwrap_model(self.model)
        if self.adapter:
            folder = self.output_dir / "engine-adapters" / f"step-{version:08d}"
            if self.accelerator.is_main_process:
                policy.save_pretrained(folder)  # the adapter alone (peft)
            self.accelerator.wait_for_everyone()
            if self.pushes:
                self.engine.load_adapter(folder, version + 1)  # LoRA ids start at 1
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:  # the engine holds it now; older folders are done with
                for old in (self.output_dir / "engine-adapters").glob("step-*"):
                    if old != folder:
                        shutil.rmtree(old, ignore_errors=True)
            return
        weights = policy_weights(policy)  # under FSDP every rank must iterate it (a gather per tensor)
        if self.pushes:
            self.engine.load_weights(weights)
        else:
            for _ in weights:
                pass
        self.accelerator.wait_for_everyone()  # no process samples before the engine holds them


def make_sampler(cfg: RolloutBackendConfig, accelerator, model, bits, model_path: str, output_dir: Path,
                 lora_rank: int | None = None):
    if cfg.backend == "hf":
        return HFSampler(accelerator, model, bits)
    return VLLMSampler(cfg, accelerator, model, bits, model_path, output_dir, lora_rank)
