"""Loading the model, tokenizer and image processor: a real checkpoint or the `tiny` preset.

The model class comes from the checkpoint's config (`AutoConfig` -> the image-text-to-text auto
class, or the config's `architectures`), so Qwen2.5-VL is the default but not hard-wired.
Images go through `Qwen2VLImageProcessorPil`, not `Qwen2_5_VLProcessor` (which needs torchvision).
"""

from __future__ import annotations

from pathlib import Path

from training.data.chat_template import check_chat_template

# Qwen2.5-VL's LoRA targets in the language model only (the vision blocks reuse the MLP names).
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# Frames arrive already resized to the pixel budget by `curation.video.frames.decode_frames`; a floor of
# one merged patch keeps the processor from upscaling small frames into more tokens.
MIN_PIXELS = 28 * 28


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    check_chat_template(tokenizer, name=f"tokenizer of {name_or_path}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def load_image_processor(name_or_path: str, max_pixels: int):
    """Qwen's PIL image processor with the training pixel budget (frames are decoded at that
    budget already, so its resize is a no-op for them)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    try:
        processor = Qwen2VLImageProcessorPil.from_pretrained(name_or_path)
    except OSError:  # a checkpoint without preprocessor_config.json: Qwen's defaults
        processor = Qwen2VLImageProcessorPil()
    processor.size = {"shortest_edge": MIN_PIXELS, "longest_edge": max_pixels}
    return processor


def load_model(name_or_path: str, dtype=None):
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(name_or_path)
    try:
        return AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype)
    except ValueError:  # a config the auto class does not map: trust its declared architecture
        names = getattr(config, "architectures", None) or []
        cls = getattr(transformers, names[0], None) if names else None
        if cls is None:
            raise ValueError(f"{name_or_path}: config {type(config).__name__} names no loadable "
                             f"model class (architectures={names})") from None
        return cls.from_pretrained(name_or_path, dtype=dtype)


def freeze_vision_tower(model, train_merger: bool = True) -> int:
    """Freeze the vision encoder (SFT published: frozen); the patch merger, which maps vision
    features into the language model, stays trainable unless `train_merger` is False.
    Returns the number of frozen parameter tensors."""
    frozen = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}" and not (train_merger and ".merger." in name):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def apply_lora(model, rank: int, alpha: int, dropout: float):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS)
    return get_peft_model(model, config)


def prepare_tiny_checkpoint(texts: list[str], out_dir: str | Path, seed: int = 0) -> Path:
    """Build (once) the tiny preset under `out_dir` and return its path; reused if present."""
    from training.tiny import save_tiny_checkpoint

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    return save_tiny_checkpoint(texts, out, seed=seed)


def mrope_inputs(model, input_ids, image_pad_id: int) -> dict:
    """What the forward needs to build Qwen2.5-VL's 3-D M-RoPE positions itself.

    transformers 5.x builds them only when told which tokens are image tokens; without it a
    training forward silently falls back to 1-D positions, unlike the streaming loop (FACTS.md:
    the published trainer's 1-D/3-D mismatch). Older versions derive them from input_ids alone.
    """
    import inspect

    while hasattr(model, "module"):  # DDP / FSDP wrappers take **kwargs: look inside
        model = model.module
    model = getattr(model, "get_base_model", lambda: model)()  # peft
    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        return {"mm_token_type_ids": (input_ids == image_pad_id).int()}
    return {}


def enable_activation_checkpointing(model, language_model: bool, vision_tower: bool) -> int:
    """Recompute activations in the backward (non-reentrant) for the language model's decoder
    layers and/or the vision tower's blocks, each switched on its own; the layers checkpointed."""
    if not (language_model or vision_tower):
        return 0
    from transformers.modeling_layers import GradientCheckpointingLayer

    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the older name is deprecated there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    checkpointed = 0
    for name, module in model.named_modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.gradient_checkpointing = vision_tower if ".visual." in f".{name}." else language_model
            checkpointed += module.gradient_checkpointing
    return checkpointed


def load_trainable_model(name_or_path: str, freeze_vision: bool, train_merger: bool,
                         gradient_checkpointing: bool, lora, vision_checkpointing: bool | None = None):
    """The model as SFT and GRPO train it: fp32 master weights (autocast computes in bf16), the
    vision tower frozen or not, activation checkpointing of the language model
    (`gradient_checkpointing`) and of the vision tower (`vision_checkpointing`, by default the
    same), optional LoRA (`lora`: LoraSettings)."""
    import torch

    model = load_model(name_or_path, dtype=torch.float32)
    if freeze_vision:
        freeze_vision_tower(model, train_merger=train_merger)
    enable_activation_checkpointing(model, gradient_checkpointing,
                                    gradient_checkpointing if vision_checkpointing is None else vision_checkpointing)
    if lora.enabled:
        model = apply_lora(model, lora.rank, lora.alpha, lora.dropout)
    return model


def corpus_texts(items, system_prompt: str) -> list[str]:
    """The text the tiny preset's tokenizer is trained on: the system prompt, questions, answers.
    Items are (dialogue, video path) pairs or released episodes (anything with `.episode`)."""
    texts = [system_prompt]
    for item in items:
        if hasattr(item, "episode"):
            texts += [x for turn in item.episode.turns for x in (*turn.questions, turn.reply)]
        else:
            dialogue = item[0]  # (dialogue, video path[, frame cache])
            texts += [u.text for u in dialogue.user_turns] + [r.answer for r in dialogue.references]
    return texts
