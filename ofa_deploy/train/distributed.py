"""Data-parallel training over ``torchrun`` processes (gloo on CPU, NCCL on GPUs).

Every step runs several sub-networks and accumulates their gradients before one optimizer step,
and each sub-network leaves other weights unused. ``DistributedDataParallel`` would all-reduce
after every backward pass and needs unused-parameter detection for that; instead the gradients
are all-reduced (averaged) once per step after accumulation, which is what the official code does
with Horovod. All ranks start from rank 0's weights and draw the same sub-networks and resolution
from the shared seed; a per-step check confirms it. Rank 0 alone writes files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import torch

from ofa_deploy.errors import OFADeployError


@dataclass
class DistContext:
    """This process's place in a ``torchrun`` run (rank, world size, device), and the collectives training uses."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere."""
        if self.enabled:
            for tensor in module.state_dict().values():
                torch.distributed.broadcast(tensor, 0)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """One flat all-reduce of every gradient (zeros where a rank's sub-networks left one unused)."""
        if not self.enabled:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def check_same(self, description: str) -> None:
        """Fail loudly if the ranks disagree on ``description`` (e.g. the sub-networks of a step)."""
        if not self.enabled:
            return
        digest = int.from_bytes(hashlib.sha256(description.encode()).digest()[:7], "big")
        value = torch.tensor([digest, -digest], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        if int(value[0]) != digest or int(value[1]) != -digest:
            raise OFADeployError(f"rank {self.rank}: ranks sampled different sub-networks ({description[:80]})")

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed() -> DistContext:
    """The context from ``torchrun``'s environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), or a
    single process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistContext(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        backend, device = "nccl", torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        backend, device = "gloo", torch.device("cpu")
    torch.distributed.init_process_group(backend)
    return DistContext(rank=rank, world_size=world, device=device, backend=backend)
