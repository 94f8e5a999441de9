"""Several processes working as one (``torchrun``): who this process is, and the few collective
operations the trainer and the cohort runner need. Without ``torchrun`` every operation is the
identity, so single-process code calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Rank and world size of this process (``world_size == 1`` without distribution)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def any(self, flag: bool, device: torch.device) -> bool:
        """``flag`` or-ed over every process (so all ranks take the same branch)."""
        value = torch.tensor([1.0 if flag else 0.0])
        if self.active:
            value = value.to(device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, value: float, device: torch.device) -> float:
        """``value`` averaged over every process."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item() / self.world_size)

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (``[obj]`` without distribution)."""
        if not self.active:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every replica rank 0's buffers (DDP syncs parameters, not e.g. the last BatchNorm statistics)."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)


def distributed_context() -> DistributedContext:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE > 1``): NCCL with CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def device_for_rank(spec: str, context: DistributedContext) -> torch.device:
    """This process's device: ``resolve_device(spec)``, or ``cuda:LOCAL_RANK`` on CUDA under ``torchrun``.

    Raises ``ValueError`` (one sentence) for an unknown or missing device.
    """
    from nslfcore.inference.devices import resolve_device

    device = resolve_device(spec)
    if device.type == "cuda":
        if context.world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", context.rank)))
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"{device}: only {torch.cuda.device_count()} CUDA device(s) are present.")
    return device
