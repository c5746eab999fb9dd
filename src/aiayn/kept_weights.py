"""Tensors derived from a module's weights (concatenated, transposed copies), kept between calls
for as long as the weights stand still.

Decoding multiplies by ``[W_q; W_k; W_v]`` and by transposed copies of small matrices
(:func:`aiayn.attention.rows_linear_op`). Building them for every sentence cost a sixth of a
batch-1 translation of the demo model (96 weight copies for 8 sentences: 17% of the profile), so
they are kept, and rebuilt when a weight may have changed. A weight's version counter moves with
every in-place change through autograd's view of it (``copy_``, ``load_state_dict``, ``add_``
under ``no_grad``, the for-each optimizers), but **not** with fused optimizer kernels (measured:
``AdamW(fused=True).step()`` leaves ``_version`` at 0; the first kept version of this went stale
during training for that reason). So the stamp also holds a count of optimizer steps, bumped by
torch's global optimizer step hook for every step of every torch optimizer, fused or not. The
stamp, per weight: identity, storage address and version counter; plus the optimizer step count
and whether inference mode is on (tensors made in inference mode must not meet autograd).

Not seen (and not done anywhere in aiayn): writes through ``weight.data``, which has a version
counter of its own. Code that edits weights that way between decoding runs calls :func:`forget`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

_optimizer_steps = 0


def _count_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)

#: first layer -> {what was built: (stamp, value)}; gone with the layer.
_kept: weakref.WeakKeyDictionary[nn.Module, dict[Any, tuple[tuple, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _stamp(layers: tuple[nn.Module, ...]) -> tuple:
    weights = []
    for layer in layers:
        for name in ("weight", "bias"):
            t = getattr(layer, name, None)
            if t is not None:
                weights.append((id(t), t.data_ptr(), t._version))
    return (_optimizer_steps, torch.is_inference_mode_enabled(), tuple(weights))


def kept(kind: str, layers: tuple[nn.Module, ...], build: Callable[[], Any]) -> Any:
    """``build()``, or what it returned last time for ``kind`` and these ``layers`` when none of
    their weights can have changed since."""
    key = (kind, tuple(id(layer) for layer in layers))
    stamp = _stamp(layers)
    entries = _kept.setdefault(layers[0], {})
    entry = entries.get(key)
    if entry is not None and entry[0] == stamp:
        return entry[1]
    value = build()
    entries[key] = (stamp, value)
    return value


def forget(module: nn.Module | None = None) -> None:
    """Drop what was kept from the weights of ``module`` or its submodules (None: everything)."""
    if module is None:
        _kept.clear()
        return
    ids = {id(layer) for layer in module.modules()}
    for entries in _kept.values():
        for key in [key for key in entries if ids.intersection(key[1])]:
            del entries[key]
