"""Activation (gradient) checkpointing of every encoder and decoder layer (``--grad-checkpointing``).

Why: backward needs what each layer's forward computed (its attention and feed-forward
activations), and autograd normally keeps all of it, for every layer, from the forward until
backward reaches that layer: activation memory grows with layers × batch × length, and it is what
stops a larger batch or a longer context from fitting. A checkpointed layer keeps only its inputs;
in backward its forward runs once more to rebuild the rest, so only one layer's activations are
held at a time. The cost: one extra forward of every layer per step (about a third more compute).

How: each :class:`~aiayn.layers.EncoderLayer` and :class:`~aiayn.layers.DecoderLayer` gets, as an
instance attribute, a ``forward`` that runs its class's forward under
``torch.utils.checkpoint.checkpoint(use_reentrant=False)``. The non-reentrant form takes keyword
arguments and non-tensor outputs, works under DDP and FSDP2 (whose hooks stay outside, on the
module call, so the recompute finds the parameters already gathered), and replays the random
state, so dropout draws the same masks again and a run's numbers do not change. Nothing is added
to the model (no module, parameter or buffer): state dicts and checkpoints are the same.

Only while training with gradients enabled: evaluation (eval mode), decoding under
``no_grad``/``inference_mode`` and incremental decoding with a KV cache (which the forward fills
in place, and a recompute would fill twice) run the plain forward.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..attention import LayerCache
from ..layers import DecoderLayer, EncoderLayer

LAYER_TYPES = (EncoderLayer, DecoderLayer)


def _checkpointed_forward(layer: nn.Module, *args: Any, **kwargs: Any) -> Any:
    # type(layer).forward, not a saved bound method: FSDP2 swaps the instance's class for a
    # subclass, and a deep copy (FSDP's plain replica, the planner's trial model) must run its own
    # weights; a method bound with types.MethodType is re-bound to the copy by copy.deepcopy.
    plain = type(layer).forward
    if not (layer.training and torch.is_grad_enabled()) or _has_cache(args, kwargs):
        return plain(layer, *args, **kwargs)
    return checkpoint(plain, layer, *args, use_reentrant=False, **kwargs)


def _has_cache(args: tuple, kwargs: dict) -> bool:
    return any(isinstance(a, LayerCache) for a in (*args, *kwargs.values()))


def is_checkpointed(layer: nn.Module) -> bool:
    forward = layer.__dict__.get("forward")
    return getattr(forward, "__func__", None) is _checkpointed_forward


def enable_checkpointing(model: nn.Module) -> int:
    """Checkpoint every encoder and decoder layer of ``model`` (in place; idempotent).

    Returns:
        How many layers are checkpointed (0: the model has none of aiayn's layers, as the RNN).
    """
    count = 0
    for module in model.modules():
        if isinstance(module, LAYER_TYPES):
            if not is_checkpointed(module):
                module.forward = types.MethodType(_checkpointed_forward, module)
            count += 1
    return count


def disable_checkpointing(model: nn.Module) -> None:
    """Undo :func:`enable_checkpointing`: every layer runs its class's forward again."""
    for module in model.modules():
        if is_checkpointed(module):
            del module.forward
