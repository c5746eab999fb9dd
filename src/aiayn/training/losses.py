"""Training losses.

* :func:`label_smoothed_cross_entropy` — the paper's label smoothing (section 5.4, epsilon = 0.1): the
  target distribution puts ``1 - eps`` on the true token and spreads ``eps`` uniformly over the
  vocabulary, i.e. ``loss = (1 - eps) * NLL + eps * mean_c(-log p_c)``. Padding positions are ignored.
* :func:`guided_attention_loss` — Tachibana et al. (2017): penalise cross-attention far from the
  diagonal, ``W[t, s] = 1 - exp(-(s/S - t/T)^2 / (2 g^2))``, for tasks whose input and output align.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, epsilon: float = 0.1, ignore_index: int = 0
) -> tuple[Tensor, int]:
    """Summed label-smoothed cross-entropy and the number of target tokens it covers.

    Args:
        logits: ``(..., V)`` unnormalised scores.
        target: ``(...)`` true ids; ``ignore_index`` (padding) positions contribute nothing.
        epsilon: smoothing mass (0 = plain cross-entropy).
        ignore_index: the padding id.

    Returns:
        ``(sum of per-token losses, number of non-padding tokens)``; divide to get the mean.
    """
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=ignore_index,
        label_smoothing=epsilon,
        reduction="sum",
    )
    return loss, int((target != ignore_index).sum())


def guided_attention_weights(
    tgt_lengths: Tensor, src_lengths: Tensor, T: int, S: int, g: float = 0.2
) -> Tensor:
    """``(B, T, S)`` penalty map ``1 - exp(-(s/S_b - t/T_b)^2 / (2 g^2))``, zero outside real tokens."""
    t = torch.arange(T, device=tgt_lengths.device, dtype=torch.float32)[None, :, None]
    s = torch.arange(S, device=src_lengths.device, dtype=torch.float32)[None, None, :]
    tl = tgt_lengths.float()[:, None, None].clamp(min=1)
    sl = src_lengths.float()[:, None, None].clamp(min=1)
    weights = 1.0 - torch.exp(-((s / sl - t / tl) ** 2) / (2 * g * g))
    valid = (t < tl) & (s < sl)
    return weights * valid


def guided_attention_loss(
    attention: Tensor, tgt_lengths: Tensor, src_lengths: Tensor, g: float = 0.2
) -> Tensor:
    """Mean penalised attention mass: ``(B, H, T, S)`` cross-attention weights -> scalar.

    Zero for a perfectly diagonal alignment; grows as attention strays from the diagonal.
    """
    B, H, T, S = attention.shape
    w = guided_attention_weights(tgt_lengths, src_lengths, T, S, g)  # (B, T, S)
    per_sentence = (attention * w[:, None]).sum((-1, -2)) / tgt_lengths.clamp(min=1)[:, None]
    return per_sentence.mean()
