"""Distributed data parallel training on PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m aiayn train ...`` (or several machines with torchrun's rendezvous)
starts N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in their environment. :func:`setup`
reads them, joins the process group (gloo on CPU, NCCL on GPU) and returns a :class:`DistContext`.
Each rank trains on its own shard of the length-bucketed batches (see
:class:`aiayn.data.batching.TokenBatchSampler`), DDP averages the gradients, and only rank 0 writes
checkpoints, metrics and the progress bar. Without torchrun everything runs as one process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, value: float | int) -> float:
        """Sum a number over all ranks (every rank gets the result)."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun; a single-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    log.info("rank %d of %d joined (%s)", rank, world_size, dist.get_backend())
    return DistContext(rank, world_size, local_rank)


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each rank on a GPU of its own; CPU ranks share the CPU."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
