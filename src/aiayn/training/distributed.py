"""Distributed training on PyTorch's own engine (torchrun + DistributedDataParallel or FSDP).

``torchrun --nproc_per_node=N -m aiayn train ...`` (or several machines with torchrun's rendezvous)
starts N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in their environment. :func:`setup`
reads them, joins the process group (gloo on CPU, NCCL on GPU) and returns a :class:`DistContext`.
Each rank trains on its own shard of the length-bucketed batches (see
:class:`aiayn.data.batching.TokenBatchSampler`), DDP averages the gradients, and only rank 0 writes
checkpoints, metrics and the progress bar. Without torchrun everything runs as one process.
With ``--fsdp`` the model is sharded with FSDP2 instead of wrapped in DDP (see the FSDP section below).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

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


# ---- FSDP ------------------------------------------------------------------------------------------
#
# ``--fsdp`` shards the parameters, gradients and optimizer state over the ranks with PyTorch's FSDP2
# (``torch.distributed.fsdp.fully_shard``) instead of replicating them with DDP: every encoder and
# decoder layer is its own unit (gathered just for its forward/backward), the embeddings and output
# projection share the root unit. Checkpoints stay ordinary whole-model files: the trainer gathers
# the full state to rank 0 (see :class:`aiayn.training.trainer.Trainer`), which evaluates and saves
# through a plain copy of the model (:func:`plain_replica`).


def fully_shard_model(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Shard ``model`` in place with FSDP2, each Encoder/DecoderLayer apart, then the root.

    FSDP2 replaces the parameters with sharded ones (DTensors), so ``optimizer``'s parameter groups
    are pointed at the new parameters (same order, same settings); it must not have state yet.

    Returns:
        The parameter names of each of ``optimizer``'s groups, in order (what the full optimizer
        state dict is keyed by).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from ..layers import DecoderLayer, EncoderLayer

    if optimizer.state:
        raise ValueError("shard the model before the optimizer takes a step")
    names = {id(p): n for n, p in model.named_parameters()}
    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for module in model.modules():
        if isinstance(module, (EncoderLayer, DecoderLayer)):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if hasattr(model, "logits_at"):  # training scores some positions only (training/forward.py)
        register_fsdp_forward_method(model, "logits_at")
    params = dict(model.named_parameters())
    groups = []
    for group in optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        group["params"] = [params[n] for n in group_names]
        groups.append(group_names)
    return groups


def plain_replica(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters live on the meta device (no memory), ties kept.

    Buffers are copied for real (they are small, and the non-persistent ones, such as positional
    tables, are in no state dict). :func:`materialize` gives it storage to load a state dict into.
    """
    memo = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
        for p in model.parameters()
    }
    return copy.deepcopy(model, memo)


def materialize(replica: nn.Module, device: torch.device | str) -> nn.Module:
    """Give ``replica``'s parameters fresh (uninitialized) storage on ``device``; tied ones stay tied.

    ``device="meta"`` frees it again.
    """
    fresh: dict[int, nn.Parameter] = {}
    for module in replica.modules():
        for key, p in module._parameters.items():
            if p is None:
                continue
            if id(p) not in fresh:
                fresh[id(p)] = nn.Parameter(torch.empty_like(p, device=device), p.requires_grad)
            module._parameters[key] = fresh[id(p)]
    return replica
