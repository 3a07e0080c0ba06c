"""The corpus build's configuration: one typed object composed of every stage's own config.

Loaded from YAML; relative paths resolve against the YAML file's folder, so a config works from
any working directory (a served deployment runs wherever its process started). Dotted overrides
(`llm.model=...`) come from the CLI or a deployment's `--param overrides=...`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curation.corpus.shards import ShardConfig
from curation.llm.client import LLMConfig
from curation.speech.config import AsrConfig
from curation.text.descriptions import DescriptionConfig
from curation.text.dialogue_quality import GATE_VERSION
from curation.text.dialogues import DialogueConfig
from curation.video.acquire import AcquireConfig
from curation.video.frames import FrameConfig
from curation.video.probe import AdmissionConfig
from curation.video.scenes import SceneConfig
from schemas.cli import UsageError, config_error
from schemas.records import SCHEMA_VERSION

PIPELINE_VERSION = "2"  # 2: frames picked in stream time. Bump when a stage's output changes for the same config


# What one video's decode pass may hold: its packets (up to single_pass.MAX_PACKET_BYTES, typically
# 100-300 MB), the caption frames and the decoder's own buffers. Our choice, with headroom.
MEMORY_PER_CPU_WORKER = 1 << 30


def machine_cpu_workers() -> int:
    """One video per usable core (each decodes single-threaded), fewer when memory is short."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return max(1, cores)
    return max(1, min(cores, memory // MEMORY_PER_CPU_WORKER))


class WorkerLimits(BaseModel):
    """Separate bounds for the three expensive resources inside one batch."""

    model_config = ConfigDict(extra="forbid")
    downloads: int = Field(8, ge=1)
    cpu: int = Field(default_factory=machine_cpu_workers, ge=1,
                     description="videos in probe, scene detection and frame decoding at once; "
                                 "default: the usable cores, fewer if under 1 GiB of memory each")
    llm: int = Field(16, ge=1, description="videos in their LLM stages at once")


class WatchdogConfig(BaseModel):
    """Wall-clock budgets per stage of one video (ARCHITECTURE.md, "Watchdog"). A stage over its
    budget is quarantined as `stage_timeout` and the batch goes on. Generous on purpose: they catch
    hangs and pathological files, not slow machines. Not in the config fingerprint."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    acquire_s: float = Field(3600.0, gt=0, description="a download: 4 GiB (the size cap) at ~10 Mbit/s")
    stage_base_s: float = Field(300.0, gt=0, description="probe, scenes, frames, source text: fixed part")
    stage_per_video_s: float = Field(3.0, ge=0, description="added per second of video (a 10-min video: +1800 s)")
    llm_stage_base_s: float = Field(1800.0, gt=0, description="descriptions, dialogues: fixed part (LLM queues)")
    grace_s: float = Field(60.0, ge=0, description="past its budget, a stage stuck in native code is abandoned")
    stop_grace_s: float = Field(10.0, ge=0, description="after SIGTERM/SIGINT, how long running videos get "
                                "before the process exits")

    def budget_s(self, stage: str, duration_s: float | None) -> float | None:
        """The stage's budget for a video of `duration_s` (None before the probe knows it)."""
        if not self.enabled:
            return None
        if stage == "acquire":
            return self.acquire_s
        base = self.llm_stage_base_s if stage in ("descriptions", "dialogues") else self.stage_base_s
        return base + self.stage_per_video_s * max(0.0, duration_s or 0.0)


class CorpusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest: str
    output_dir: str = "corpus"
    limit: int | None = Field(None, ge=1, description="only the first N manifest rows")
    batch_size: int = Field(200, ge=1, description="videos per Prefect task run")
    workers: WorkerLimits = WorkerLimits()
    task_runner: Literal["local", "dask"] = "local"
    dask_address: str | None = Field(None, description="tcp://host:8786 of an existing cluster")
    acquire: AcquireConfig = AcquireConfig()
    admission: AdmissionConfig = AdmissionConfig()
    scenes: SceneConfig = SceneConfig()
    frames: FrameConfig = FrameConfig()
    asr: AsrConfig = AsrConfig()
    descriptions: DescriptionConfig = DescriptionConfig()
    llm: LLMConfig = LLMConfig()
    dialogues: DialogueConfig = DialogueConfig()
    shards: ShardConfig = ShardConfig()
    watchdog: WatchdogConfig = WatchdogConfig()

    def fingerprint(self) -> str:
        """What decides a video's result: changing it redoes videos; paths and workers do not."""
        relevant = self.model_dump(
            mode="json",
            include={"admission", "scenes", "frames", "descriptions", "dialogues"},
        )
        relevant["llm_model"] = self.llm.model
        # The model by identity (a folder by content, not path); threads and workers change no row.
        relevant["asr"] = self.asr.model_dump(mode="json", exclude={"model", "cpu_threads", "workers"})
        relevant["asr"]["model"] = self.asr.model_identity()
        relevant["versions"] = [PIPELINE_VERSION, SCHEMA_VERSION, GATE_VERSION]  # a new gate can change a verdict
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def verdict_limits(self) -> dict[str, str]:
        """What decides a quarantine verdict but no row's content, as one digest per kind: the stage
        budgets (`stage_timeout`) and a download's size cap, schemes and checks (the acquire
        stage's verdicts). A verdict made under other limits is made again (a raised `watchdog.*`
        or `acquire.max_bytes` retries a `stage_timeout` or `too_large`); changing them redoes no
        finished video (`curation.corpus.reuse`)."""
        def digest(data: object) -> str:
            return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

        download = self.acquire.model_dump(mode="json", include={"max_bytes", "check_content_type", "youtube_format"})
        return {"budgets": digest(self.watchdog.model_dump(mode="json", exclude={"stop_grace_s"})),
                "download": digest(download | {"schemes": sorted(self.acquire.allowed_schemes)})}


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys (`llm.model`) in a nested dict; YAML-parse string values (`"8"` -> 8)."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UsageError(f"override {dotted}: {key} is a value, not a section")
        try:
            node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value
        except yaml.YAMLError:
            raise UsageError(f"override {dotted}: {value!r} is not a YAML value") from None
    return data


def _resolve(base: Path, value: str | None) -> str | None:
    if value is None or "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """A config file's mapping; a missing or malformed file is the user's to fix (UsageError)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} not found", "pass an existing YAML file to --config, "
                         "e.g. samples/sample.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UsageError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of keys to values")
    return data


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> CorpusConfig:
    """Validated before anything starts: a bad key or value is a UsageError naming it."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    source = "overrides"
    if path is not None:
        data = read_yaml_config(path)
        base = Path(path).resolve().parent
        source = f"config {path}"
    data = apply_overrides(data, overrides)
    try:
        config = CorpusConfig.model_validate(data)
    except ValidationError as error:
        raise config_error(error, CorpusConfig, source) from None
    # Paths from the file are relative to the file; the LLM cache defaults into the corpus.
    update: dict[str, Any] = {"manifest": _resolve(base, config.manifest),
                              "output_dir": _resolve(base, config.output_dir)}
    llm = config.llm.model_copy(update={
        "replay_path": _resolve(base, config.llm.replay_path),
        "cache_dir": _resolve(base, config.llm.cache_dir) if config.llm.cache_dir
        else str(Path(update["output_dir"]) / "llm_cache"),
    })
    # A model folder named relative to the file; a model name or Hub id is left as it is.
    model = config.asr.model
    if model and not Path(model).is_absolute() and (base / model).is_dir():
        update["asr"] = config.asr.model_copy(update={"model": str((base / model).resolve())})
    return config.model_copy(update={**update, "llm": llm})
