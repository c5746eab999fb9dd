"""Scheduled sampling (Bengio et al., 2015) for a parallel (Transformer) decoder.

Shapes: B batch, T target length, V target vocabulary.

Teacher forcing trains the decoder on the true previous tokens, but at inference it reads its own,
so early mistakes compound ("exposure bias"). Scheduled sampling feeds the decoder, at each
position, the true previous token with probability ``eps_i`` and the model's own prediction
otherwise, with ``eps_i`` decaying over training step ``i`` (paper section 2.4):

* linear: ``eps_i = max(eps_min, k - c·i)``
* exponential: ``eps_i = k^i`` (``k < 1``)
* inverse sigmoid: ``eps_i = k / (k + exp(i / k))`` (``k >= 1``)

An RNN makes its predictions one step at a time. A Transformer decoder computes every position in
one pass, so the predictions come from a first, teacher-forced pass without gradients (as in
Mihaylova & Martins, 2019; Duckworth et al., 2019): its argmax at position ``t`` is the model's guess
of token ``t + 1``. The mixed sequence is the decoder input of the second pass, which trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "SCHEDULES",
    "ScheduledSampling",
    "exponential_decay",
    "inverse_sigmoid_decay",
    "linear_decay",
    "mix_decoder_input",
]


def linear_decay(step: int, k: float = 1.0, c: float = 1e-3, eps_min: float = 0.0) -> float:
    """``max(eps_min, k - c·step)``: teacher-forcing probability falling by ``c`` per step."""
    return max(eps_min, k - c * step)


def exponential_decay(step: int, k: float = 0.999) -> float:
    """``k^step`` with ``0 < k < 1``."""
    return k**step


def inverse_sigmoid_decay(step: int, k: float = 200.0) -> float:
    """``k / (k + exp(step / k))`` with ``k >= 1``; stays near 1 for about ``k·ln(k)`` steps."""
    # exp overflows beyond ~709; the probability is 0 to double precision long before that.
    z = step / k
    return 0.0 if z > 700 else k / (k + math.exp(z))


#: name -> schedule function of the step and its keyword parameters
SCHEDULES: dict[str, Callable[..., float]] = {
    "linear": linear_decay,
    "exponential": exponential_decay,
    "inverse-sigmoid": inverse_sigmoid_decay,
}


@dataclass(frozen=True)
class ScheduledSampling:
    """A named decay schedule of the teacher-forcing probability, with its parameters.

    Attributes:
        kind: ``linear``, ``exponential``, ``inverse-sigmoid``, or ``constant`` (``k`` every step).
        k: the schedule's ``k`` (the start value for linear, the base for exponential, the
            steepness for inverse sigmoid, the probability for constant).
        c: the linear slope per step.
        eps_min: the linear floor.
    """

    kind: str = "inverse-sigmoid"
    k: float | None = None
    c: float = 1e-3
    eps_min: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in (*SCHEDULES, "constant"):
            choices = ", ".join((*SCHEDULES, "constant"))
            raise ValueError(f"scheduled sampling kind must be one of {choices}, got {self.kind!r}")
        if self.kind == "exponential" and self.k is not None and not 0 < self.k < 1:
            raise ValueError(f"exponential decay needs 0 < k < 1, got {self.k}")
        if self.kind == "inverse-sigmoid" and self.k is not None and self.k < 1:
            raise ValueError(f"inverse-sigmoid decay needs k >= 1, got {self.k}")
        if self.kind == "constant" and self.k is not None and not 0 <= self.k <= 1:
            raise ValueError(f"a constant probability must lie in [0, 1], got {self.k}")

    def probability(self, step: int) -> float:
        """Teacher-forcing probability ``eps`` at training ``step`` (0-based)."""
        if self.kind == "constant":
            return 1.0 if self.k is None else self.k
        if self.kind == "linear":
            return linear_decay(step, 1.0 if self.k is None else self.k, self.c, self.eps_min)
        if self.kind == "exponential":
            return exponential_decay(step, 0.999 if self.k is None else self.k)
        return inverse_sigmoid_decay(step, 200.0 if self.k is None else self.k)


def mix_decoder_input(
    logits: Tensor,
    tgt_in: Tensor,
    teacher_prob: float,
    tgt_key_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The second pass's decoder input: each true token kept with probability ``teacher_prob``,
    otherwise replaced by the first pass's prediction of it.

    Args:
        logits: ``(B, T, V)`` from the teacher-forced first pass; position ``t`` predicts token
            ``t + 1`` of the decoder input.
        tgt_in: ``(B, T)`` true decoder input (``<bos>`` + target tokens, right-padded).
        teacher_prob: probability of keeping each true token (1 = teacher forcing, 0 = only the
            model's own predictions).
        tgt_key_mask: ``(B, T)`` True at real positions; padding stays padding.
        generator: random source for the coin flips (deterministic runs).

    Returns:
        ``(B, T)`` decoder input; position 0 is always the true ``<bos>``.
    """
    B, T = tgt_in.shape
    predicted = logits.argmax(-1)  # (B, T): guess of the next token
    predicted = torch.cat([tgt_in[:, :1], predicted[:, :-1]], dim=1)  # (B, T): aligned to inputs
    coins = torch.rand(B, T, device=tgt_in.device, generator=generator)
    keep = coins < teacher_prob  # (B, T)
    keep[:, 0] = True
    if tgt_key_mask is not None:
        keep |= ~tgt_key_mask
    return torch.where(keep, tgt_in, predicted)


def seq2seq_loss(
    model: nn.Module,
    src: Tensor,
    tgt_in: Tensor,
    tgt_out: Tensor,
    src_key_mask: Tensor,
    tgt_key_mask: Tensor,
    step: int,
    label_smoothing: float = 0.0,
    scheduled_sampling: ScheduledSampling | None = None,
    guided_attention: float = 0.0,
) -> tuple[Tensor, int]:
    """Summed training loss of an encoder-decoder batch, with the notes' optional variants.

    Args:
        model: an encoder-decoder returning ``(B, T, V)`` logits from ``model(src, tgt_in, mask)``
            and only some of them from ``logits_at`` (or the trainer's wrapper of one, see
            :mod:`aiayn.training.forward`); guided attention also needs ``encode``/``embed_target``/``decoder``/``lm_head`` (the
            :class:`~aiayn.models.seq2seq.Transformer`). The trainer's wrappers are
            unwrapped for the guided pass (which then bypasses DDP's gradient hooks: single process).
        src: ``(B, S)`` source ids; tgt_in/tgt_out ``(B, T)`` decoder input and target.
        src_key_mask: ``(B, S)``; tgt_key_mask ``(B, T)``: True at real tokens.
        step: optimizer steps done (the schedules' ``i``).
        label_smoothing: epsilon of the label-smoothed cross-entropy.
        scheduled_sampling: mix the model's own predictions into the decoder input (two passes).
        guided_attention: weight of the guided-attention penalty (0 = off, no extra cost).

    Returns:
        ``(summed loss, target tokens)``; the guided penalty is scaled by the token count so the
        trainer's division by tokens leaves ``weight × mean penalty``.
    """
    from .forward import logits_at, unwrap
    from .losses import guided_attention_loss, label_smoothed_cross_entropy

    if scheduled_sampling is not None:
        prob = scheduled_sampling.probability(step)
        if prob < 1.0:
            with torch.no_grad():
                first = model(src, tgt_in, src_key_mask)  # (B, T, V), teacher forced
            tgt_in = mix_decoder_input(first, tgt_in, prob, tgt_key_mask)
    if guided_attention <= 0:
        # Logits only at real target tokens: padding would cost output-layer work and be ignored.
        logits = logits_at(model, src, tgt_in, src_key_mask, where=tgt_key_mask)  # (N, V)
        return label_smoothed_cross_entropy(logits, tgt_out[tgt_key_mask], label_smoothing)
    inner = unwrap(model)
    memory = inner.encode(src, src_key_mask)  # (B, S, D)
    x, _, cross = inner.decoder(
        inner.embed_target(tgt_in), memory, memory_key_mask=src_key_mask, need_weights=True
    )
    logits = inner.lm_head(x)  # (B, T, V)
    loss, tokens = label_smoothed_cross_entropy(logits, tgt_out, label_smoothing)
    tgt_len, src_len = tgt_key_mask.sum(1), src_key_mask.sum(1)  # (B,), (B,)
    penalty = torch.stack([guided_attention_loss(w, tgt_len, src_len) for w in cross]).mean()
    return loss + guided_attention * penalty * tokens, tokens
