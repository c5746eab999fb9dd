"""Batching: a token-budget batch sampler with length bucketing, and the seq2seq collate step.

Shape legend: B batch, S source length, T target length (both include the added EOS/BOS).

Conventions fixed here and relied on by the models and the trainer:

- **Source** = tokens + ``<eos>``, no ``<bos>``. The encoder needs no start symbol; the ``<eos>`` tells
  it where the sentence ends (also for the empty sentence, which becomes just ``<eos>``).
- **Target input** ``tgt_in`` = ``<bos>`` + tokens; **target output** ``tgt_out`` = tokens + ``<eos>``:
  the decoder at position t reads ``tgt_in[:, t]`` and is trained to predict ``tgt_out[:, t]``, so
  ``tgt_in[:, 1:] == tgt_out[:, :-1]`` wherever both are real tokens.
- Padding is ``<pad>`` on the right. Masks are boolean and ``True`` marks a real token (aiayn's
  "may attend" convention); ``tgt_key_mask`` marks real positions of both ``tgt_in`` and ``tgt_out``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from aiayn.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from aiayn.errors import ConfigError

__all__ = ["Seq2SeqBatch", "TokenBatchSampler", "collate_seq2seq"]

logger = logging.getLogger(__name__)


class TokenBatchSampler(Sampler[list[int]]):
    """Yields batches of example indices holding at most ``max_tokens`` tokens, padding included.

    Iterate it for each epoch's batches of indices (it is also a ``torch.utils.data.Sampler``, so it
    can serve as a DataLoader's ``batch_sampler``; aiayn collates in the training loop). Each epoch:

    1. Shuffle all indices (``shuffle=True``; otherwise keep dataset order).
    2. Cut them into buckets of ``bucket_size_multiplier`` typical batches each, where a typical batch
       holds ``max_tokens // mean_length`` examples, and sort each bucket by length (stable, so equal
       lengths stay in shuffled order). Sorting inside big buckets keeps padding low while examples of
       all lengths still mix across the epoch.
    3. Cut each sorted bucket greedily into batches with ``len(batch) * max_len_in_batch <= max_tokens``.
       An example longer than ``max_tokens`` becomes a batch on its own rather than being dropped.
    4. Shuffle the order of the batches (``shuffle=True``), so lengths don't drift through the epoch.

    The result depends only on ``(lengths, max_tokens, seed, epoch, bucket_size_multiplier)``: call
    :meth:`set_epoch` before each epoch, as with ``DistributedSampler``, to get a new order.

    Distributed (``world_size > 1``): every rank computes the same batch list; rank ``r`` takes batches
    ``r, r + world_size, r + 2 * world_size, ...``. The last ``len(batches) % world_size`` batches (random
    ones, since batch order is shuffled) are dropped for the epoch so that every rank runs the same number
    of steps (DDP hangs otherwise) and no example is seen twice in an epoch. With ``world_size == 1``
    nothing is dropped: every index appears exactly once per epoch.

    Args:
        lengths: token count of each example, as it will be in the batch. For seq2seq pass
            ``max(len(src) + 1, len(tgt) + 1)`` (the +1 is the added EOS/BOS). Lengths < 1 count as 1.
        max_tokens: token budget per batch (``len(batch) * longest example``).
        shuffle: shuffle examples and batch order (training) or keep a fixed order (evaluation).
        seed: seed shared by all ranks.
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of processes.
        bucket_size_multiplier: typical batches per sorting bucket; larger = less padding, less
            randomness.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        bucket_size_multiplier: int = 100,
    ) -> None:
        super().__init__()
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
        if world_size < 1:
            raise ConfigError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, {world_size}), got {rank}")
        if bucket_size_multiplier < 1:
            raise ConfigError(f"bucket_size_multiplier must be >= 1, got {bucket_size_multiplier}")
        self._lengths = np.maximum(np.asarray(lengths, dtype=np.int64).reshape(-1), 1)
        self.max_tokens = int(max_tokens)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        n = len(self._lengths)
        mean_len = float(self._lengths.mean()) if n else 1.0
        per_batch = max(1, int(self.max_tokens // mean_len))
        self.bucket_size = bucket_size_multiplier * per_batch
        self.epoch = 0
        self._cached_epoch: int | None = None
        self._cached: list[list[int]] = []

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next ``iter``/``len`` use."""
        self.epoch = int(epoch)

    def _all_batches(self, epoch: int) -> list[np.ndarray]:
        """Every batch of the epoch, in order, before sharding across ranks."""
        lengths = self._lengths
        n = len(lengths)
        # SeedSequence wants non-negative entries; the modulus keeps distinct seeds distinct.
        rng = np.random.default_rng([self.seed % 2**64, epoch % 2**64])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches: list[np.ndarray] = []
        for start in range(0, n, self.bucket_size):
            bucket = order[start : start + self.bucket_size]
            bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
            batches.extend(_cut_sorted(bucket, lengths[bucket], self.max_tokens))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        if self._cached_epoch != self.epoch:
            batches = self._all_batches(self.epoch)
            per_rank = len(batches) // self.world_size
            if self.world_size > 1 and per_rank == 0 and batches:
                logger.warning(
                    "%d batches cannot be shared by %d ranks: this epoch is empty",
                    len(batches),
                    self.world_size,
                )
            mine = batches[self.rank : per_rank * self.world_size : self.world_size]
            self._cached = [b.tolist() for b in mine]
            self._cached_epoch = self.epoch
        return self._cached

    def __iter__(self) -> Iterator[list[int]]:
        # Copies, so a consumer that mutates a batch cannot corrupt the cache for a second pass.
        for batch in self._rank_batches():
            yield list(batch)

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (can vary slightly between epochs)."""
        return len(self._rank_batches())


def _cut_sorted(indices: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut length-sorted (non-decreasing) examples greedily into batches within the token budget."""
    batches = []
    i, m = 0, len(indices)
    while i < m:
        # Later examples are no shorter, so a batch starting at i holds at most max_tokens // L[i].
        k_max = max(1, max_tokens // int(lengths[i]))
        window = lengths[i : i + k_max]
        # cost[j] = (j + 1) * window[j] is the padded size of the batch i .. i+j; non-decreasing.
        cost = window * np.arange(1, len(window) + 1)
        k = max(1, int(np.searchsorted(cost, max_tokens, side="right")))
        batches.append(indices[i : i + k])
        i += k
    return batches


@dataclass(frozen=True)
class Seq2SeqBatch:
    """One padded batch for an encoder-decoder model; see the module docstring for conventions.

    Attributes:
        src: (B, S) long, source tokens + EOS, right-padded with PAD.
        tgt_in: (B, T) long, BOS + target tokens (decoder input).
        tgt_out: (B, T) long, target tokens + EOS (what the decoder must predict).
        src_key_mask: (B, S) bool, True at real source tokens.
        tgt_key_mask: (B, T) bool, True at real target positions (same for tgt_in and tgt_out).
        num_tgt_tokens: real tokens in ``tgt_out`` (the loss normalizer).
        num_src_tokens: real tokens in ``src``.
    """

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    src_key_mask: torch.Tensor
    tgt_key_mask: torch.Tensor
    num_tgt_tokens: int
    num_src_tokens: int

    def _map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Seq2SeqBatch:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Seq2SeqBatch:
        """A copy with every tensor on ``device``."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Seq2SeqBatch:
        """A copy in pinned memory; ``DataLoader(pin_memory=True)`` calls this."""
        return self._map_tensors(lambda t: t.pin_memory())

    @property
    def batch_size(self) -> int:
        """B."""
        return self.src.shape[0]


def collate_seq2seq(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> Seq2SeqBatch:
    """Pad ``(source_ids, target_ids)`` pairs into a :class:`Seq2SeqBatch`, masks included.

    Token ids come without BOS/EOS (as ``Tokenizer.encode`` gives them); this adds them: source +
    EOS, BOS + target, target + EOS. Masks come from the lengths, not from the values, so an id equal
    to ``pad_id`` inside a sentence is still a real token.

    Args:
        pairs: one ``(source_ids, target_ids)`` per example; either side may be empty.
        pad_id: padding id.
        bos_id: begin-of-sentence id (target input only).
        eos_id: end-of-sentence id (source and target output).

    Raises:
        ValueError: ``pairs`` is empty.
    """
    if len(pairs) == 0:
        raise ValueError("collate_seq2seq needs at least one pair")
    b = len(pairs)
    src_lens = [len(src) + 1 for src, _ in pairs]  # +1: EOS
    tgt_lens = [len(tgt) + 1 for _, tgt in pairs]  # +1: BOS on input, EOS on output
    s, t = max(src_lens), max(tgt_lens)

    # Concatenate the real tokens of all rows; boolean-mask assignment fills a (B, L) tensor in row-major
    # order, so one copy per tensor places every row, and the same mask is the key mask.
    src_flat: list[int] = []
    tgt_in_flat: list[int] = []
    tgt_out_flat: list[int] = []
    for src, tgt in pairs:
        src_flat.extend(src)
        src_flat.append(eos_id)
        tgt_in_flat.append(bos_id)
        tgt_in_flat.extend(tgt)
        tgt_out_flat.extend(tgt)
        tgt_out_flat.append(eos_id)

    src_key_mask = torch.arange(s) < torch.tensor(src_lens)[:, None]  # (B, S)
    tgt_key_mask = torch.arange(t) < torch.tensor(tgt_lens)[:, None]  # (B, T)
    src_t = torch.full((b, s), pad_id, dtype=torch.long)
    src_t[src_key_mask] = torch.tensor(src_flat, dtype=torch.long)
    tgt_in = torch.full((b, t), pad_id, dtype=torch.long)
    tgt_in[tgt_key_mask] = torch.tensor(tgt_in_flat, dtype=torch.long)
    tgt_out = torch.full((b, t), pad_id, dtype=torch.long)
    tgt_out[tgt_key_mask] = torch.tensor(tgt_out_flat, dtype=torch.long)
    return Seq2SeqBatch(
        src=src_t,
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        src_key_mask=src_key_mask,
        tgt_key_mask=tgt_key_mask,
        num_tgt_tokens=sum(tgt_lens),
        num_src_tokens=sum(src_lens),
    )
