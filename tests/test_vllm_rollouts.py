"""What the vLLM rollout backend needs, checked without vLLM (the run itself is
tests/test_vllm_rollouts_integration.py, `make integration`): the tiny preset's vLLM variant
(head_dim 64 for vLLM's CPU attention, Qwen's M-RoPE split), Qwen2.5-VL's processor loading
through `training.rl.vllm_compat`'s site folder in a venv without torchvision, and the one-line
error where the extra is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, dialogue_row
from training.tiny import build_tiny_tokenizer, save_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texts() -> list[str]:
    row = dialogue_row()
    return [t["text"] for t in row["user_turns"]] + [r["answer"] for r in row["references"]]


def test_vllm_variant_has_head_dim_64_and_qwens_mrope_split_and_the_default_stays_small():
    import torch

    from training.tiny import build_tiny_model

    tokenizer = build_tiny_tokenizer(texts())
    for variant, head_dim in (("default", 16), ("vllm", 64)):
        model = build_tiny_model(tokenizer, variant=variant).eval()
        text = model.config.text_config
        assert text.hidden_size // text.num_attention_heads == head_dim
        rope = getattr(text, "rope_parameters", None) or text.rope_scaling
        assert 2 * sum(rope["mrope_section"]) == head_dim
        assert model.config.vision_config.out_hidden_size == text.hidden_size  # the merger feeds the text model
        ids = torch.tensor([[tokenizer.convert_tokens_to_ids("<|im_start|>"), 10, 11]])
        with torch.no_grad():
            assert model(input_ids=ids).logits.shape == (1, 3, len(tokenizer))


def test_qwen_vl_processor_loads_through_the_site_folder_with_or_without_torchvision(tmp_path):
    """The sitecustomize `VLLMRollouts` puts on vLLM's PYTHONPATH: vLLM's `smart_resize` import and
    the processor load work, the image processor is the PIL one the HF backend uses where
    torchvision is missing (here), and nothing is patched where it is present."""
    from training.rl.vllm_compat import site_dir

    checkpoint = save_tiny_checkpoint(texts(), tmp_path / "tiny", variant="vllm")
    code = (
        "import importlib.util\n"
        "from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize\n"
        "from transformers import Qwen2_5_VLProcessor\n"
        f"p = Qwen2_5_VLProcessor.from_pretrained({str(checkpoint)!r})\n"
        "print(smart_resize(56, 56), type(p.image_processor).__name__,\n"
        "      importlib.util.find_spec('torchvision') is None)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir()), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _, processor, no_torchvision = done.stdout.split()[-3:]
    assert done.stdout.startswith("(56, 56)")
    if no_torchvision == "True":
        assert processor == "Qwen2VLImageProcessorPil"


def test_the_backend_without_vllm_says_which_extra_to_install():
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0:
        pytest.skip("vllm is installed here")
    from training.rl.rollout import VLLMRollouts

    with pytest.raises(ImportError, match=r"pip install '\.\[vllm\]'"):
        VLLMRollouts("unused", bits=None)
