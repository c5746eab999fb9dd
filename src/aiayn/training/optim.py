"""The optimizers of every ``aiayn train`` command, written once.

* :func:`paper_adam` — the encoder-decoder's: Adam with beta1 0.9, beta2 0.98, eps 1e-9 (the paper,
  section 5.3).
* :func:`adamw` — GPT's, BERT's and ViT's: AdamW with weight decay on matrices (linear maps,
  embeddings, patch projections) and none on biases and norm gains. Decaying a bias or a LayerNorm gain
  only pulls it towards an arbitrary 0; the split by ``p.dim()`` is GPT-2's, BERT's and nanoGPT's. Tied
  parameters (an output layer sharing the embedding) are counted once, and every parameter sits in
  exactly one group (asserted).
"""

from __future__ import annotations

import torch
from torch import nn


def paper_adam(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam(0.9, 0.98, 1e-9), as in the paper (section 5.3)."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: matrices with ``weight_decay``, vectors (biases, gains) without."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}  # tied weights once
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    grouped = {id(p) for p in decay} | {id(p) for p in no_decay}
    assert grouped == set(params) and len(decay) + len(no_decay) == len(params), (
        "every parameter must sit in exactly one weight-decay group"
    )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`decay_groups`; the fused (single-kernel) implementation where torch has one."""
    groups = decay_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
