"""Distributed launches (issue 17): the shipped accelerate configs run real 2-process gloo worlds
on CPU (SFT with resume, GRPO), accelerate's FSDP2 wrapping trains a sharded model on CPU, and
the launches that used to be silently wrong stop with one line naming the config to use.

The commands below are the README's "Distributed training" commands, with test-sized overrides."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, dialogue_row, free_port
from training import distributed
from training.data.dataset import batch_order

CONFIGS = ROOT / "configs" / "accelerate"
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
# tiny preset at test size: 2 frames of 56x56 per turn, no held-out loss
SFT_ARGS = ["max_pixels=3136", "episodes.max_frames=4", "eval_split=null", "learning_rate=1e-3"]
GRPO_ARGS = ["max_pixels=3136", "episodes.max_frames=4", "max_new_tokens_per_turn=4", "micro_batch_rollouts=4",
             "prompts.stretch_s=4", "prompts.min_stretch_s=2", "prompts.max_stretch_s=6"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from tests.sample_corpus import build_corpus

    rows = [dialogue_row(dialogue_id=f"bikes-mq-{i}") for i in range(4)]
    return build_corpus(tmp_path_factory.mktemp("corpus"), {"train": rows, "rl": [dialogue_row()]}, ["bikes"])


def launch(config: str, *command: str, timeout_s: float = 300, processes: int | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/<config> -m training.run ...` on CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [*ACCELERATE, "--config_file", str(CONFIGS / config), "--main_process_port", str(free_port()),
           *(["--num_processes", str(processes)] if processes else []), "-m", "training.run", *command]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)


def result_line(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # one world prints one result, not one per process
    return json.loads(lines[0])


def order_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "data_order.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- the configs


def test_each_shipped_config_is_one_accelerate_reads():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {name: load_config_from_file(str(CONFIGS / name)) for name in
             ("ddp_cpu.yaml", "ddp_gpu.yaml", "fsdp_gpu.yaml")}
    assert {n: (c.distributed_type.value, c.num_processes) for n, c in kinds.items()} == {
        "ddp_cpu.yaml": ("MULTI_GPU", 2), "ddp_gpu.yaml": ("MULTI_GPU", 2), "fsdp_gpu.yaml": ("FSDP", 2)}
    # FSDP2, each transformer block its own unit (the classes come from the model, see below)
    fsdp = yaml.safe_load((CONFIGS / "fsdp_gpu.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp


# ---------------------------------------------------------------- launches that would be silently wrong


def test_a_launched_process_without_a_gpu_joins_a_cpu_world():
    assert distributed.wants_cpu_world({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, cuda_available=False)
    assert not distributed.wants_cpu_world({"LOCAL_RANK": "0"}, cuda_available=True)
    assert not distributed.wants_cpu_world({}, cuda_available=False)


@pytest.mark.parametrize(("world", "env", "names"), [
    (1, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "started 2 processes"),  # --multi_gpu on CPU, before the fix
    (1, {"MASTER_ADDR": "127.0.0.1", "ACCELERATE_USE_CPU": "True"}, "started alone"),  # --cpu --num_processes 2
    (2, {"WORLD_SIZE": "2", "LOCAL_RANK": "0", "ACCELERATE_USE_FSDP": "true"}, "FSDP"),  # fsdp config on CPU
])
def test_a_launch_that_does_not_match_its_world_is_named_with_the_config_to_use(world, env, names):
    problem = distributed.launch_problem(world, fsdp=False, env=env)
    assert names in problem and distributed.CPU_CONFIG in problem and "\n" not in problem


def test_a_matching_launch_or_a_plain_start_is_fine():
    assert distributed.launch_problem(1, env={}) is None
    assert distributed.launch_problem(2, env={"WORLD_SIZE": "2", "LOCAL_RANK": "0"}) is None
    assert distributed.launch_problem(2, fsdp=True, env={"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}) is None


def test_a_second_run_writing_the_same_output_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = os.open(out / distributed.LOCK_NAME, os.O_RDWR | os.O_CREAT)  # another world's main process
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        problem = distributed.claim_output_dir(out)
        assert "being written by another training run" in problem and distributed.CPU_CONFIG in problem
    finally:
        os.close(other)
    assert distributed.claim_output_dir(out) is None  # free again
    assert distributed.claim_output_dir(out) is None  # this process already holds it: a second run in-process


def test_accelerates_cpu_launcher_with_two_processes_stops_with_the_config_to_use(corpus, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*ACCELERATE, "--cpu", "--num_processes", "2", "--main_process_port", str(free_port()),
                           "-m", "training.run", "sft", "--preset", "tiny", f"corpus={corpus}",
                           f"output_dir={tmp_path / 'run'}", "max_steps=1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ddp_cpu.yaml" in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "run" / "tiny-model").exists()  # stopped before building anything


# ---------------------------------------------------------------- real 2-process worlds on CPU


def test_two_process_sft_splits_the_data_keeps_replicas_equal_and_resumes_across_ranks(corpus, tmp_path):
    out = tmp_path / "run"
    sft = ["sft", "--preset", "tiny", f"corpus={corpus}", f"output_dir={out}", "save_every_steps=2", *SFT_ARGS]
    first = result_line(launch("ddp_cpu.yaml", *sft, "max_steps=2"))
    assert first["steps"] == 2
    ranks = first["weights_sha256_by_rank"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]  # DDP kept the two replicas identical
    order = order_lines(out)
    assert len(order) == 2  # one line per micro-batch for the world, not one per process
    for line in order:  # each process read its own item, as each reported it
        assert len(line["by_rank"]) == 2 and line["by_rank"][0] != line["by_rank"][1]
    assert sorted(i for line in order for i in line["items"]) == [0, 1, 2, 3]  # one epoch, nothing twice

    # a new launch continues at step 2 from the one checkpoint, each rank at its place in the order
    second = launch("ddp_cpu.yaml", *sft, "max_steps=4")
    resumed = result_line(second)
    assert "resumed from" in second.stdout + second.stderr and "at step 2" in second.stdout + second.stderr
    assert resumed["steps"] == 4 and len(json.loads((out / "summary.json").read_text())["losses"]) == 2
    assert resumed["weights_sha256_by_rank"][0] == resumed["weights_sha256_by_rank"][1] != ranks[0]
    epoch1 = batch_order(4, 1, 0, 1)  # the seeded order of the second epoch, dealt out rank by rank
    assert [line["by_rank"] for line in order_lines(out)[2:]] == [[epoch1[0], epoch1[1]], [epoch1[2], epoch1[3]]]
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002", "step-00000004"]
    saved = sorted(p.name for p in (out / "checkpoints" / "step-00000004" / "accelerate").iterdir())
    assert saved == ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl",
                     "scheduler.bin"]  # one model, each rank's RNG
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("final")) == ["final"]
    from training.model import load_model

    load_model(str(out / "final"))


@pytest.mark.slow
def test_two_process_grpo_summary_holds_every_ranks_rewards(corpus, tmp_path):
    out = tmp_path / "grpo"
    summary = result_line(launch("ddp_cpu.yaml", "grpo", "--preset", "tiny", f"corpus={corpus}",
                                 f"output_dir={out}", "max_steps=2", *GRPO_ARGS))
    assert summary["steps"] == 2
    saved = json.loads((out / "summary.json").read_text())
    order = order_lines(out)
    for record, line in zip(saved["history"], order, strict=True):
        assert len(line["by_rank"]) == 2 and line["by_rank"][0] != line["by_rank"][1]  # two prompts, one per rank
        assert record["rollouts"] == 2 * 4  # both ranks' groups of 4, not rank 0's alone
        assert "reward_total" in record and "reward_pauc" in record
    ranks = saved["weights_sha256_by_rank"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]


def test_checkpoints_keep_every_ranks_skip_counts_and_each_rank_resumes_its_own(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(ROOT / "tests" / "skip_counts_worker.py"), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((tmp_path / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())
    assert state["skipped"] == {"video_missing": 3, "no_frames": 2}  # the world's, not rank 0's
    assert state["skipped_by_rank"] == [{"video_missing": 1}, {"video_missing": 2, "no_frames": 2}]
    assert [json.loads((tmp_path / f"resumed-{r}.json").read_text()) for r in (0, 1)] == state["skipped_by_rank"]


# ---------------------------------------------------------------- FSDP on CPU


def test_fsdp_config_on_cpu_stops_instead_of_running_plain_ddp(corpus, tmp_path):
    proc = launch("fsdp_gpu.yaml", "sft", "--preset", "tiny", f"corpus={corpus}", f"output_dir={tmp_path / 'run'}",
                  "max_steps=1", timeout_s=120, processes=1)  # one process is enough to be refused
    assert proc.returncode != 0
    assert "error: an FSDP config was given but accelerate made no FSDP world" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_accelerates_fsdp2_wrapping_shards_qwen_blocks_and_trains_like_one_process(corpus, tmp_path):
    """accelerate's own `fsdp2_prepare_model` with fsdp_gpu.yaml's plugin, on a 2-process gloo
    world (tests/fsdp_cpu_worker.py): which classes become FSDP units, one SFT step, and GRPO's
    rollouts from the sharded policy."""
    from training.model import prepare_tiny_checkpoint

    tiny = prepare_tiny_checkpoint([dialogue_row()["references"][0]["answer"], "NO REPLY"], tmp_path / "tiny")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(ROOT / "tests" / "fsdp_cpu_worker.py"),
                           str(corpus), str(tiny), str(tmp_path / "fsdp.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = json.loads((tmp_path / "fsdp.json").read_text())
    # every decoder layer and vision block its own unit (Qwen2.5-VL's _no_split_modules), the
    # embedding and the lm_head (with the final norm) apart, the whole model the root
    assert found["units"] == {"Qwen2_5_VLDecoderLayer": 2, "Qwen2_5_VLVisionBlock": 2, "Embedding": 1,
                              "Linear": 1, "Qwen2_5_VLForConditionalGeneration": 1}
    assert found["local_share"] == pytest.approx(0.5, abs=0.01)  # each rank holds half the parameters
    assert found["loss_sharded"] == pytest.approx(found["loss_reference"], rel=1e-6)
    assert found["max_weight_diff"] < 1e-6  # the gathered step equals the unsharded one
    assert found["moved"] == found["trainable"] > 0  # every trainable parameter moved, the frozen tower did not
    # GRPO samples from a whole copy per rank: rollouts of different lengths per rank, no deadlock,
    # the same tokens as the unsharded model
    assert found["rollouts_match_by_rank"] == [True, True]
