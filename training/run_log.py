"""What SFT and GRPO write while they run: TensorBoard scalars, `data_order.jsonl` and the progress
bar, all from the main process; the data order line covers every process's items."""

from __future__ import annotations

import json
from pathlib import Path

from training.distributed import gather_by_rank


class RunLog:
    def __init__(self, accelerator, output_dir: Path, name: str, total_steps: int, initial_step: int):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        self.accelerator, self.name = accelerator, name
        main = accelerator.is_main_process
        self.writer = SummaryWriter(str(output_dir / "tensorboard")) if main else None
        self.order_log = (output_dir / "data_order.jsonl").open("a") if main else None
        self.bar = tqdm(total=total_steps, initial=initial_step, disable=not main, desc=name, dynamic_ncols=True)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer:
            for key, value in values.items():
                if value is not None:  # e.g. no held-out episode could be scored
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def order(self, line: dict, indices: list[int]) -> None:
        """One `data_order.jsonl` line: `line` plus the items every process read (`by_rank`, a
        collective: every process calls it)."""
        by_rank = gather_by_rank(self.accelerator, indices)
        if self.order_log:
            self.order_log.write(json.dumps({**line, "items": [i for b in by_rank for i in b], "by_rank": by_rank}) + "\n")

    def phase(self, text: str) -> None:
        """What the step in progress is doing (a step takes minutes on a real model)."""
        self.bar.set_description_str(f"{self.name} step {self.bar.n + 1}: {text}")

    def say(self, line: str) -> None:
        if self.accelerator.is_main_process:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
        if self.writer:
            self.writer.close()
            self.order_log.close()
