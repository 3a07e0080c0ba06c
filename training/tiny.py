"""The `tiny` preset: a random Qwen2.5-VL of a few thousand parameters and a tokenizer trained on
the corpus text, so the whole training path runs on a CPU with no downloads (TRL's test style).

Both are saved with `save_pretrained`, so they reload through the same `AutoConfig` /
`AutoTokenizer` path as a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from schemas import NO_REPLY

# Qwen2.5-VL's special tokens, in its id order (a real checkpoint has them at 151643..).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# The published Qwen2-VL / Qwen2.5-VL chat template (chat_template.json of the checkpoints).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on `texts` plus Qwen2.5-VL's special tokens and chat
    template. Byte-level, so any text encodes (no unknown tokens) whatever the corpus held."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator([*texts, NO_REPLY, "system user assistant"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>",
                                        additional_special_tokens=SPECIAL_TOKENS[1:])
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


# Text-model sizes of the two tiny variants. "default": width 64, head_dim 16 (the unit tests'
# speed). "vllm": width 128, 2 heads of 64, because vLLM's CPU attention kernels take no head_dim
# under 64 (issue 4); the M-RoPE sections keep Qwen's 1/4, 3/8, 3/8 split of head_dim / 2.
TINY_TEXT_SIZES = {
    "default": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                    mrope_section=[2, 3, 3]),
    "vllm": dict(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=2,
                 mrope_section=[8, 12, 12]),
}


def build_tiny_model(tokenizer, seed: int = 0, variant: str = "default"):
    """A random Qwen2.5-VL: 2 text layers (`TINY_TEXT_SIZES[variant]`), a 2-block vision tower,
    M-RoPE intact."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    sizes = dict(TINY_TEXT_SIZES[variant])
    mrope_section = sizes.pop("mrope_section")
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), **sizes,
                         num_hidden_layers=2,
                         max_position_embeddings=32768, max_window_layers=2,
                         rope_scaling={"type": "mrope", "mrope_section": mrope_section},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=sizes["hidden_size"], patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config)


def save_tiny_checkpoint(texts: Iterable[str], out_dir: str | Path, seed: int = 0,
                         variant: str = "default") -> Path:
    """Build and save a tiny tokenizer + model under `out_dir`; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(texts)
    model = build_tiny_model(tokenizer, seed=seed, variant=variant)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    Qwen2VLImageProcessorPil().save_pretrained(out)
    return out


def add_next_token_bias(model, bias: dict[int, dict[int, float]]):
    """Add `bias[previous][next]` to the logits after every `previous` token (a bigram prior on top
    of the random model), so a tiny model can be made to say `NO REPLY` some of the time, as a
    trained one does, where the random one never would. Returns the hook handle (`.remove()`)."""
    import torch

    vocab = model.config.get_text_config().vocab_size
    table = torch.zeros(vocab, vocab)
    for previous, nexts in bias.items():
        for token, value in nexts.items():
            table[previous, token] += value

    def hook(module, args, kwargs, output):
        ids = kwargs.get("input_ids", args[0] if args else None)
        kept = output.logits.shape[1]  # the last `logits_to_keep` positions, or all of them
        output.logits = output.logits + table.to(output.logits.device, output.logits.dtype)[ids[:, -kept:]]
        return output

    return model.register_forward_hook(hook, with_kwargs=True)
