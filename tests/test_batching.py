"""Tests for aiayn.data.batching: token-budget sampler invariants and the seq2seq collate step."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from aiayn.data.batching import Seq2SeqBatch, TokenBatchSampler, collate_seq2seq
from aiayn.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from aiayn.errors import ConfigError


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 60) for _ in range(n)]


def _epoch(sampler: TokenBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


# ----------------------------------------------------------------------------- sampler


def test_sampler_every_index_once_and_budget_respected() -> None:
    lengths = _lengths(2000)
    sampler = TokenBatchSampler(
        lengths, max_tokens=500, shuffle=True, seed=1, bucket_size_multiplier=5
    )
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 500


def test_sampler_bucketing_keeps_padding_low() -> None:
    lengths = _lengths(5000)
    sampler = TokenBatchSampler(lengths, max_tokens=1000, shuffle=True, seed=0)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in sampler)
    assert sum(lengths) / padded > 0.9  # random batching of U(1, 60) would waste about half


def test_sampler_long_example_gets_own_batch() -> None:
    lengths = [5, 5, 1000, 5]
    batches = list(TokenBatchSampler(lengths, max_tokens=20, shuffle=False, seed=0))
    assert [2] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_sampler_deterministic_per_seed_and_epoch() -> None:
    lengths = _lengths(1000)

    def make(seed: int) -> TokenBatchSampler:
        return TokenBatchSampler(lengths, 300, shuffle=True, seed=seed, bucket_size_multiplier=3)

    a, b = make(7), make(7)
    assert _epoch(a, 0) == _epoch(b, 0)
    assert _epoch(a, 3) == _epoch(b, 3)
    assert _epoch(a, 0) != _epoch(a, 1)  # a new epoch is a new order
    assert _epoch(make(7), 0) != _epoch(make(8), 0)
    assert list(a) == list(a)  # iterating twice within an epoch repeats it


def test_sampler_without_shuffle_is_epoch_independent() -> None:
    lengths = _lengths(500)
    sampler = TokenBatchSampler(lengths, 300, shuffle=False, seed=0)
    assert _epoch(sampler, 0) == _epoch(sampler, 5)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_sampler_sharding_disjoint_equal_counts(world_size: int) -> None:
    lengths = _lengths(1000, seed=world_size)
    full = TokenBatchSampler(lengths, 400, shuffle=True, seed=3)
    full.set_epoch(2)
    all_batches = list(full)
    shards = []
    for rank in range(world_size):
        s = TokenBatchSampler(lengths, 400, shuffle=True, seed=3, rank=rank, world_size=world_size)
        s.set_epoch(2)
        shards.append(list(s))
        assert len(shards[-1]) == len(s)
    per_rank = len(all_batches) // world_size
    assert all(len(sh) == per_rank for sh in shards)
    for rank, sh in enumerate(shards):
        assert sh == all_batches[rank : per_rank * world_size : world_size]
    seen = [i for sh in shards for b in sh for i in b]
    assert len(seen) == len(set(seen))  # disjoint: no example twice in an epoch
    # Only the remainder batches (fewer than world_size) are dropped.
    dropped = all_batches[per_rank * world_size :]
    assert len(dropped) < world_size
    assert len(seen) + sum(len(b) for b in dropped) == len(lengths)


def test_sampler_works_as_dataloader_batch_sampler() -> None:
    data = [([1] * n, [2] * n) for n in _lengths(100)]
    lengths = [len(s) + 1 for s, _ in data]
    loader = DataLoader(
        data,
        batch_sampler=TokenBatchSampler(lengths, 200, shuffle=True, seed=0),
        collate_fn=collate_seq2seq,
    )
    batches = list(loader)
    assert all(isinstance(b, Seq2SeqBatch) for b in batches)
    assert sum(b.batch_size for b in batches) == 100
    assert all(b.src.numel() <= 200 for b in batches)


def test_sampler_empty_and_bad_arguments() -> None:
    assert list(TokenBatchSampler([], 100, shuffle=True, seed=0)) == []
    with pytest.raises(ConfigError):
        TokenBatchSampler([1], 0, shuffle=True, seed=0)
    with pytest.raises(ConfigError):
        TokenBatchSampler([1], 10, shuffle=True, seed=0, rank=2, world_size=2)
    with pytest.raises(ConfigError):
        TokenBatchSampler([1], 10, shuffle=True, seed=0, world_size=0)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 50), max_size=120),
    max_tokens=st.integers(1, 200),
    shuffle=st.booleans(),
    seed=st.integers(-(2**40), 2**40),
    epoch=st.integers(0, 100),
    world_size=st.integers(1, 4),
    multiplier=st.integers(1, 5),
)
def test_sampler_invariants_property(
    lengths: list[int],
    max_tokens: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    world_size: int,
    multiplier: int,
) -> None:
    def shard(rank: int) -> list[list[int]]:
        s = TokenBatchSampler(
            lengths, max_tokens, shuffle, seed, rank, world_size, bucket_size_multiplier=multiplier
        )
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        return batches

    shards = [shard(r) for r in range(world_size)]
    assert len({len(sh) for sh in shards}) == 1
    seen = [i for sh in shards for b in sh for i in b]
    assert len(seen) == len(set(seen))
    if world_size == 1:
        assert sorted(seen) == list(range(len(lengths)))
    for sh in shards:
        for b in sh:
            assert b
            longest = max(max(lengths[i], 1) for i in b)
            assert len(b) == 1 or len(b) * longest <= max_tokens
    assert shard(0) == shards[0]  # deterministic


# ----------------------------------------------------------------------------- collate


def test_collate_example() -> None:
    batch = collate_seq2seq([([5, 6, 7], [8]), ([9], [10, 11, 12])])
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [9, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 8, PAD_ID, PAD_ID], [BOS_ID, 10, 11, 12]]
    assert batch.tgt_out.tolist() == [[8, EOS_ID, PAD_ID, PAD_ID], [10, 11, 12, EOS_ID]]
    assert batch.src_key_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.tgt_key_mask.tolist() == [[True, True, False, False], [True] * 4]
    assert (batch.num_src_tokens, batch.num_tgt_tokens) == (6, 6)
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == torch.long
    assert batch.src_key_mask.dtype == batch.tgt_key_mask.dtype == torch.bool
    assert batch.batch_size == 2


def test_collate_empty_sides_and_custom_ids() -> None:
    batch = collate_seq2seq([([], [])], pad_id=9, bos_id=7, eos_id=8)
    assert batch.src.tolist() == [[8]]
    assert batch.tgt_in.tolist() == [[7]]
    assert batch.tgt_out.tolist() == [[8]]
    with pytest.raises(ValueError):
        collate_seq2seq([])


def test_batch_to_device() -> None:
    batch = collate_seq2seq([([5], [6, 7])])
    moved = batch.to("cpu")
    assert torch.equal(moved.tgt_out, batch.tgt_out)
    assert moved.num_tgt_tokens == batch.num_tgt_tokens
    assert moved.src_key_mask.dtype == torch.bool


token_lists = st.lists(st.integers(4, 1000), max_size=12)


@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(token_lists, token_lists), min_size=1, max_size=8))
def test_collate_properties(pairs: list[tuple[list[int], list[int]]]) -> None:
    batch = collate_seq2seq(pairs)
    b = len(pairs)
    s = max(len(src) for src, _ in pairs) + 1
    t = max(len(tgt) for _, tgt in pairs) + 1
    assert batch.src.shape == batch.src_key_mask.shape == (b, s)
    assert batch.tgt_in.shape == batch.tgt_out.shape == batch.tgt_key_mask.shape == (b, t)
    for row, (src, tgt) in enumerate(pairs):
        # Masks mark exactly the real tokens, which form a prefix: padding only at the end.
        assert batch.src_key_mask[row].tolist() == [True] * (len(src) + 1) + [False] * (
            s - len(src) - 1
        )
        assert batch.tgt_key_mask[row].tolist() == [True] * (len(tgt) + 1) + [False] * (
            t - len(tgt) - 1
        )
        assert batch.src[row].tolist() == src + [EOS_ID] + [PAD_ID] * (s - len(src) - 1)
        assert batch.tgt_in[row].tolist() == [BOS_ID] + tgt + [PAD_ID] * (t - len(tgt) - 1)
        assert batch.tgt_out[row].tolist() == tgt + [EOS_ID] + [PAD_ID] * (t - len(tgt) - 1)
    # Teacher forcing: the input at t+1 is the output at t wherever both are real.
    both = batch.tgt_key_mask[:, 1:]
    assert torch.equal(batch.tgt_in[:, 1:][both], batch.tgt_out[:, :-1][both])
    assert (batch.src == PAD_ID).sum() == (~batch.src_key_mask).sum()
    assert batch.num_tgt_tokens == int(batch.tgt_key_mask.sum()) == int((batch.tgt_out != 0).sum())
    assert batch.num_src_tokens == int(batch.src_key_mask.sum())
