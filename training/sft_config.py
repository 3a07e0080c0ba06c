"""The `sft` command's settings (`SFTConfig`, published values as defaults), its command line, and
the checks that run before torch is imported (`training.run` calls `check`, then imports
`training.sft`, whose `main` trains).

`python -m training.run sft [--config FILE] [--corpus DIR] [--model PATH_OR_NAME | --preset tiny]
[key=value ...]`. A mistake (an unknown key, a corpus or checkpoint that is not there, a hub model
that is not downloaded on a machine without network) is one `error:` line, in under a second,
before anything slow starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from training import checkpoints
from training.data.chat_template import DEFAULT_SYSTEM_PROMPT, TemplateConfig
from training.data.episodes import EpisodeConfig
from training.data.offline import OfflineSource


class ExtraCorpus(BaseModel):
    """Another corpus of dialogue shards mixed into training (FACTS.md: the published SFT mixed in
    ordinary video QA and captions, written as dialogues so they stream like the rest)."""

    model_config = ConfigDict(extra="forbid")
    path: str
    split: str = "train"
    max_dialogues: int | None = Field(None, ge=1)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False  # published SFT is a full fine-tune
    rank: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)


class SFTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: str = "corpus"
    # A released MMDuet2 ms-swift SFT JSONL (training.data.mmduet2): trained on instead of the
    # corpus split (extra corpora still mix in; no held-out loss). Frame paths are relative to
    # `data_frames_root` (default: the file's folder); frame interval: the file's `N_sec_per_frame`.
    data: str | None = None
    data_frames_root: str | None = None
    # With `data`: a released SFT JSONL for the held-out loss (`training.export swift-sft` writes
    # `...-validation-sft.jsonl`); frame paths relative to `data_frames_root` or its own folder.
    eval_data: str | None = None
    split: str = "train"
    eval_split: str | None = "validation"  # evaluated only when the index has it
    max_dialogues: int | None = Field(None, ge=1)
    max_eval_dialogues: int | None = Field(64, ge=1)
    extra_corpora: list[ExtraCorpus] = []
    # FACTS.md: 25k video QA + 25k captions mixed in (messages/images JSONL; training.data.offline)
    offline: list[OfflineSource] = []
    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # FACTS.md: base model
    preset: Literal["tiny"] | None = None  # "tiny": random tiny Qwen2.5-VL, no download
    output_dir: str = "runs/sft"
    max_pixels: int = Field(128 * 28 * 28, ge=28 * 28)  # FACTS.md: 128 visual tokens per frame
    learning_rate: float = Field(1e-5, gt=0)  # FACTS.md: SFT lr 1e-5
    warmup_ratio: float = Field(0.05, ge=0, le=1)  # FACTS.md: warm-up 0.05
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"  # not published
    epochs: int = Field(1, ge=1)  # FACTS.md: 1 epoch
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(1, ge=1, description="episodes per device per micro-batch")
    grad_accum_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    freeze_vision_tower: bool = True  # FACTS.md: SFT with the vision tower frozen
    train_merger: bool = True
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where supported (FACTS.md)
    lora: LoraSettings = LoraSettings()
    seed: int = 0
    log_every_steps: int = Field(1, ge=1)
    eval_every_steps: int = Field(500, ge=1)
    save_every_steps: int = Field(500, ge=1)
    resume: bool = True  # continue from the latest checkpoint in output_dir if there is one
    # DataLoader workers per process; None: min(4, cores per process - 1), 0 where fork is not
    # the start method (training.data.dataset.loader_workers)
    num_workers: int | None = Field(None, ge=0)
    prefetch_batches: int = Field(2, ge=1, description="batches each worker prepares ahead")
    # "auto": frames from `python -m training.run prepare`'s cache when this run's key was
    # prepared (training.data.frame_cache), decoded otherwise; "off": always decode
    frame_cache: Literal["auto", "off"] = "auto"
    # the data summary and the tiny tokenizer read this many dialogues, spread over the split
    # (never the whole split: issue 17)
    summary_sample: int = Field(2000, ge=1)
    order_window_blocks: int = Field(4, ge=1, description="row groups shuffled together (dataset.batch_order)")
    episodes: EpisodeConfig = EpisodeConfig()
    template: TemplateConfig = TemplateConfig(system_prompt=DEFAULT_SYSTEM_PROMPT)


def load_config(path: str | None, overrides: list[str], **flags) -> SFTConfig:
    """YAML/JSON file, then `--model`/`--preset` flags, then dotted `key=value` overrides."""
    return checkpoints.load_config(SFTConfig, path, overrides, **flags)


def add_arguments(parser) -> None:
    checkpoints.add_run_arguments(parser, SFTConfig, "Qwen2.5-VL-3B-Instruct")


def check(args) -> SFTConfig:
    return checkpoints.check_run(SFTConfig, args, also_files=("eval_data",))
