"""Manifests of generated videos and configs that point the flow at a scripted LLM server.

Used by the fault tests (kill and resume, LLM misbehaviour, planted secrets) and `bench/soak.py`:
the sample's replay file covers only the sample videos, so these runs use the `openai` backend
against `tests.openai_stub.StubServer` serving `tests.scripted_llm`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from curation.video.synthetic import make_video

ROOT = Path(__file__).resolve().parents[1]
LINES = ("A {w} bar pattern slides in from the left edge.", "Colour bars in {w} tones hold still.",
         "A {w} gradient sweeps across the whole frame.", "A grid of {w} squares flickers quickly.")
WORDS = ("red", "green", "blue", "amber", "violet", "teal", "ochre", "silver")


def make_videos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` short H.264 clips with 2-3 hard cuts each (cached: generated once per folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"gen{i:04d}.mp4"
        if not path.exists():
            lengths = [[2.5, 3.0, 2.5], [3.0, 3.5], [2.0, 2.5, 3.0, 2.5]][(i + seed) % 3]
            make_video(path.with_suffix(".tmp.mp4"), lengths, size=(160, 120), fps=10)
            path.with_suffix(".tmp.mp4").rename(path)
        paths.append(path)
    return paths


def write_manifest(folder: Path, videos: list[Path], extra_rows: list[dict[str, Any]] = ()) -> Path:
    """Every other video comes with a narration file (the rest get captioned by the LLM)."""
    rows = []
    for i, video in enumerate(videos):
        row = {"video_id": video.stem, "uri": str(video), "source": "generated", "licence": "CC0-1.0"}
        if i % 2 == 0:
            text = folder / f"{video.stem}.csv"
            lines = ["start,end,text"] + [
                f"{2.0 * k:.1f},{2.0 * k + 2.0:.1f},\"{LINES[(i + k) % 4].format(w=WORDS[(i * 3 + k) % 8])}\""
                for k in range(3)]
            text.write_text("\n".join(lines) + "\n")
            row |= {"text_uri": str(text), "text_origin": "narration"}
        rows.append(row)
    rows += list(extra_rows)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(folder: Path, manifest: Path, output_dir: Path, llm_url: str, **extra: Any) -> Path:
    config = {
        "manifest": str(manifest), "output_dir": str(output_dir), "batch_size": 3,
        "workers": {"downloads": 2, "cpu": 2, "llm": 4},
        "admission": {"min_duration_s": 4, "min_height": 100},
        "llm": {"backend": "openai", "base_url": llm_url, "model": "scripted", "max_retries": 3,
                "backoff_s": 0.05, "timeout_s": 10},
    }
    for key, value in extra.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = folder / f"config-{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def flow_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "flows.build_corpus", "--config", str(config)]


def run_flow(config: Path, env: dict[str, str] | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", **(env or {})}
    return subprocess.run(flow_command(config), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def start_flow(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", **(env or {})}
    return subprocess.Popen(flow_command(config), cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the flow and everything it started (its ephemeral Prefect server included)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def table_rows(corpus: Path, table: str, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """All rows of a table through index.json, sorted, with volatile columns dropped."""
    index = json.loads((corpus / "index.json").read_text())
    rows = [r for s in index["shards"] if s["table"] == table
            for r in pq.read_table(corpus / s["path"]).to_pylist()]
    for row in rows:
        for key in drop:
            parent, _, leaf = key.partition(".")
            if leaf and isinstance(row.get(parent), dict):
                row[parent].pop(leaf, None)
            else:
                row.pop(key, None)
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def reset(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
