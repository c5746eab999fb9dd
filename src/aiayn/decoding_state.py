"""What one incremental decoding run keeps between its steps.

A decoder stack decoding one token at a time needs, per layer, the keys and values seen so far
(:class:`~aiayn.attention.LayerCache`: tensors only) and, for speed, the layer's lean one-token step:
a function with the layer's weights captured once (float tensors, or packed int8 ones under
``--quantize int8``: see ``aiayn.attention.linear_op`` and ``DecoderLayer.make_step``), built on the
first step of the run and dropped with it. :class:`DecodingState` holds both, so the caches stay plain
keys and values and nothing in a module changes while it decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import Tensor

from .attention import LayerCache

#: ``step(x (B, D), key_mask, memory_key_mask, positions) -> (B, D)``: one layer, one token per row
LayerStep = Callable[[Tensor, Tensor | None, Tensor | None, Tensor | None], Tensor]


class DecodingState:
    """Per-layer caches and step functions of one decoding run (what ``model.new_cache()`` returns).

    Indexing and iterating give the layers' :class:`~aiayn.attention.LayerCache` objects.

    Args:
        caches: one empty cache per decoder layer.
    """

    def __init__(self, caches: list[LayerCache]) -> None:
        self.caches = caches
        #: the layers' one-token steps, built on the first step (None until then)
        self.steps: list[LayerStep] | None = None

    def __getitem__(self, index: int) -> LayerCache:
        return self.caches[index]

    def __len__(self) -> int:
        return len(self.caches)

    def __iter__(self) -> Iterator[LayerCache]:
        return iter(self.caches)

    @property
    def length(self) -> int:
        """Tokens decoded so far (the self-attention caches' length)."""
        return self.caches[0].self_attn.length if self.caches else 0

    def reorder(self, index: Tensor, sentences: Tensor | None = None) -> None:
        """Keep rows ``index`` of every self-attention cache (beam search: each surviving
        hypothesis's parent) and, when given, rows ``sentences`` of the cross-attention caches
        (one row per source sentence; finished sentences leave). The step functions read the
        caches afresh at every call, so they stay valid."""
        for cache in self.caches:
            cache.reorder(index, sentences)
