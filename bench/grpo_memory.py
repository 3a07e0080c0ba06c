"""Peak memory of one GRPO step at 30, 90 and 180 frames (FACTS.md: up to 180 frames at 1 s per
frame), activation checkpointing on and off, on the tiny preset (CPU: resident memory).

Each configuration runs in a fresh process: the tiny model, then one episode of N frames (1 s per
frame, 2 per user turn, the first turn fed as context; seeded noise frames at the trainer's pixel
budget, read from PNG files as a released RL row's are), then one call of the trainer's own step
(`training.rl.grpo_step.grpo_step`: 4 HF rollouts, the reward, the policy's log-prob pass with its
drift check, one update). The kernel's high-water mark (VmHWM) is reset just before the step
(`/proc/self/clear_refs`), so "step MiB" is the step's peak above what the process held before it.
Growth no worse than linear in frames: step(180) / step(30) <= 6, and the increment from 90 to 180
frames no more than 1.5x the one from 30 to 90 (the frame ratio of the two increments).

    python -m bench.grpo_memory [--frames 30 90 180] [--max-pixels 100352] [--new-tokens 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def one_step(frames: int, checkpointing: bool, max_pixels: int, new_tokens: int, workdir: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from curation.video.frames import frame_timeline, smart_resize
    from schemas import Dialogue
    from tests.conftest import dialogue_row
    from training import checkpoints
    from training.data.episodes import EpisodeConfig, build_episode
    from training.data.mmduet2 import ReleasedEpisode
    from training.model import load_trainable_model, prepare_tiny_checkpoint
    from training.rl.grpo_config import GRPOConfig
    from training.rl.grpo_data import load_processing
    from training.rl.grpo_step import Trainee, grpo_step
    from training.rl.samplers import HFSampler

    torch.set_num_threads(1)
    row = dialogue_row(duration_s=float(frames), references=[
        {"question_id": "bikes-mq-0-q0", "question": "Who walks past the cars?", "answer": f"Event {k}.",
         "reply_span": [10.0 * k + 1, 10.0 * k + 5]} for k in range(frames // 10)])
    row["user_turns"] = row["user_turns"][:1]
    dialogue = Dialogue.model_validate(row)
    episodes = EpisodeConfig(seconds_per_frame=1.0, max_frames=frames)
    episode = build_episode(dialogue, "", episodes, frame_timeline)
    h, w = smart_resize(720, 1280, max_pixels)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(len(episode.frame_times_s)):
        paths.append(workdir / f"f{i:04d}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1], compress_level=1)
    item = ReleasedEpisode(episode, tuple(paths), context_turns=1, references=tuple(dialogue.references))

    cfg = GRPOConfig(model=str(prepare_tiny_checkpoint([r.answer for r in dialogue.references], workdir / "tiny")),
                     max_pixels=max_pixels, episodes=episodes, max_new_tokens_per_turn=new_tokens,
                     gradient_checkpointing=checkpointing, vision_checkpointing=checkpointing, learning_rate=1e-3,
                     mixed_precision="no")
    accelerator = checkpoints.make_accelerator("no", 0)
    model = load_trainable_model(cfg.model, False, True, checkpointing, cfg.lora, checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    processing = load_processing(cfg)
    trainee = Trainee(accelerator, model, optimizer, None, HFSampler(accelerator, model, processing.bits), processing)

    def reward(rollouts, references):  # judge-free; the values only need to differ within the group
        return [{"reward_total": float(-sum(len(t.text) for t in r.turns))} for r in rollouts]

    before_kib = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    started = time.perf_counter()
    record, _ = grpo_step(cfg, trainee, reward, [item], [0], 0, lambda reason: None, lambda text: None)
    seconds = time.perf_counter() - started
    peak_kib = status_kib("VmHWM")
    return {"frames": frames, "checkpointing": checkpointing, "turns": len(episode.turns),
            "step_mib": (peak_kib - before_kib) / 1024,
            "before_mib": before_kib / 1024, "step_s": seconds, "rollouts": record["rollouts"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 90, 180])
    parser.add_argument("--max-pixels", type=int, default=128 * 28 * 28)  # FACTS.md: 128 visual tokens a frame
    parser.add_argument("--new-tokens", type=int, default=2, help="tokens a reply may take (rollout time)")
    parser.add_argument("--child", nargs=2, metavar=("FRAMES", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_step(int(args.child[0]), args.child[1] == "on", args.max_pixels, args.new_tokens,
                                      Path(tmp))))
        return 0
    rows = {}
    for checkpointing in ("on", "off"):
        for frames in args.frames:
            done = subprocess.run([sys.executable, "-m", "bench.grpo_memory", "--child", str(frames), checkpointing,
                                   "--max-pixels", str(args.max_pixels), "--new-tokens", str(args.new_tokens)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            rows[checkpointing, frames] = row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"checkpointing {checkpointing:3}  {frames:4d} frames ({row['turns']} turns): step peak "
                  f"+{row['step_mib']:8.1f} MiB over {row['before_mib']:.0f} MiB, {row['step_s']:.1f} s", flush=True)
    low, mid, high = args.frames[0], args.frames[len(args.frames) // 2], args.frames[-1]
    for checkpointing in ("on", "off"):
        step = {f: rows[checkpointing, f]["step_mib"] for f in args.frames}
        increments = (step[high] - step[mid]) / max(step[mid] - step[low], 1e-9)
        print(f"checkpointing {checkpointing}: step memory {high}/{low} frames = {step[high] / step[low]:.2f}x "
              f"(frames x{high / low:.0f}); increment {mid}->{high} / {low}->{mid} = {increments:.2f} "
              f"(linear: {(high - mid) / (mid - low):.2f})")
    for frames in args.frames:  # (seconds are printed per row only: one run each on a shared machine)
        print(f"{frames} frames: step memory checkpointing on / off = "
              f"{rows['on', frames]['step_mib'] / rows['off', frames]['step_mib']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
