"""The ablation's typed config and plan: variants over one base GRPO (and SFT) config, resolved and
validated into each variant's SFT and GRPO configs, and the settings key of each stage (training.ablate
runs them; training.ablation_report reads their files back)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.cli import UsageError, config_error
from training.eval.eval_config import EvalConfig
from training.rl.grpo_config import GRPOConfig
from training.rl.judge import BENCHMARK_PARSE, JudgeConfig, JudgeParse
from training.rl.reward import RewardConfig
from training.sft_config import SFTConfig

REWARD_TERMS = ("pauc", "repetition", "outspan", "prefix")  # training.rl.reward: w_<term> weighs reward_<term>


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="its folder's name")
    reward: dict[str, Any] = {}  # RewardConfig fields over the base's, e.g. {w_outspan: 0}
    # an SFT variant: SFT with this NO REPLY loss weight first (template.no_reply_loss_weight), GRPO from it
    no_reply_loss_weight: float | None = Field(None, ge=0)
    grpo: dict[str, Any] = {}  # any other GRPOConfig fields of this variant
    sft: dict[str, Any] = {}  # SFTConfig fields over the base's (set: an SFT variant)

    @property
    def trains_sft(self) -> bool:
        return self.no_reply_loss_weight is not None or bool(self.sft)


class EvalSettings(EvalConfig):
    """The evaluation every variant gets: EvalConfig's fields, plus the file, videos and device."""

    data: list[str] = Field(min_length=1, description="ProactiveVideoQA gold files or folders of <TASK>/anno.json")
    videos: str
    category: str | None = None
    device: str | None = None  # None: cuda if available

    def eval_config(self) -> EvalConfig:
        return EvalConfig(**self.model_dump(include=set(EvalConfig.model_fields)))


class ScoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    judge: Literal["offline", "openai"] = "offline"
    judge_endpoint: JudgeConfig = JudgeConfig()
    judge_parse: JudgeParse = BENCHMARK_PARSE  # score's default: the benchmark's reading


class AblateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output_dir: str = "runs/ablate"
    grpo_config: str | None = None  # a GRPO YAML file: the base of every variant
    grpo: dict[str, Any] = {}  # GRPOConfig fields over grpo_config's
    sft_config: str | None = None  # an SFT YAML file: the base of every SFT variant
    sft: dict[str, Any] = {}  # SFTConfig fields over sft_config's
    term_ablations: bool = False  # add `all-terms` and `no-<term>` per reward term with a weight
    variants: list[Variant] = []
    eval: EvalSettings
    score: ScoreSettings = ScoreSettings()


@dataclass
class VariantPlan:
    variant: Variant
    folder: Path
    sft: SFTConfig | None
    grpo: GRPOConfig

    @property
    def predictions(self) -> Path:
        return self.folder / "predictions.jsonl"

    @property
    def score(self) -> Path:
        return self.folder / "score.json"


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings merged left to right (a later layer's value wins; mappings merge key by key)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def yaml_fields(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    if not Path(path).is_file():
        raise UsageError(f"config file {path} not found", "check grpo_config / sft_config")
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} is not a YAML mapping")
    return data


def term_variants(base_reward: dict[str, Any]) -> list[Variant]:
    """All terms on, then each reward term off in turn (a term whose weight is already 0 is skipped)."""
    weights = RewardConfig.model_validate(base_reward)
    return [Variant(name="all-terms")] + [Variant(name=f"no-{term}", reward={f"w_{term}": 0.0})
                                          for term in REWARD_TERMS if getattr(weights, f"w_{term}")]


def validated(cls, fields: dict[str, Any], source: str):
    try:
        return cls.model_validate(fields)
    except ValidationError as error:
        raise config_error(error, cls, source) from None


def plan_variants(cfg: AblateConfig) -> list[VariantPlan]:
    """Each variant's SFT (or None) and GRPO config, validated before anything runs."""
    base_grpo = merged(yaml_fields(cfg.grpo_config), cfg.grpo)
    base_sft = merged(yaml_fields(cfg.sft_config), cfg.sft)
    variants = (term_variants(base_grpo.get("reward", {})) if cfg.term_ablations else []) + cfg.variants
    names = [v.name for v in variants]
    if not variants:
        raise UsageError("no variants", "list them under `variants:` or set term_ablations: true")
    if len(set(names)) != len(names):
        raise UsageError(f"variant names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    plans = []
    for v in variants:
        folder = Path(cfg.output_dir) / v.name
        grpo = merged(base_grpo, {"reward": v.reward}, v.grpo, {"output_dir": str(folder / "grpo")})
        sft = None
        if v.trains_sft:
            weight = {} if v.no_reply_loss_weight is None else {"template": {"no_reply_loss_weight": v.no_reply_loss_weight}}
            sft = validated(SFTConfig, merged(base_sft, v.sft, weight, {"output_dir": str(folder / "sft")}),
                            f"variant {v.name}: sft")
            grpo |= {"model": str(folder / "sft" / "final"), "preset": None}  # RL starts from this variant's SFT
        plans.append(VariantPlan(v, folder, sft, validated(GRPOConfig, grpo, f"variant {v.name}: grpo")))
    return plans


def settings_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def training_input_digest(cfg: SFTConfig | GRPOConfig) -> str | None:
    """What a training run reads, by content: the released file named by `data`, else the corpus's
    index (it names every shard with its sha256)."""
    return file_digest(Path(cfg.data) if cfg.data else Path(cfg.corpus) / "index.json")


def checkpoint_stamp(cfg: GRPOConfig) -> Any:
    """The start checkpoint of a GRPO run that does not start from its variant's SFT: a local
    folder by its files' names, sizes and modification times (a retrained checkpoint is another
    start; hashing gigabytes each run is not worth it), a hub name by its name, the tiny preset by
    nothing (it is built from the corpus, which the input digest covers)."""
    folder = Path(cfg.model)
    if cfg.preset or not folder.is_dir():
        return None if cfg.preset else cfg.model
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def stage_keys(plan: VariantPlan, cfg: AblateConfig) -> dict[str, str | None]:
    """Each stage's key: its own settings, what it reads by content, and the key of the stage whose
    output it reads (so a changed SFT changes GRPO's key, a changed GRPO eval's, and so on)."""
    from training.eval.proactive_format import gold_files

    keys = {"sft": settings_key(plan.sft.model_dump(mode="json"), training_input_digest(plan.sft)) if plan.sft else None}
    start = keys["sft"] or checkpoint_stamp(plan.grpo)  # an SFT variant's start is its own SFT
    keys["grpo"] = settings_key(plan.grpo.model_dump(mode="json"), training_input_digest(plan.grpo), start)
    gold = [file_digest(path) for path in gold_files([Path(p) for p in cfg.eval.data])]
    keys["eval"] = settings_key(cfg.eval.model_dump(mode="json"), gold, keys["grpo"])
    # the API key opens the endpoint, it does not change a judgement
    keys["score"] = settings_key(cfg.score.model_dump(mode="json", exclude={"judge_endpoint": {"api_key"}}), keys["eval"])
    return keys


def read_eval_gold(settings: EvalSettings) -> list:
    from training.eval.proactive_format import gold_files, read_gold

    return [r for path in gold_files([Path(p) for p in settings.data]) for r in read_gold(path, settings.category)]
