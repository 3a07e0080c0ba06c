"""What SFT and GRPO share around their loops: the command line and its checks, config loading,
checkpoints and resume.

A checkpoint is `<output_dir>/checkpoints/step-NNNNNNNN/` with accelerate's state (model,
optimizer, scheduler, RNG) and `trainer_state.json` (step, position in the seeded data order, skip
counts: `skipped` summed over every process, `skipped_by_rank` each process's own, which is what
a resumed process continues counting from). Resume refuses a checkpoint made with another data
order: continuing it would silently repeat or skip data.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from curation.corpus.shards import read_index
from schemas.cli import UsageError, config_error

Config = TypeVar("Config", bound=BaseModel)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # `name` or `owner/name`
HUB_CONNECT_TIMEOUT_S = 3.0  # our choice: a reachable Hub answers a TCP connect far sooner


def add_run_arguments(parser, config_model: type[BaseModel], default_model: str | None) -> None:
    """The arguments `sft`, `grpo` and `prepare` share: a config file, the corpus, the model (not
    for `default_model=None`), and dotted `key=value` overrides of any key the config has (listed
    under --help)."""
    parser.add_argument("--config", help=f"YAML or JSON file of {config_model.__name__} fields")
    parser.add_argument("--corpus", help="corpus folder (with index.json); the same as corpus=DIR")
    if default_model is not None:
        parser.add_argument("--model", help=f"checkpoint folder or hub name (default: {default_model})")
        parser.add_argument("--preset", choices=["tiny"], help="tiny: a random tiny Qwen2.5-VL, no download")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. max_steps=20 episodes.seconds_per_frame=1")
    parser.set_config_model(config_model)


def load_config(config_cls: type[Config], path: str | None, overrides: list[str], **flags: Any) -> Config:
    """YAML/JSON file, then `--model`/`--preset` flags, then dotted `key=value` overrides. A
    missing file, a malformed override or an unknown key is a UsageError naming it."""
    data: dict[str, Any] = {}
    if path:
        if not Path(path).is_file():
            raise UsageError(f"config file {path} not found", "pass an existing YAML or JSON file to --config")
        try:
            data = dict(yaml.safe_load(Path(path).read_text()) or {})
        except (yaml.YAMLError, ValueError, TypeError) as error:
            raise UsageError(f"config file {path} is not a YAML mapping: {error}") from None
    data.update({k: v for k, v in flags.items() if v is not None})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"override {item!r} is not key=value", "e.g. max_steps=2")
        *parents, leaf = key.split(".")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise UsageError(f"override {item!r}: {name} is a value, not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"override {item!r}: {value!r} is not a YAML value") from None
    try:
        return config_cls.model_validate(data)
    except ValidationError as error:
        source = f"config {path}" if path else "overrides"
        raise config_error(error, config_cls, source) from None


def check_run(config_cls: type[Config], args, also_files: tuple[str, ...] = ()) -> Config:
    """A training command's config (file, flags, overrides), with its corpus (or the released file
    `data=` names, and any of `also_files`), its model and the launch environment checked before
    anything loads."""
    from training.distributed import check_launch_env

    cfg = load_config(config_cls, args.config, args.overrides, model=args.model, preset=args.preset,
                      corpus=args.corpus)
    require_corpus(cfg.corpus, cfg.data)
    for name in also_files:
        if getattr(cfg, name):
            require_corpus(cfg.corpus, getattr(cfg, name))
    require_model(cfg.model, cfg.preset)
    check_launch_env()
    return cfg


def require_corpus(corpus: str, data: str | None = None) -> None:
    """Fail in the first second, not after the model loads, when the input is not there: the
    released file named by `data=` when given (it stands in for the corpus), else the corpus."""
    if data:
        if not Path(data).is_file():
            raise UsageError(f"data={data}: no such file", "give a released MMDuet2 SFT JSONL or RL parquet")
        return
    read_index(corpus)


def require_model(name: str, preset: str | None) -> None:
    """Fail in the first second, not after a minute of download retries and a long traceback, when
    the model cannot load: a local path that holds no checkpoint, or a hub name that is neither in
    the local Hugging Face cache nor reachable (offline, or `HF_HUB_OFFLINE=1`)."""
    if preset:
        return
    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", ".", "~")) or not HUB_ID.match(name):
        if not (path / "config.json").is_file():
            raise UsageError(f"model {name}: no checkpoint there (no config.json)",
                             "pass a checkpoint folder or a hub name to --model, or --preset tiny")
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
        raise UsageError(f"model {name} is neither a local folder nor in the Hugging Face cache, and "
                         f"{constants.ENDPOINT} cannot be reached",
                         "--preset tiny needs no download; or --model a local checkpoint folder; "
                         f"or download it first on a machine with network: hf download {name}")


def _reachable(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=HUB_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted((output_dir / "checkpoints").glob("step-*/trainer_state.json"))
    return found[-1].parent if found else None


def resume_state(accelerator, output_dir: Path, fresh: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The latest checkpoint's state (accelerate state loaded), or `fresh` when there is none."""
    where = latest_checkpoint(output_dir) if resume else None
    if where is None:
        return fresh
    saved = json.loads((where / "trainer_state.json").read_text())
    if saved.get("order") != fresh["order"]:
        raise ValueError(f"{where}: saved with data order {saved.get('order')}, this run has "
                         f"{fresh['order']}; use a new output_dir or resume=false")
    accelerator.load_state(str(where / "accelerate"))
    accelerator.print(f"resumed from {where} at step {saved['step']}")
    by_rank = saved.pop("skipped_by_rank", None)  # the order key pins the world size, so ranks match
    saved["skipped"] = by_rank[accelerator.process_index] if by_rank else saved.get("skipped", {})
    return saved


def save_checkpoint(accelerator, output_dir: Path, state: dict[str, Any]) -> Path:
    """Write a checkpoint (every process calls it: the skip counts are gathered from each)."""
    from training.distributed import per_rank, total_counts

    where = output_dir / "checkpoints" / f"step-{state['step']:08d}"
    accelerator.save_state(str(where / "accelerate"))
    by_rank = per_rank(accelerator, state.get("skipped", {}))
    if accelerator.is_main_process:
        written = {**state, "skipped": total_counts(by_rank), "skipped_by_rank": by_rank}
        (where / "trainer_state.json").write_text(json.dumps(written))
    return where


def make_accelerator(mixed_precision: str, seed: int, output_dir: Path | None = None):
    """accelerate's Accelerator, with "auto" = bf16 where the device supports it (FACTS.md); a
    launched process without a GPU joins a gloo world, and a launch that would be silently wrong
    (world size, a second world in `output_dir`) is a UsageError (training.distributed)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from training.distributed import check_launch, wants_cpu_world

    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=wants_cpu_world())
    check_launch(accelerator, output_dir)
    set_seed(seed)
    return accelerator


def resolve_tiny_preset(cfg: Config, texts: list[str], accelerator, output_dir: Path) -> Config:
    """For `preset: tiny`, build the tiny checkpoint once (main process) and point `model` at it."""
    if cfg.preset != "tiny":
        return cfg
    from training.model import prepare_tiny_checkpoint

    if accelerator.is_main_process:
        prepare_tiny_checkpoint(texts, output_dir / "tiny-model", seed=cfg.seed)
    accelerator.wait_for_everyone()
    return cfg.model_copy(update={"model": str(output_dir / "tiny-model")})


def save_final(accelerator, model, tokenizer, image_processor, output_dir: Path, summary: dict) -> None:
    """`<output_dir>/final` as a loadable checkpoint, and `summary.json` beside it."""
    state_dict = accelerator.get_state_dict(model)  # every rank: under FSDP it is a collective gather
    if accelerator.is_main_process:
        final = output_dir / "final"
        accelerator.unwrap_model(model).save_pretrained(final, state_dict=state_dict)
        tokenizer.save_pretrained(final)
        image_processor.save_pretrained(final)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
