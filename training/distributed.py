"""How a training process joins its world, and the launches that would be silently wrong.

Launch recipes live in `configs/accelerate/` (README "Distributed training"). What this module
decides, and why:
- A process started by a launcher (torchrun, `accelerate launch --multi_gpu`: `LOCAL_RANK` set)
  on a machine without a visible CUDA device joins a gloo world on the CPU. accelerate would
  otherwise make it a world of 1 (it only picks gloo when `ACCELERATE_USE_CPU` is set, which its
  multi-process launcher never sets), so N processes trained N copies into one folder.
- A launch the environment says is distributed but that ends up with another world size, or an
  `accelerate launch --cpu --num_processes N` (its CPU launcher starts ONE process unless mpirun
  is configured; it leaves `MASTER_ADDR` behind), is a UsageError naming the config to use.
- One world per `output_dir`: its main process holds an advisory lock on `<output_dir>/.train.lock`
  for the life of the process, so independent runs sharing a folder (several world-1 processes,
  two launches) stop at the start instead of writing every line of `data_order.jsonl` twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sys
from pathlib import Path

from schemas.cli import UsageError

CPU_CONFIG = "configs/accelerate/ddp_cpu.yaml"
GPU_CONFIG = "configs/accelerate/ddp_gpu.yaml"
LOCK_NAME = ".train.lock"

# Lock files this process holds, by resolved output_dir: kept open for the life of the process
# (closing the descriptor would release the lock); a second run in the same process reuses it.
_held_locks: dict[Path, int] = {}


def launched_world_size(env: dict[str, str] | None = None) -> int | None:
    """The world size a launcher announced in the environment, or None for a plain start."""
    env = os.environ if env is None else env
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if env.get(name, "").strip().isdigit():
            return int(env[name])
    return None


def wants_cpu_world(env: dict[str, str] | None = None, cuda_available: bool | None = None) -> bool:
    """True when a launcher started this process and it can only train on the CPU (gloo)."""
    env = os.environ if env is None else env
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "LOCAL_RANK" in env and not cuda_available


def launch_problem(world_size: int, fsdp: bool = False, env: dict[str, str] | None = None) -> str | None:
    """Why this process's world does not match its launch (None when it does); `fsdp`: whether
    accelerate made this an FSDP world."""
    env = os.environ if env is None else env
    announced = launched_world_size(env)
    config = CPU_CONFIG if env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") else GPU_CONFIG
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not fsdp:
        return ("an FSDP config was given but accelerate made no FSDP world (it shards only on GPUs: on CPU "
                f"it would silently run plain DDP); on CPU launch with `accelerate launch --config_file {CPU_CONFIG}`")
    if announced is not None and announced != world_size:
        return (f"the launcher started {announced} processes but this one joined a world of {world_size}; "
                f"launch with `accelerate launch --config_file {config}` (CPU: {CPU_CONFIG})")
    if announced is None and "LOCAL_RANK" not in env and env.get("MASTER_ADDR") and world_size == 1:
        return ("started alone although a multi-process launch was asked for (`accelerate launch --cpu "
                f"--num_processes N` starts one process without mpirun); launch with "
                f"`accelerate launch --config_file {CPU_CONFIG}`, or unset MASTER_ADDR for one process")
    return None


def check_launch_env(env: dict[str, str] | None = None) -> None:
    """The launch mistakes the environment alone shows (a process started alone by `accelerate
    launch --cpu --num_processes N`), refused before the data and model load; the rest are
    checked once the world exists (`check_launch`)."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" not in env and (problem := launch_problem(1, fsdp=True, env=env)):
        raise UsageError(problem)


def claim_output_dir(output_dir: Path) -> str | None:
    """Take this world's lock on `output_dir` (main process only); why not, or None when held."""
    key = output_dir.resolve()
    if key in _held_locks:
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return (f"{output_dir} is being written by another training run (several processes each with a "
                f"world of 1?); give each run its own output_dir, or launch one world with "
                f"`accelerate launch --config_file {CPU_CONFIG}` (CPU) or {GPU_CONFIG} (GPUs)")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held_locks[key] = fd
    return None


def check_launch(accelerator, output_dir: Path | None) -> None:
    """Raise a UsageError on every process when the launch is wrong for this world or folder."""
    from accelerate.utils import DistributedType

    problem = launch_problem(accelerator.num_processes, accelerator.distributed_type == DistributedType.FSDP)
    if problem is None and output_dir is not None:
        problem = claim_output_dir(output_dir) if accelerator.is_main_process else None
        if accelerator.num_processes > 1:  # every rank stops, not only the main one
            from accelerate.utils import broadcast_object_list

            problem = broadcast_object_list([problem])[0]
    if problem:
        raise UsageError(problem)


def weights_fingerprint(accelerator, model) -> str | None:
    """sha256 over this rank's parameters (name, dtype, bytes) in name order; None under FSDP,
    where each rank holds only its shard. Equal on every rank = the replicas did not diverge."""
    import torch
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return None
    digest = hashlib.sha256()
    for name, param in sorted(accelerator.unwrap_model(model).named_parameters()):
        digest.update(f"{name}:{param.dtype}:{tuple(param.shape)}".encode())
        digest.update(param.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def exit_if_in_group(code: int) -> None:
    """End a process that joined a process group with `code`, skipping interpreter teardown.

    Gloo's worker threads drop a finished collective's tensors after the caller has its result,
    and dropping one takes the GIL. When that lands during interpreter finalisation the thread is
    ended by a forced unwind through a C++ destructor, and the process aborts ("terminate called
    without an active exception", SIGABRT; a core of a 2-process GRPO run showed
    `~AsyncAllgatherWork` in `ProcessGroupGloo::runLoop`, about 1 run in 30). Destroying the group
    does not stop those threads: a DistributedDataParallel wrapper keeps the backend alive past its
    own life (measured on torch 2.13). So a process in a group ends as SIGKILL would end it, which
    is safe for the reason resumption is (checkpoints and outputs are written atomically, and the
    command has closed its logs); a process in no group returns and ends normally."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for a command that did not
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def is_main_process() -> bool:
    """Whether this process prints the run's result line (after training: the state exists)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def per_rank(accelerator, mine) -> list:
    """Every process's `mine`, in rank order (one collective; no collective in a world of 1)."""
    if accelerator.num_processes == 1:
        return [mine]
    from accelerate.utils import gather_object

    return gather_object([mine])


def gather_fingerprints(accelerator, model) -> list[str | None]:
    """Every rank's `weights_fingerprint`, in rank order."""
    return per_rank(accelerator, weights_fingerprint(accelerator, model))


def gather_by_rank(accelerator, items: list[int]) -> list[list[int]]:
    """Each process's own item indices for this step, in rank order."""
    return per_rank(accelerator, list(items))


def total_counts(by_rank: list[dict[str, int]]) -> dict[str, int]:
    """Counts by reason (skips), one dict per process, summed."""
    total: dict[str, int] = {}
    for mine in by_rank:
        for key, n in mine.items():
            total[key] = total.get(key, 0) + n
    return total


def sum_counts(accelerator, counts: dict[str, int]) -> dict[str, int]:
    """Per-process counts (skips by reason) summed over every process."""
    return counts if accelerator.num_processes == 1 else total_counts(per_rank(accelerator, counts))


# Per process: the plain copy an FSDP2 policy samples from, by id of the sharded model.
_sampling_copies: dict[int, object] = {}


@contextlib.contextmanager
def sampling_policy(accelerator, model):
    """The policy as a module a rank can run alone, for as many forwards as its rollouts need.
    Enter it on every rank the same number of times (it is one collective under FSDP).

    DDP/one process: the unwrapped model. FSDP2 (`fully_shard`): a plain copy on this rank,
    refreshed from the shards on entry (one full all-gather); sampling through FSDP2's own forward
    would all-gather every unit on every forward, and ranks whose rollouts differ in length would
    wait on each other forever. FSDP1: `summon_full_params` (untested, no GPU here)."""
    import torch
    from torch.distributed.fsdp import FSDPModule

    unwrapped = accelerator.unwrap_model(model)
    if isinstance(unwrapped, FSDPModule):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(unwrapped, options=StateDictOptions(full_state_dict=True))
        copy = _sampling_copies.get(id(unwrapped))
        if copy is None:  # the model's own class, built once per process on this rank's device
            plain = next(c for c in type(unwrapped).__mro__[1:] if not issubclass(c, FSDPModule))
            with torch.device(accelerator.device):
                copy = plain(unwrapped.config).eval().requires_grad_(False)
            _sampling_copies[id(unwrapped)] = copy
        copy.load_state_dict(full)
        del full
        yield copy
        return
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            yield unwrapped
        return
    yield unwrapped
