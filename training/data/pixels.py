"""Qwen2.5-VL pixel inputs for frames already at their target size, without the per-image loop.

Issue 17: with frames from the cache, the Hugging Face image processor was ~70% of an episode's
load time (per frame: a PIL round trip that changes nothing, float64 rescale, normalise, patchify).
Cached and decoded frames are already `smart_resize`d, so the resize is the identity and what is
left is a per-channel function of a uint8 value: it is tabulated once (256 entries per channel,
computed with the processor's own operations and dtypes: float64 rescale, float32 normalise) and
applied to all frames of the episode at once, then patchified as the processor does. The result is
the processor's, bit for bit (tests/test_lazy_loader.py compares them); any case this does not
cover (another processor class, frames of mixed or non-target sizes, other flags) returns None and
the caller uses the processor itself.
"""

from __future__ import annotations

import numpy as np
import torch

HANDLED = {"Qwen2VLImageProcessorPil", "Qwen2VLImageProcessor"}


def _value_table(processor) -> np.ndarray:
    """(3, 256) float32: each uint8 value of each channel after rescale and normalise."""
    values = np.arange(256, dtype=np.uint8)
    rescaled = (values.astype(np.float64) * processor.rescale_factor).astype(np.float32)
    mean = np.array(processor.image_mean, dtype=np.float32)
    std = np.array(processor.image_std, dtype=np.float32)
    return ((rescaled[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)


def fast_image_inputs(frames: list[np.ndarray], processor) -> tuple[torch.Tensor, torch.Tensor] | None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    if (type(processor).__name__ not in HANDLED or not frames or not processor.do_rescale
            or not processor.do_normalize or len(processor.image_mean) != 3 or len(processor.image_std) != 3):
        return None
    first = frames[0]
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        return None
    if any(f.shape != first.shape or f.dtype != np.uint8 for f in frames):
        return None
    height, width = first.shape[:2]
    patch, merge, temporal = processor.patch_size, processor.merge_size, processor.temporal_patch_size
    size = processor.size
    if processor.do_resize and smart_resize(height, width, factor=patch * merge, min_pixels=size["shortest_edge"],
                                            max_pixels=size["longest_edge"]) != (height, width):
        return None
    if height % (patch * merge) or width % (patch * merge):
        return None
    table = _value_table(processor)
    stacked = np.stack(frames)  # (N, H, W, C)
    normed = np.empty((len(frames), 3, height, width), dtype=np.float32)
    for c in range(3):
        normed[:, c] = table[c][stacked[..., c]]
    gh, gw = height // patch, width // patch
    patches = normed.reshape(len(frames), 3, gh // merge, merge, patch, gw // merge, merge, patch)
    patches = patches.transpose(0, 2, 5, 3, 6, 1, 4, 7)  # (N, gh, gw, mh, mw, C, ph, pw), as the processor
    patches = np.broadcast_to(patches[:, :, :, :, :, :, None], (*patches.shape[:6], temporal, patch, patch))
    pixel_values = patches.reshape(len(frames) * gh * gw, 3 * temporal * patch * patch)
    grid = torch.tensor([[1, gh, gw]] * len(frames), dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(pixel_values)), grid
