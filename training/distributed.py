"""Data-parallel training over processes started by torchrun: NCCL on GPUs, gloo on CPUs, one or many nodes.

Gradients are averaged with one all-reduce of a flat buffer per network and optimiser step (after all
accumulation rounds), which also works for the double-backward regularisers.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Iterable

import torch
import torch.distributed as dist

from CircleOfWillisGANLib.precision import resolve_device


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_process_group(device: str = "auto") -> ProcessGroup:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessGroup(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return ProcessGroup(rank, world, local_rank, dev)


def shutdown(group: ProcessGroup) -> None:
    """Leave the process group (no-op when running alone)."""
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], group: ProcessGroup) -> None:
    """Average the gradients of `params` over all processes (missing gradients count as zero)."""
    if not group.distributed:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= group.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
        offset += n


def all_reduce_sum(values: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Sum a small tensor over all processes (one all-reduce on the process's device, as NCCL needs); returns
    it as float64 on the CPU."""
    t = values.detach().to(group.device, torch.float64)
    if group.distributed:
        dist.all_reduce(t)
    return t.cpu()


def barrier(group: ProcessGroup) -> None:
    """Wait for every process (no-op when running alone)."""
    if group.distributed:
        dist.barrier()
