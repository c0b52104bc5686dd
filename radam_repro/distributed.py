"""Data parallelism inside one run: DistributedDataParallel, one process per device.

Three ways to get the processes, one code path once they run::

    python -m radam_repro trainer.devices=N ...          # spawns N local processes itself
    torchrun --nproc_per_node=N -m radam_repro ...       # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    a SLURM job step with N tasks (submitit or srun)     # SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID

nccl on GPU (rank -> ``cuda:LOCAL_RANK``), gloo on CPU. Every rank builds the same task and walks
the same global batches; rank r trains on ``task.shard(batch, r, W)``. DDP averages gradients, so
with shard losses L_r normalised as the task's ``shard`` documents, the update uses
(1/W)·Σ_r ∇L_r = ∇L of the global batch, as a single process would. Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# Ranks other than 0 wait this long at a barrier while rank 0 evaluates.
COLLECTIVE_TIMEOUT = timedelta(hours=1)
# Modules whose parameters a step may not use: an adaptive softmax's tail clusters get no gradient
# on a rank whose shard has no target in them.
CONDITIONAL_MODULES = (nn.AdaptiveLogSoftmaxWithLoss,)


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """``trainer.device``: auto (cuda if present) | cpu | cuda | cuda:N; a DDP rank on GPU uses ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name} but CUDA is not available here; use trainer.device=cpu or auto")
    if device.type == "cuda" and local_rank is not None:  # modulo: a task given one GPU sees it as cuda:0
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def launched_rank() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when a launcher started this process as one of several, else None.

    torchrun (and :func:`spawn`) export RANK/WORLD_SIZE/LOCAL_RANK and MASTER_ADDR/PORT. A submitit
    job (SLURM or local executor) gets them from submitit's ``TorchDistributedEnvironment``; a plain
    ``srun`` step from SLURM_PROCID/SLURM_STEP_NUM_TASKS/SLURM_LOCALID, master = the job's first
    node and port chosen from the job id as submitit does. A batch script without ``srun`` is one
    process whatever ``--ntasks`` says.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world, local = (int(os.environ.get(k, "0")) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    elif os.environ.get("SUBMITIT_EXECUTOR"):
        from submitit.helpers import TorchDistributedEnvironment

        job = TorchDistributedEnvironment()
        if job.world_size == 1:
            return None
        job.export(set_cuda_visible_devices=False, overwrite=True)
        rank, world, local = job.rank, job.world_size, job.local_rank
    elif int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:  # an srun step (a batch script has SLURM_NTASKS only)
        from submitit.slurm.slurm import SlurmJobEnvironment

        job = SlurmJobEnvironment()
        os.environ.setdefault("MASTER_ADDR", job.hostnames[0])
        os.environ.setdefault("MASTER_PORT", str(random.Random(job.job_id).randint(20000, 60000)))
        rank, world, local = job.global_rank, int(os.environ["SLURM_STEP_NUM_TASKS"]), job.local_rank
    else:
        return None
    return (rank, world, local) if world > 1 else None


def must_spawn(devices: int) -> bool:
    """``trainer.devices=N>1`` outside any launcher: this process starts the N rank processes itself."""
    if devices < 1:
        raise ValueError(f"trainer.devices={devices}: use 1 (one process) or N > 1 (DDP over N devices)")
    return devices > 1 and launched_rank() is None


def spawn(fn: Callable[..., Any], devices: int, device_name: str, *args: Any) -> None:
    """Run ``fn(*args)`` in ``devices`` local processes that see torchrun's variables (rank = index)."""
    if pick_device(device_name).type == "cuda" and devices > torch.cuda.device_count():
        raise ValueError(
            f"trainer.devices={devices} but {torch.cuda.device_count()} CUDA devices are visible; "
            "lower trainer.devices, or set trainer.device=cpu for gloo processes on the CPU"
        )
    with socket.socket() as probe:  # a free port on loopback for rank 0's rendezvous store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_as_rank, args=(devices, port, fn, args), nprocs=devices)


def _as_rank(index: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        RANK=str(index),
        LOCAL_RANK=str(index),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    fn(*args)


@dataclass
class Ranks:
    """This process's place in the run and the collectives the loop needs (no-ops for one process)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """``[obj of rank 0, ..., obj of rank W-1]`` on rank 0, None elsewhere (tensors moved to the CPU)."""
        obj = to_cpu(obj)
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.sum(tensor) / self.world

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks, reduced on rank 0 and broadcast: the same bits on every rank,
        so decisions taken from it (divergence) agree everywhere."""
        if self.world == 1:
            return tensor
        tensor = tensor.clone()
        dist.reduce(tensor, dst=0)
        dist.broadcast(tensor, src=0)
        return tensor

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP for several ranks (parameters broadcast from rank 0, gradients averaged in backward).

        DDP looks for parameters left without gradient by a step only in models that can leave
        some (:data:`CONDITIONAL_MODULES`); elsewhere the search would cost a graph walk per step.
        """
        if self.world == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        unused = any(isinstance(m, CONDITIONAL_MODULES) for m in model.modules())
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)


@contextmanager
def process_group(device_name: str, devices: int) -> Iterator[Ranks]:
    """The process group of a launched rank (torchrun / SLURM / :func:`spawn`), or a single process."""
    rank, world, local_rank = launched_rank() or (0, 1, None)
    if devices > 1 and devices != world:
        raise ValueError(
            f"trainer.devices={devices} but the launcher started {world} processes; "
            f"set trainer.devices={world} (or leave it at 1 under a launcher)"
        )
    device = pick_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the current device: rng_state(), gather_object
    if world == 1:
        yield Ranks(device)
        return
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )
    try:
        yield Ranks(device, rank, world)
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The RNG seed of rank ``rank`` > 0 after the model is built: dropout masks independent across shards."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def shard_rows(batch: Any, rank: int, world: int, dim: int = 0) -> Any:
    """Slice ``rank`` of ``world`` equal slices along ``dim`` of every tensor in a (nested) tuple/list/dict.

    Non-tensors pass unchanged. A size that does not divide by ``world``, or a tensor without
    ``dim`` (a 0-d total such as a token count), is an error: the task must say how it splits.
    """
    if isinstance(batch, torch.Tensor):
        if batch.dim() <= dim:
            raise ValueError(
                f"a {batch.dim()}-d tensor in the batch has no dim {dim} to split over {world} "
                "processes; override the task's shard() to say how it splits"
            )
        size = batch.size(dim)
        if size % world:
            raise ValueError(
                f"a batch of {size} along dim {dim} does not split evenly over {world} processes; "
                "make the task's batch size a multiple of trainer.devices"
            )
        return batch.narrow(dim, rank * size // world, size // world).contiguous()
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_rows(x, rank, world, dim) for x in batch)
    if isinstance(batch, dict):
        return {key: shard_rows(x, rank, world, dim) for key, x in batch.items()}
    return batch


def to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_cpu(x) for x in obj)
    if isinstance(obj, dict):
        return {key: to_cpu(x) for key, x in obj.items()}
    return obj
