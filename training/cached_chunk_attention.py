"""SDPA with a fast path for a chunk of several new tokens on top of a KV cache (issue 23).

The streaming loop's decision forward is such a chunk: a turn's closing tokens plus the `NO REPLY`
draft, a handful of queries over a cache of thousands of keys. transformers' `sdpa` serves it
through the general path: `create_causal_mask` builds a boolean (queries x keys) mask over the whole
cache, `repeat_kv` copies every cached key and value once per query head of a group, and torch's
CPU kernel turns the boolean mask into a float one on every call. Together that made the chunk cost
about two one-token decode steps on the tiny preset, which is what kept a silent turn's decision
near half of plain decoding instead of well under it.

This implementation is registered under its own name (`CACHED_CHUNK_ATTENTION`) with transformers'
`AttentionInterface` and `AttentionMaskInterface`, and is the model's `sdpa` everywhere except in
that one case (several queries, a cache before them, no padding, no window):
- the mask function returns no mask there, so nothing (queries x keys) is built per forward;
- the attention groups each key/value head's query heads into one (rep * queries) block instead of
  copying the cache (the order `repeat_kv` uses: head i*rep + r reads key/value head i), and passes a
  float mask that is zero over the cache and causal over the chunk's own keys.
Results equal stock `sdpa` to float rounding (the tests check 1e-6 on attention, 1e-5 on logits).
Every other call (training forwards without a cache, padded batches, one-token decode steps,
transformers versions whose mask function takes other arguments) goes to stock `sdpa` unchanged, so
switching a model to it changes nothing but the cached-chunk forwards. The name lives only in the
runtime config: transformers does not write `_attn_implementation` into a saved config.json.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CACHED_CHUNK_ATTENTION = "sdpa_cached_chunk"
# The chunk's float mask holds (query heads per key/value head) x queries x keys values; past this
# many (64 MiB in fp32) the mask function hands the chunk to stock sdpa with its boolean mask.
MAX_MASK_ELEMENTS = 1 << 24
_last_mask: tuple[tuple, torch.Tensor] | None = None  # one forward's layers share their mask


def _is_cached_chunk(q_length, kv_length, q_offset, kv_offset, attention_mask, local_size,
                     allow_is_causal_skip, mask_function) -> bool:
    from transformers.masking_utils import causal_mask_function

    if not (isinstance(q_length, int) and isinstance(kv_length, int) and 1 < q_length < kv_length):
        return False
    plain_causal = mask_function is causal_mask_function and local_size is None and allow_is_causal_skip
    no_padding = attention_mask is None or bool(attention_mask.all())
    return plain_causal and no_padding and kv_offset == 0 and q_offset == kv_length - q_length


def _heads_per_kv_head(config) -> int | None:
    heads, kv_heads = getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None)
    return heads // kv_heads if isinstance(heads, int) and isinstance(kv_heads, int) and kv_heads else None


def cached_chunk_mask(*args, **kwargs):
    """`sdpa_mask`, except no mask for a cached chunk whose float mask fits MAX_MASK_ELEMENTS (the
    attention below builds that one); a bigger chunk gets `sdpa_mask`'s boolean mask and stock sdpa."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    rep = _heads_per_kv_head(kwargs.get("config"))
    if not args and "q_length" in kwargs and rep and _is_cached_chunk(
            kwargs["q_length"], kwargs.get("kv_length"), kwargs.get("q_offset", 0), kwargs.get("kv_offset", 0),
            kwargs.get("attention_mask"), kwargs.get("local_size"), kwargs.get("allow_is_causal_skip", True),
            kwargs.get("mask_function", causal_mask_function)) \
            and rep * kwargs["q_length"] * kwargs["kv_length"] <= MAX_MASK_ELEMENTS:
        return None
    return sdpa_mask(*args, **kwargs)


def cached_chunk_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           **kwargs) -> tuple[torch.Tensor, None]:
    """Stock `sdpa_attention_forward`, except a cached chunk (no mask, more keys than queries: only
    `cached_chunk_mask` returns that) attends without copying the cache."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_length, dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    if attention_mask is not None or not 1 < q_length < kv_length or heads % kv_heads:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    rep = heads // kv_heads
    grouped = query.reshape(batch, kv_heads, rep * q_length, dim)
    mask = _chunk_mask(rep, q_length, kv_length, query.dtype, query.device)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.reshape(batch, heads, q_length, dim).transpose(1, 2).contiguous(), None


def _chunk_mask(rep: int, q_length: int, kv_length: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(rep * queries, keys) additive mask: 0 over the cache, causal over the chunk's own keys, the
    same rows for each of a group's query heads. Kept for the forward's next layer."""
    global _last_mask
    key = (rep, q_length, kv_length, dtype, str(device))
    if _last_mask is not None and _last_mask[0] == key:
        return _last_mask[1]
    own = torch.full((q_length, q_length), float("-inf"), dtype=dtype, device=device).triu(1)
    mask = torch.zeros(rep * q_length, kv_length, dtype=dtype, device=device)
    mask[:, kv_length - q_length:] = own.repeat(rep, 1)
    _last_mask = (key, mask)
    return mask


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(CACHED_CHUNK_ATTENTION, cached_chunk_attention)
    AttentionMaskInterface.register(CACHED_CHUNK_ATTENTION, cached_chunk_mask)


def use_cached_chunk_attention(model) -> bool:
    """Switch a model's language model from `sdpa` to this implementation (idempotent); True when it
    is in use. A model on any other implementation (eager, flash attention) is left as it is."""
    base = getattr(model, "module", model)  # DDP / FSDP wrappers
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # PEFT
    config = getattr(base, "config", None)
    text_config = getattr(config, "text_config", None) or config
    if text_config is None or not hasattr(base, "set_attn_implementation"):
        return False
    if text_config._attn_implementation == CACHED_CHUNK_ATTENTION:
        return True
    if text_config._attn_implementation != "sdpa":
        return False
    _register()
    base.set_attn_implementation({"text_config": CACHED_CHUNK_ATTENTION} if text_config is not config
                                 else CACHED_CHUNK_ATTENTION)
    return text_config._attn_implementation == CACHED_CHUNK_ATTENTION
