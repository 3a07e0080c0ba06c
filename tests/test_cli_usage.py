"""Every command line of the project, given a usage mistake: one `error:` line naming the fix, exit
code 2, no traceback, and nothing slow imported first (torch, transformers and Prefect each cost a
second or more of CPU; a mistake is answered before them). The CPU time of each run is printed
(`-s`), not asserted: timings belong in bench/, the imports are what decides them."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, SAMPLES

HEAVY = ("torch", "transformers", "prefect")
# Benchmarks of the model itself: torch is what they measure, so they may import it first.
TORCH_BENCHES = {"bench.no_reply_draft", "bench.streaming_latency"}
RUNNER = textwrap.dedent("""
    import atexit, runpy, sys
    out, module, *args = sys.argv[1:]
    atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
""")


def cases(tmp) -> list[tuple[str, list[str], str]]:
    """(module, arguments, a piece of the one line it must print)."""
    (tmp / "url.jsonl").write_text(json.dumps({"video_id": "a", "url": "a.mp4"}) + "\n")
    (tmp / "comma.jsonl").write_text('{"video_id": "a", "uri": "a.mp4",}\n')
    (tmp / "data.jsonl").write_text("{}\n")
    (tmp / "other.jsonl").write_text(json.dumps({"question_id": "another-set-q0", "model_response_list": []}) + "\n")
    config = str(SAMPLES / "sample.yaml")
    return [
        ("schemas", ["validate"], "required: paths"),
        ("schemas", ["validate", str(tmp / "nope")], "no such file or folder"),
        ("flows.build_corpus", ["--bogus"], "unrecognized arguments: --bogus"),
        ("flows.build_corpus", ["--config", config, "batch_sise=2"], "did you mean batch_size?"),
        ("flows.build_corpus", ["--config", config, f"manifest={tmp / 'url.jsonl'}"], "did you mean `uri`?"),
        ("flows.build_corpus", ["--config", config, f"manifest={tmp / 'comma.jsonl'}"], "no trailing commas"),
        ("flows.push_to_hub", ["--corpus", str(tmp / "nope"), "--repo-id", "a/b"], "no index.json"),
        ("flows.serve", ["--config", str(tmp / "nope.yaml")], "not found"),
        ("training.run", [], "required: COMMAND"),
        ("training.run", ["sft", "--corpus", str(tmp / "nope")], "no corpus index"),
        ("training.run", ["sft", "--max-steps", "2"], "did you mean max_steps=VALUE?"),
        ("training.run", ["sft", "max_step=2"], "did you mean max_steps?"),
        ("training.run", ["sft", "--model", "/nonexistent/ckpt", f"data={tmp / 'data.jsonl'}"],
         "no checkpoint there"),
        ("training.run", ["grpo", f"data={tmp / 'data.jsonl'}"], "model runs/sft/final: no checkpoint there"),
        # --preset tiny forgotten on a machine without network: the default hub model is not downloaded
        ("training.run", ["sft", f"data={tmp / 'data.jsonl'}"], "Qwen/Qwen2.5-VL-3B-Instruct is neither a local folder"),
        ("training.run", ["prepare", "max_pixel=3136"], "did you mean max_pixels?"),
        ("training.run", ["ablate"], "required: --config"),
        ("training.run", ["eval", "--model", "Qwen/Qwen2.5-VL-3B-Instruct", "--data", str(SAMPLES / "eval" / "web.jsonl"),
                          "--videos", str(SAMPLES / "videos"), "--out", str(tmp / "p.jsonl")], "--preset tiny"),
        ("training.run", ["score", "--predictions", str(tmp / "no.jsonl"), "--references", str(tmp / "r.jsonl")],
         "no such file"),
        ("training.run", ["score", "--predictions", str(tmp / "other.jsonl"), "--references",
                          str(SAMPLES / "eval" / "web.jsonl")], "matches the 2 questions of the references"),
        ("training.export", ["swift-sft", "--corpus", str(tmp / "nope"), "--out", str(tmp / "x")], "no corpus index"),
        ("curation.video.probe", ["--bogus"], "--help lists the options"),
        ("curation.video.scenes", [], "required: video"),
        ("curation.corpus.stats", ["--corpus", str(tmp / "nope")], "no index.json"),
        ("curation.viewer", ["--corpus", str(tmp / "nope"), "--out", str(tmp / "v")], "no corpus index"),
        ("curation.llm.replay_build", ["--config", str(tmp / "nope.yaml"), "--answers", "a", "--out", "b"],
         "not found"),
        ("curation.speech.synthetic", [], "required: out"),
        *[(f"bench.{name}", ["--bogus"], "unrecognized arguments: --bogus")
          for name in ("asr", "dialogue_tokens", "distributed_sft", "incremental_corpus", "llm_client",
                       "no_reply_draft", "orchestration", "quality_gate", "rl_prompts", "scenes", "single_pass",
                       "soak", "streaming_latency", "training_loader")],
        ("bench.synthetic_results", [], "required: --out"),
    ]


@pytest.mark.slow
def test_every_command_line_answers_a_usage_mistake_in_one_line_before_anything_slow(tmp_path):
    seen, wrong = [], []
    for module, args, expected in cases(tmp_path):
        imported = tmp_path / "modules.txt"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(imported), module, *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**_env(), "HF_HUB_OFFLINE": "1"})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        what = f"python -m {module} {' '.join(args)}"
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        modules = set(imported.read_text().split()) if imported.is_file() else set()
        allowed = "torch" if module in TORCH_BENCHES else None
        slow = sorted({m.split(".")[0] for m in modules} & set(HEAVY) - {allowed})
        if proc.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or proc.stdout \
                or expected not in lines[0] or not lines[0].rstrip().endswith(")") or slow:
            # The one line must end with the fix in parentheses; nothing slow may load before it.
            wrong.append(f"{what}: exit {proc.returncode}, imported {slow}, stderr {proc.stderr[-600:]!r}")
        seen.append(f"{cpu_s:5.2f} s CPU  {what}")
    assert wrong == [], "\n".join(wrong)
    print("\n" + "\n".join(seen))


def test_help_is_help_and_lists_config_keys():
    probe = subprocess.run([sys.executable, "-m", "curation.video.probe", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout.startswith("usage: python -m curation.video.probe")
    sft = subprocess.run([sys.executable, "-m", "training.run", "sft", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert sft.returncode == 0
    keys = sft.stdout.split("config keys", 1)[1]
    assert "max_steps" in keys and "episodes.seconds_per_frame" in keys and "lora.enabled" in keys
    export = subprocess.run([sys.executable, "-m", "training.export", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert "the corpus in the formats of the\nMMDuet2 release" in export.stdout  # the whole text, not its first line


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("PROACTIVE_VIDEO_DEBUG", "COLUMNS")}


def test_a_python_without_the_projects_dependencies_says_so_in_one_line():
    # -S: no site-packages, as the system's python3 run from the repository root would be.
    proc = subprocess.run([sys.executable, "-S", "-m", "training.run", "sft", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and ".venv/bin/python" in proc.stderr and "pyarrow" in proc.stderr
