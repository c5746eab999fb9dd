"""How training calls a model through the wrappers that see only ``forward``.

Every model's ``forward`` returns logits of one shape, and scoring only some positions is its
``logits_at`` method (see :mod:`aiayn.models`). DistributedDataParallel and ``torch.compile`` wrap
``forward`` alone: a loss calling ``wrapper.model.logits_at`` directly would skip DDP's gradient
synchronisation and the compiled graph. So the trainer wraps the model in :class:`TrainingForward`,
whose one ``forward`` reaches both methods, and losses call :func:`logits_at`, which goes through
whatever wraps the model. (FSDP2 shards the model in place instead; it learns of ``logits_at``
through ``register_fsdp_forward_method``, see :mod:`aiayn.training.distributed`.)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class TrainingForward(nn.Module):
    """``model`` as training calls it: ``(*inputs)`` is its ``forward``, ``(*inputs, where=W)``
    its ``logits_at``. Holds no parameters of its own; checkpoints save ``model`` itself.

    Args:
        model: any aiayn model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any, where: Tensor | None = None, **options: Any) -> Tensor:
        if where is None:
            return self.model(*inputs, **options)
        return self.model.logits_at(*inputs, where=where, **options)


def logits_at(model: nn.Module, *inputs: Any, where: Tensor, **options: Any) -> Tensor:
    """``model.logits_at(*inputs, where=where, **options)`` for a plain model, and the same call
    through the trainer's wrappers (``TrainingForward``, DDP, ``torch.compile``) for a wrapped one."""
    if isinstance(model, TrainingForward) or not hasattr(model, "logits_at"):
        return model(*inputs, where=where, **options)
    return model.logits_at(*inputs, where=where, **options)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside the trainer's wrappers (for a pass that needs its parts, such as guided
    attention reading the cross-attention weights)."""
    while True:
        if isinstance(model, TrainingForward):
            model = model.model
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif type(model).__name__ == "DistributedDataParallel":
            model = model.module
        else:
            return model
