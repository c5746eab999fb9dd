"""Dynamic int8 quantisation for CPU inference (``--quantize int8``).

:func:`quantize_int8` replaces every ``nn.Linear`` of a model by an :class:`Int8Linear`: the weight
quantised once to int8 with one scale per output row (symmetric, per channel), the activations
quantised on the fly per call (one scale per tensor, "dynamic"), the product computed by PyTorch's
own x86 kernel (fbgemm, ``torch.ops.quantized.linear_dynamic``) and returned as float32.

When it pays: on a CPU, when the matrix products dominate: at base size (D = 512) and up, and with
several sentences per batch. The int8 weights are a quarter of the float32 bytes, so a
``(16, 512) x (512, 2048)`` product reads its weights from cache instead of memory, and the integer
kernels do four times the multiply-adds per instruction: 5-10x faster per product at base size.
Each call also pays about 8 µs more than ``F.linear`` (quantising the input, a dispatcher hop), so
small models at batch 1 lose. Measured on one core: base size, batch 16, greedy: 4x faster; the
128-wide zh-en demo model: 1.2x faster at batch 16, 0.85x at batch 1 (``aiayn.bench.bench_quantize``
times the base size). It never runs on a GPU (the kernels are CPU-only).

What is quantised: every Linear, the output layer included. At a realistic vocabulary the output
layer is the largest product of a decoding step (37000 x 512 at base size, about as many
multiply-adds as the six decoder layers together): keeping it float32 leaves base-size greedy
decoding at 1.6x instead of 4x, and quantising it costs no BLEU on the zh-en demo model. Embeddings
stay float32: a lookup reads one row per token, so there is nothing to speed up (int8 embeddings
would only save memory); a tied output layer gets its own int8 copy. Attention itself (softmax of
``Q K^T``, the cache) stays float32: a small share of the time at these lengths.

Accuracy: int8 weights with per-row scales keep about two decimal digits of each weight; the input
of each product is quantised to 7 bits (``reduce_range``, PyTorch's x86 default, because fbgemm's
AVX2 kernels would otherwise saturate their 16-bit pair sums). Logits move by about 0.2% of their
spread on average, 2% at worst; on the zh-en demo model greedy outputs stay identical, beam-4 ones
99.8%, and BLEU is unchanged (measured; ``tests/test_quantize.py`` checks a trained copy model).

PyTorch's eager quantisation API (``torch.ao.quantization.quantize_dynamic``) is deprecated in favour
of torchao, so this module calls the kernels it wraps directly. They take a ``qint8`` weight tensor,
whose creation functions carry a deprecation warning of their own: it is silenced only around
packing, by its message.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .attention import LinearOp
from .errors import AiaynError

__all__ = ["QUANTIZE_CHOICES", "Int8Linear", "quantize_int8", "quantize_model"]

#: The values ``--quantize`` accepts.
QUANTIZE_CHOICES = ("int8",)

#: Quantise activations to 0..127 rather than 0..255: fbgemm's AVX2 kernels add two u8·s8 products
#: in 16 bits, which overflow on 8-bit inputs (PyTorch's x86 default does the same).
REDUCE_RANGE = True

_LINEAR_DYNAMIC = torch.ops.quantized.linear_dynamic


@contextmanager
def _quantized_tensors_allowed() -> Iterator[None]:
    """Silence the deprecation warning of ``qint8`` tensor creation, which the packing kernels
    still need: the warning is about the tensor type, not about these kernels."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized",
            category=UserWarning,
        )
        yield


def _pack(weight: Tensor, scales: Tensor, bias: Tensor | None) -> torch.ScriptObject:
    """A float weight ``(O, I)`` in int8 with one scale per row (symmetric: zero point 0), packed
    for ``linear_dynamic``."""
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with _quantized_tensors_allowed():
        qweight = torch.quantize_per_channel(weight, scales.double(), zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(qweight, bias)


def _unpack(packed: torch.ScriptObject) -> tuple[Tensor, Tensor, Tensor | None]:
    """A packed weight back as its int8 values times their scales (float), the row scales and the
    bias: packing those again with the same scales gives the same int8 values."""
    with _quantized_tensors_allowed():
        qweight, bias = torch.ops.quantized.linear_unpack(packed)
        return qweight.dequantize(), qweight.q_per_channel_scales(), bias


class Int8Linear(nn.Module):
    """An ``nn.Linear`` for inference with int8 weights (one scale per output row) and dynamically
    quantised inputs; float32 in, float32 out. Built from a float ``nn.Linear``, whose weights it
    does not keep.

    The lean decoding steps reach its kernel through :func:`aiayn.attention.linear_op`, which calls
    :meth:`fused_op`: several Int8Linear layers read by one input (Q, K and V) become one packed
    weight, as the float path concatenates its weights.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to("cpu", torch.float32)
        scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127  # each row's largest value -> 127
        bias = None if linear.bias is None else linear.bias.detach().to("cpu", torch.float32)
        self.packed = _pack(weight, scales, bias)
        # Fused packed weights by the layers that follow this one in a group (built on first use,
        # kept: packing costs milliseconds, a decoding run asks for them once per layer).
        self._fused: dict[tuple[Int8Linear, ...], torch.ScriptObject] = {}

    def forward(self, x: Tensor) -> Tensor:
        return _LINEAR_DYNAMIC(x, self.packed, REDUCE_RANGE)

    def fused_op(self, layers: Sequence[nn.Module]) -> LinearOp:
        """``layers`` (this one first), their outputs concatenated, as one ``linear_dynamic``
        call. Rows keep their own scales, so the fused product equals the separate ones."""
        if not all(isinstance(layer, Int8Linear) for layer in layers) or layers[0] is not self:
            raise TypeError("fused_op: every layer must be an Int8Linear, this one first")
        if len(layers) == 1:
            return _LINEAR_DYNAMIC, self.packed, REDUCE_RANGE
        key = tuple(layers[1:])
        packed = self._fused.get(key)
        if packed is None:
            parts = [_unpack(layer.packed) for layer in layers]
            biases = [bias for _, _, bias in parts]
            bias = None if biases[0] is None else torch.cat(biases)
            packed = _pack(
                torch.cat([weight for weight, _, _ in parts]),
                torch.cat([scales for _, scales, _ in parts]),
                bias,
            )
            self._fused[key] = packed
        return _LINEAR_DYNAMIC, packed, REDUCE_RANGE

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _check_quantizable(model: nn.Module) -> None:
    if torch.backends.quantized.engine == "none":
        raise AiaynError("--quantize int8: this PyTorch build has no quantised CPU kernels")
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.device.type != "cpu":
            raise AiaynError(
                f"--quantize int8 runs on the CPU only (the model is on {tensor.device}); "
                "add --device cpu"
            )


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an :class:`Int8Linear` and return
    it, float32 and in eval mode: an inference-only model (no gradients, no state_dict for the
    replaced layers). Pays at base size and a batch of several sentences on a CPU; see the module
    docstring for when it does not.

    Raises:
        AiaynError: the model is not on the CPU, or this PyTorch has no quantised kernels.
    """
    _check_quantizable(model)
    model.float().eval()
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, name, child in targets:
        setattr(parent, name, Int8Linear(child))
    return model


def quantize_model(model: nn.Module, mode: str | None) -> nn.Module:
    """``model`` as ``--quantize MODE`` asks: unchanged for None, :func:`quantize_int8` for
    ``"int8"``."""
    if mode is None:
        return model
    if mode == "int8":
        return quantize_int8(model)
    raise AiaynError(f"--quantize: unknown mode {mode!r} (known: {', '.join(QUANTIZE_CHOICES)})")
