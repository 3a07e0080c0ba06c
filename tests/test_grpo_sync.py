"""GRPO's sampler checks and weight sync without vLLM (the run with vLLM is
tests/test_grpo_vllm_integration.py): the drift guard on real recomputed log-probs of a tiny model,
the weights a sync pushes (LoRA merged as peft merges it, training weights untouched), the server
engine's protocol against a local HTTP server, the log-prob pass that keeps only the logits it
needs, and activation checkpointing switched per tower."""

from __future__ import annotations

import base64
import copy
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from tests.conftest import every_2s
from training.data.episodes import EpisodeConfig, build_episode
from training.model import apply_lora, enable_activation_checkpointing
from training.rl.drift import Drift, DriftGuardConfig, drift_message
from training.rl.rollout import (
    RolloutConfig,
    VLLMRollouts,
    collate_rollouts,
    rollout_group,
    token_logprobs,
    token_logprobs_at,
)
from training.rl.vllm_engine import ServerEngine, policy_weights
from training.streaming import banned_token_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_policy):
    model, bits, dialogue = tiny_policy
    episode = build_episode(dialogue, "v.mp4", EpisodeConfig(), every_2s)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (28, 56, 3), dtype=np.uint8) for _ in episode.frame_times_s]
    return model, bits, episode, frames


@pytest.fixture(scope="module")
def sampled(tiny):
    """A group of 2 HF rollouts (5 tokens a reply, the first turn as context) and its batch."""
    model, bits, episode, frames = tiny
    group = rollout_group(model, bits, episode, RolloutConfig(n=2, max_new_tokens_per_turn=5, context_turns=1, seed=3),
                          frames)
    return group, collate_rollouts(group, bits.renderer.tokenizer.pad_token_id)


def perturbed(model, scale: float = 0.05):
    stale = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in stale.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return stale


def test_drift_is_noise_on_the_samplers_weights_and_the_guard_stops_another_policy(tiny, sampled):
    model = tiny[0]
    _, batch = sampled
    mask = batch["assistant_mask"]
    same, moved = Drift(), Drift()
    with torch.no_grad():
        same.add(batch["old_logprobs"], token_logprobs(model, batch), mask)
        moved.add(batch["old_logprobs"], token_logprobs(perturbed(model), batch), mask)
    assert same.tokens == moved.tokens == int(mask.sum()) > 0
    assert same.record()["logprob_drift_max"] < 1e-4 and drift_message(3, same, DriftGuardConfig()) is None
    mean = moved.record()["logprob_drift_mean"]
    assert mean > 0.05, mean  # the sampler's policy is not the one recomputing: a missed sync
    message = drift_message(3, moved, DriftGuardConfig())
    assert message.startswith("log-prob drift guard at step 3: ") and "\n" not in message
    assert f"over {moved.tokens} sampled tokens has mean {mean:.3g} > 0.05" in message
    assert drift_message(3, moved, DriftGuardConfig(action="off")) is None
    assert drift_message(3, moved, DriftGuardConfig(max_mean=None)) is None  # the max bound is off by default
    assert f"max {moved.largest:.3g} > " in drift_message(3, moved, DriftGuardConfig(max_mean=None,
                                                                                    max_abs=moved.largest / 2))


def test_merged_lora_weights_are_peft_merge_and_the_training_weights_stay(tiny):
    model, *_ = tiny
    policy = apply_lora(copy.deepcopy(model), rank=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:  # peft starts B at 0: give the adapter something to merge
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    training_weights = {k: v.clone() for k, v in policy.state_dict().items()}
    pushed = dict(policy_weights(policy))
    merged = copy.deepcopy(policy).merge_and_unload().state_dict()
    assert pushed.keys() == merged.keys() == model.state_dict().keys()  # the checkpoint's names
    assert all(torch.allclose(pushed[k], merged[k], atol=1e-6) for k in merged)
    adapted = [k for k in merged if not torch.equal(merged[k], model.state_dict()[k])]
    assert adapted and all("language_model" in k and "_proj" in k for k in adapted)
    assert all(torch.equal(v, training_weights[k]) for k, v in policy.state_dict().items())  # not merged in place
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in policy_weights(model))  # no LoRA: as it is


class VLLMStub:
    """A loopback HTTP server answering the `vllm serve` endpoints ServerEngine calls, recording
    (path, body); `/inference/v1/generate` returns the scripted reply tokens."""

    def __init__(self, reply: list[int], logprobs: list[float]):
        self.calls: list[tuple[str, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return None

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                stub.calls.append((self.path, body))
                answer = {}
                if self.path == "/inference/v1/generate":
                    answer = {"choices": [{"token_ids": reply, "logprobs": {"content": [
                        {"token_id": t, "logprob": lp} for t, lp in zip(reply, logprobs, strict=True)]}}]}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def test_server_engine_pushes_the_weights_resets_caches_and_sends_ids_and_lossless_frames(tiny, tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    model, bits, episode, frames = tiny
    model.save_pretrained(tmp_path / "checkpoint")  # the rollouts read the model's vocabulary size from it
    eos = bits.renderer.eos_id
    stub = VLLMStub([7, eos], [-1.25, -0.5])
    try:
        engine = ServerEngine(stub.url, tmp_path / "weights")
        engine.load_weights(policy_weights(model))
        assert [path for path, _ in stub.calls] == ["/collective_rpc", "/reset_prefix_cache", "/reset_encoder_cache"]
        assert stub.calls[0][1] == {"method": "reload_weights", "kwargs": {"weights_path": str(tmp_path / "weights")}}
        pushed = load_file(tmp_path / "weights" / "model.safetensors")
        assert pushed.keys() == model.state_dict().keys()
        assert all(torch.equal(pushed[k], v) for k, v in model.state_dict().items())
        assert [p.name for p in (tmp_path / "weights").iterdir()] == ["model.safetensors"]  # no partial file left

        stub.calls.clear()
        cfg = RolloutConfig(n=2, max_new_tokens_per_turn=4, context_turns=1, seed=3)
        group = VLLMRollouts(str(tmp_path / "checkpoint"), bits, engine=engine).rollout_group(episode, cfg, frames)
    finally:
        stub.httpd.shutdown()
    generated_turns = len(episode.turns) - 1
    assert len(stub.calls) == cfg.n * generated_turns
    banned = set(banned_token_ids(bits.renderer.tokenizer))
    seen = np.cumsum([len(t.frame_times_s) for t in episode.turns])[1:]  # frames so far at each generated turn
    for i, (path, body) in enumerate(stub.calls):
        upto = int(seen[i // cfg.n])
        assert path == "/inference/v1/generate"
        params = body["sampling_params"]
        assert params["seed"] == 3 * 1_000_003 + i % cfg.n  # each rollout its own stream, every turn
        assert (params["temperature"], params["top_k"], params["max_tokens"], params["stop_token_ids"]) == (
            1.2, 10, 4, [eos])
        assert params["logprobs"] == 0 and not banned & set(params["allowed_token_ids"])
        assert body["token_ids"][:len(bits.renderer.system_ids())] == list(bits.renderer.system_ids())
        shown = [np.asarray(Image.open(io.BytesIO(base64.b64decode(part["url"].split(",", 1)[1]))))
                 for part in body["content_parts"]]
        assert len(shown) == upto and all(np.array_equal(a, b) for a, b in zip(shown, frames[:upto], strict=True))
        assert body["token_ids"].count(bits.renderer.image_pad_id) == upto  # one pad per image: vLLM expands it
    for rollout in group:
        assert [t.token_ids for t in rollout.turns if not t.forced] == [[7, eos]] * generated_turns
        assert rollout.logprobs[rollout.assistant_mask].tolist() == [-1.25, -0.5] * generated_turns


def test_log_probs_from_the_kept_positions_equal_the_whole_sequences(tiny, sampled):
    model = tiny[0]
    _, batch = sampled
    mask = batch["assistant_mask"]
    at_one, at_hot = token_logprobs_at(model, batch, (1.0, 1.2))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], pixel_values=batch["pixel_values"],
                   image_grid_thw=batch["image_grid_thw"], use_cache=False).logits[:, :-1].float()
    for got, temperature in ((at_one, 1.0), (at_hot, 1.2)):
        full = torch.log_softmax(logits / temperature, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
        assert torch.allclose(got[:, 1:][mask[:, 1:]], full[mask[:, 1:]], atol=1e-5)
    at_hot[mask].sum().backward()  # the update's path carries gradients
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_activation_checkpointing_is_switched_per_tower_and_changes_no_gradient(tiny):
    from transformers.modeling_layers import GradientCheckpointingLayer

    model, bits, episode, frames = tiny
    group = rollout_group(model, bits, episode, RolloutConfig(n=1, max_new_tokens_per_turn=3, seed=1), frames)
    batch = collate_rollouts(group, bits.renderer.tokenizer.pad_token_id)

    def layers(m) -> dict[str, bool]:
        return {n: mod.gradient_checkpointing for n, mod in m.named_modules() if isinstance(mod, GradientCheckpointingLayer)}

    def gradients_and_saved(language_model: bool, vision_tower: bool):
        """Gradients of the log-prob pass, and the bytes its forward kept for the backward outside
        checkpointed layers (a checkpointed layer keeps its input only; the rest is recomputed)."""
        m = copy.deepcopy(model).train()
        assert enable_activation_checkpointing(m, language_model, vision_tower) == 2 * language_model + 2 * vision_tower
        flags = layers(m)
        assert all(on == (vision_tower if ".visual." in f".{n}." else language_model) for n, on in flags.items())
        kept = [0]

        def pack(t):
            kept[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            total = token_logprobs(m, batch)[batch["assistant_mask"]].sum()
        total.backward()
        return {n: p.grad for n, p in m.named_parameters()}, kept[0]

    plain, plain_kept = gradients_and_saved(False, False)
    kept = {}
    for towers in ((True, False), (False, True), (True, True)):
        grads, kept[towers] = gradients_and_saved(*towers)
        assert all(torch.allclose(grads[n], g, atol=1e-6) for n, g in plain.items() if g is not None)
    assert kept[(True, True)] < min(kept[(True, False)], kept[(False, True)]) <= max(
        kept[(True, False)], kept[(False, True)]) < plain_kept, (plain_kept, kept)
