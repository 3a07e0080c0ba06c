"""`training.cached_chunk_attention`: a chunk of new tokens over a KV cache attends without copying
the cache and gives stock `sdpa`'s results; every other forward is stock `sdpa`'s, bit for bit."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import training.cached_chunk_attention as cca
from tests.conftest import dialogue_row
from training.cached_chunk_attention import (
    CACHED_CHUNK_ATTENTION,
    cached_chunk_attention,
    cached_chunk_mask,
    use_cached_chunk_attention,
)
from training.data.chat_template import TurnRenderer
from training.model import load_image_processor
from training.streaming import StreamConfig, StreamTurn, stream_turns
from training.tiny import build_tiny_model, build_tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def renderer():
    row = dialogue_row()
    return TurnRenderer(build_tiny_tokenizer([t["text"] for t in row["user_turns"]]
                                             + [r["answer"] for r in row["references"]]))


def causal_tail(q: int, kv: int) -> torch.Tensor:
    """The boolean mask transformers builds for `q` new tokens after `kv - q` cached ones."""
    return (torch.arange(kv) <= (kv - q + torch.arange(q))[:, None])[None, None]


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (8, 2), (4, 4)])
@pytest.mark.parametrize("batch,q,kv", [(1, 2, 3), (1, 9, 500), (2, 5, 64)])
def test_chunk_attention_equals_stock_sdpa_with_the_causal_mask(heads, kv_heads, batch, q, kv):
    gen = torch.Generator().manual_seed(q * kv + heads)
    query, key, value = (torch.randn(batch, h, n, 16, generator=gen)
                         for h, n in ((heads, q), (kv_heads, kv), (kv_heads, kv)))
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)
    stock, _ = sdpa_attention_forward(module, query, key, value, causal_tail(q, kv), scaling=0.25)
    fast, _ = cached_chunk_attention(module, query, key, value, None, scaling=0.25)
    assert fast.shape == stock.shape == (batch, q, heads, 16)
    assert torch.allclose(fast, stock, atol=1e-6)


def test_chunk_attention_in_half_precision_with_a_real_checkpoints_heads():
    # Qwen2.5-VL-3B's text attention: 16 query heads over 2 key/value heads of 128 dims.
    gen = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, h, n, 128, generator=gen).to(torch.bfloat16)
                         for h, n in ((16, 12), (2, 3000), (2, 3000)))
    module = types.SimpleNamespace(num_key_value_groups=8, is_causal=True)
    stock, _ = sdpa_attention_forward(module, query, key, value, causal_tail(12, 3000), scaling=128**-0.5)
    fast, _ = cached_chunk_attention(module, query, key, value, None, scaling=128**-0.5)
    assert fast.dtype == torch.bfloat16
    assert torch.allclose(fast.float(), stock.float(), atol=2e-3)


def test_mask_is_left_out_only_for_an_unpadded_cached_chunk(monkeypatch):
    from transformers.masking_utils import causal_mask_function

    def mask(**kw):
        base = {"batch_size": 1, "q_length": 4, "kv_length": 10, "q_offset": 6, "kv_offset": 0,
                "mask_function": causal_mask_function, "attention_mask": None,
                "config": types.SimpleNamespace(num_attention_heads=4, num_key_value_heads=2)}
        return cached_chunk_mask(**base | kw)

    assert mask() is None
    assert mask(attention_mask=torch.ones(1, 10, dtype=torch.bool)) is None
    padded = torch.ones(1, 10, dtype=torch.bool)
    padded[0, 0] = False
    assert torch.equal(mask(attention_mask=padded)[0, 0], causal_tail(4, 10)[0, 0] & padded)
    assert mask(allow_is_causal_skip=False) is not None  # the caller wants it materialised
    assert mask(local_size=3) is not None  # a sliding window
    assert mask(q_length=1, kv_length=10, q_offset=9) is None  # a decode step: stock sdpa skips it too
    assert mask(q_length=10, q_offset=0) is None  # no cache: stock sdpa's is_causal
    assert torch.equal(mask(config=None)[0, 0], causal_tail(4, 10)[0, 0])  # heads unknown: stock sdpa
    monkeypatch.setattr(cca, "MAX_MASK_ELEMENTS", 2 * 4 * 10 - 1)  # the float mask would not fit: stock sdpa
    assert torch.equal(mask()[0, 0], causal_tail(4, 10)[0, 0])


def test_cached_chunk_forward_equals_stock_sdpa_and_the_rest_is_bit_identical(renderer, tmp_path, monkeypatch):
    built = []
    real_chunk_mask = cca._chunk_mask
    monkeypatch.setattr(cca, "_chunk_mask", lambda *a: built.append(a[:3]) or real_chunk_mask(*a))
    model = build_tiny_model(renderer.tokenizer).eval()
    ids = torch.randint(10, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    padding = torch.ones(2, 40, dtype=torch.long)
    padding[1, :7] = 0

    def forwards():
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=padding).logits
            out = model(input_ids=ids[:1, :31], use_cache=True)
            cache = getattr(out, "cache", None) or out.past_key_values
            chunk = model(input_ids=ids[:1, 31:], cache=cache, use_cache=True).logits
        return full, chunk, cache

    full, chunk, cache = forwards()
    assert use_cached_chunk_attention(model)
    assert model.config.text_config._attn_implementation == CACHED_CHUNK_ATTENTION
    assert model.config.vision_config._attn_implementation == "sdpa"
    full_fast, chunk_fast, cache_fast = forwards()
    assert torch.equal(full_fast, full)  # training forwards, padded or not: stock sdpa
    assert torch.allclose(chunk_fast, chunk, atol=1e-5)
    heads = model.config.text_config.num_attention_heads // model.config.text_config.num_key_value_heads
    assert built == [(heads, 9, 40)] * model.config.text_config.num_hidden_layers  # the chunk took the fast path
    monkeypatch.setattr(cca, "MAX_MASK_ELEMENTS", heads * 9 * 40 - 1)  # too big for the float mask
    built.clear()
    _, chunk_capped, _ = forwards()
    assert built == [] and torch.allclose(chunk_capped, chunk, atol=1e-5)  # stock sdpa served it
    for layer, layer_fast in zip(cache.layers, cache_fast.layers, strict=True):
        assert torch.allclose(layer_fast.keys, layer.keys, atol=1e-5)
    assert use_cached_chunk_attention(model)  # idempotent
    model.save_pretrained(tmp_path)
    assert CACHED_CHUNK_ATTENTION not in (tmp_path / "config.json").read_text()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_other_attention_implementations_are_left_alone(renderer):
    model = build_tiny_model(renderer.tokenizer).eval()
    model.set_attn_implementation("eager")
    assert not use_cached_chunk_attention(model)
    assert model.config.text_config._attn_implementation == "eager"


def test_streaming_replies_are_the_same_with_either_attention(renderer):
    processor = load_image_processor("/nonexistent-so-defaults", 56 * 56)
    rng = np.random.default_rng(1)
    turns = [StreamTurn(time_s=2.0 * (i + 1), frames=[rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)],
                        text="Who walks past the cars?" if i == 1 else "") for i in range(4)]
    results = []
    for fast in (False, True):
        model = build_tiny_model(renderer.tokenizer, seed=3).eval()
        config = StreamConfig(max_new_tokens_per_turn=8, cached_chunk_attention=fast)
        results.append(stream_turns(model, renderer, processor, turns, config))
        assert (model.config.text_config._attn_implementation == CACHED_CHUNK_ATTENTION) is fast
    stock, fast = results
    assert [t.token_ids for t in fast.turns] == [t.token_ids for t in stock.turns]
    assert torch.equal(fast.input_ids, stock.input_ids)
    assert torch.allclose(fast.logprobs, stock.logprobs, atol=1e-4)
