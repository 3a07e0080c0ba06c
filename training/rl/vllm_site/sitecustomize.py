"""Run at the start of every Python process whose PYTHONPATH holds this folder (vLLM's engine and
its model-inspection subprocess): `training.rl.vllm_compat.allow_qwen_vl_without_torchvision`."""

from training.rl.vllm_compat import allow_qwen_vl_without_torchvision

allow_qwen_vl_without_torchvision()
