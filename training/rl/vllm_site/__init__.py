"""The `sitecustomize.py` that `VLLMRollouts` puts on PYTHONPATH for vLLM's processes (see
`training.rl.vllm_compat`): a folder, not code to import."""
