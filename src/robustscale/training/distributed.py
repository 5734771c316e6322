"""DDP helpers: a run launched with ``torchrun --nproc_per_node=N -m robustscale train ...``, by
``robustscale train --procs-per-node N`` (:mod:`robustscale.training.launch`) or as a Slurm job of N tasks per node
(:mod:`robustscale.sweep.worker`) trains on all its processes (NCCL on GPUs, gloo on CPUs), each taking a slice of
every global batch. Every launcher describes the group the same way, in torchrun's environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Only rank 0
writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch._dynamo  # before any process group: see below
import torch.distributed as dist

# torch imports its compiler (torch._dynamo) the first time a function it wraps in `torch._disable_dynamo` runs: the
# first meta-device op, FlopCounterMode, the first backward; here the model check and the FLOP count, which a rank
# runs after it joined its group. Imported then, with a gloo group alive, a rank of a two-process
# `robustscale eval --procs-per-node 2` aborted at exit ("terminate called without an active exception", SIGABRT)
# in 2-3 of 10 runs; imported first, as it was while timm imported it, in none of 20 (2026-12-07).


@dataclass(frozen=True)
class DDPLayout:
    """The processes one run trains on: ``nodes`` machines x ``procs_per_node`` processes each (one per GPU on a GPU
    machine), all in one process group; the global batch (``data.batch_size``) is split between them."""

    nodes: int = 1
    procs_per_node: int = 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this call created the process group, so its caller destroys it (cleanup)
    local_world_size: int = 1  # ranks on this node

    @property
    def nodes(self) -> int:
        """Machines the group spans (every node runs ``local_world_size`` ranks, as torchrun and Slurm start them)."""
        return max(1, self.world_size // max(1, self.local_world_size))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


STORE_ENV = "ROBUSTSCALE_GROUP_STORE"  # a FileStore path: the group meets there instead of at MASTER_ADDR:PORT


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes in the environment (a no-op for a single process): at
    ``MASTER_ADDR:MASTER_PORT`` (a TCPStore), or in the file store ``ROBUSTSCALE_GROUP_STORE`` names (a group
    :mod:`robustscale.training.launch` started on this machine: nothing listens on the network)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        store = os.environ.get(STORE_ENV)
        if store:
            dist.init_process_group(backend=backend, init_method=f"file://{store}", rank=rank, world_size=world)
        else:
            dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, owns, local_world)


def rank_env(rank: int, world_size: int, local_rank: int, local_world_size: int, master_addr: str,
             master_port: int, store: str | None = None) -> dict[str, str]:
    """torchrun's description of one rank of a process group, as environment variables (what
    :func:`init_distributed` reads); ``store``: a FileStore path the group meets in instead of the TCP address."""
    env = {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank),
           "LOCAL_WORLD_SIZE": str(local_world_size), "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}
    return {**env, STORE_ENV: store} if store else env


def is_main_process() -> bool:
    """Rank 0 (or not distributed): the one process that writes, also before or after the group exists."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def device_for(info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a collective; ``obj`` itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (a collective; ``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank, in place: the ranks then hold the same weights
    to evaluate together. DDP keeps the parameters equal, but each rank's forward moves its running statistics with
    its own part of the batch (and an EMA of the weights averages those), while rank 0's are the ones saved. A no-op
    in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group: a gloo group left to the interpreter's exit can abort the process (SIGABRT,
    "terminate called without an active exception") after the work is done."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
