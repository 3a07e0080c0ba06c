"""Worker of tests/test_distributed.py's skip-count test, one per rank of a 2-process gloo world
(`torch.distributed.run`): each rank saves a checkpoint with its own skip counts, then resumes it
and writes back what it continues counting from (`<output_dir>/resumed-<rank>.json`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training import checkpoints
from training.distributed import exit_if_in_group


def main(output_dir: str) -> None:
    out = Path(output_dir)
    accelerator = checkpoints.make_accelerator("no", 0)
    rank = accelerator.process_index
    order = {"items": 4, "processes": accelerator.num_processes}
    skipped = {"video_missing": rank + 1} | ({"no_frames": 2} if rank else {})
    checkpoints.save_checkpoint(accelerator, out, {"step": 3, "skipped": skipped, "order": order})
    accelerator.wait_for_everyone()
    resumed = checkpoints.resume_state(accelerator, out, {"step": 0, "skipped": {}, "order": order}, resume=True)
    (out / f"resumed-{rank}.json").write_text(json.dumps(resumed["skipped"]))
    exit_if_in_group(0)


if __name__ == "__main__":
    main(sys.argv[1])
