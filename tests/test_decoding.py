"""Greedy and beam search: hand-checked choices on a toy model, invariances on a real one."""

from __future__ import annotations

import math

import pytest
import torch

from aiayn.decoding import (
    beam_search,
    greedy_search,
    length_penalty,
    top_k_filter,
    top_p_filter,
)
from aiayn.models.seq2seq import Transformer, TransformerConfig
from reference import randomize_

PAD, BOS, EOS, A, B_, C = 0, 1, 2, 3, 4, 5


class _History:
    """Toy per-layer cache: remembers the decoded prefix so the toy can look at all of it."""

    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None

    @property
    def self_attn(self):
        return self

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else self.tokens.shape[1]

    def reorder(self, index: torch.Tensor, sentences: torch.Tensor | None = None) -> None:
        self.tokens = self.tokens.index_select(0, index)


class ToyModel:
    """Next-token probabilities set by hand as a function of the whole prefix (after <bos>)."""

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], vocab: int = 6) -> None:
        self.table, self.vocab = table, vocab

    def source_mask(self, src, src_key_mask):
        return src != PAD if src_key_mask is None else src_key_mask

    def encode(self, src, mask):
        return torch.zeros(src.shape[0], src.shape[1], 1)

    def new_cache(self):
        from aiayn.decoding_state import DecodingState

        return DecodingState([_History()])

    def decode(self, tgt, memory, mask, cache=None):
        if cache is not None:
            h = cache[0]
            h.tokens = tgt if h.tokens is None else torch.cat([h.tokens, tgt], 1)
            tgt = h.tokens
        rows = []
        for prefix in tgt[:, 1:].tolist():
            probs = self.table.get(tuple(prefix), {EOS: 1.0})
            row = torch.full((self.vocab,), 1e-12)
            for tok, p in probs.items():
                row[tok] = p
            rows.append(row.log())
        return torch.stack(rows)[:, None, :]  # (N, 1, V)


SRC = torch.tensor([[A, A, EOS]])


def test_beam_finds_the_better_sequence_greedy_misses():
    table = {
        (): {A: 0.6, B_: 0.4},
        (A,): {EOS: 0.34, A: 0.33, B_: 0.33},
        (B_,): {EOS: 0.9, A: 0.1},
    }
    toy = ToyModel(table)
    assert greedy_search(toy, SRC) == [[A]]  # 0.6 * 0.34 = 0.204
    hyps = beam_search(toy, SRC, beam_size=2, alpha=0.0)[0]
    assert hyps[0].tokens == [B_]  # 0.4 * 0.9 = 0.36
    assert hyps[0].logprob == pytest.approx(math.log(0.36), abs=1e-5)
    assert hyps[1].tokens == [A]


def test_length_penalty_changes_the_choice():
    # Short: [C] <eos>, log-prob -1.0. Long: [A, A, A] <eos>, log-prob -1.2 (0.6 * 0.8 * 0.8 * s).
    # Every row sums to 1; the spare mass goes to B_, a dead end far below both.
    p_c = math.exp(-1.0)
    s = math.exp(-1.2) / (0.6 * 0.8 * 0.8)
    table = {
        (): {C: p_c, A: 0.6, B_: 1 - p_c - 0.6},
        (C,): {EOS: 1.0},
        (A,): {A: 0.8, B_: 0.2},
        (A, A): {A: 0.8, B_: 0.2},
        (A, A, A): {EOS: s, B_: 1 - s},
    }
    toy = ToyModel(table)
    plain = beam_search(toy, SRC, beam_size=2, alpha=0.0)[0][0]
    assert plain.tokens == [C] and plain.logprob == pytest.approx(-1.0, abs=1e-4)
    # With alpha = 1: -1.0 / lp(2) = -0.857 loses to -1.2 / lp(4) = -0.8.
    penalised = beam_search(toy, SRC, beam_size=2, alpha=1.0)[0][0]
    assert penalised.tokens == [A, A, A]
    assert penalised.score == pytest.approx(-1.2 / length_penalty(4, 1.0), abs=1e-4)


def test_eos_ends_a_hypothesis_and_max_length_is_respected():
    table = {(): {A: 0.9, EOS: 0.1}}
    for n in range(1, 80):
        table[(A,) * n] = {A: 0.9, EOS: 0.1}
    toy = ToyModel(table)
    out = greedy_search(toy, SRC, max_len=7)
    assert out == [[A] * 7]
    # Default budget: source length (3 real tokens) + 50.
    assert len(greedy_search(toy, SRC)[0]) == 3 + 50
    # A model whose targets run 25 tokens per source token gets 25 × 3 + 10; a short ratio keeps
    # the +50 floor.
    table.update({(A,) * n: {A: 0.9, EOS: 0.1} for n in range(80, 100)})
    assert len(greedy_search(toy, SRC, length_ratio=25.0)[0]) == 25 * 3 + 10
    assert len(greedy_search(toy, SRC, length_ratio=2.0)[0]) == 3 + 50
    endless = ToyModel({(A,) * n: {A: 0.99, B_: 0.01} for n in range(100)})  # never stops by itself
    hyps = beam_search(endless, SRC, beam_size=2, alpha=0.0, length_ratio=25.0)[0]
    assert max(len(h.tokens) for h in hyps) == 25 * 3 + 10  # the beam ran to the longer budget
    hyps = beam_search(toy, SRC, beam_size=3, alpha=0.0, max_len=5)[0]
    assert all(EOS not in h.tokens for h in hyps)
    assert max(len(h.tokens) for h in hyps) <= 5
    # Out of budget, five A's (0.9^5 = 0.59) beat stopping at once (0.1); both are reported.
    assert hyps[0].tokens == [A] * 5
    assert [] in [h.tokens for h in hyps]


class _EndsNearSourceLength(Transformer):
    """A random Transformer whose <eos> logit rises with position past the source length, so a batch
    ends at different lengths (a random model on its own almost never says <eos>)."""

    def decode(self, tgt, memory, src_key_mask, cache=None):
        logits = super().decode(tgt, memory, src_key_mask, cache)
        T = tgt.shape[1]
        end = cache[0].self_attn.length if cache is not None else T
        pos = torch.arange(end - T + 1, end + 1, dtype=logits.dtype)  # (T,)
        if src_key_mask is not None:
            src_len = src_key_mask.sum(-1, keepdim=True)  # (N, 1)
        else:  # no padding (the decoders pass None then): every source is S long
            S = memory.shape[1] if memory is not None else cache[0].cross_attn.length
            src_len = torch.full((tgt.shape[0], 1), S)
        # Beam search with a cache passes one source row for the K rows of its beams.
        src_len = src_len.repeat_interleave(tgt.shape[0] // src_len.shape[0], 0)
        bonus = 2.0 * (pos[None, :] - src_len)  # (N, T)
        logits[..., EOS] += bonus
        return logits


def _model() -> Transformer:
    config = TransformerConfig(
        src_vocab_size=20,
        tgt_vocab_size=20,
        d_model=32,
        num_heads=4,
        d_ff=64,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.0,
    )
    return randomize_(_EndsNearSourceLength(config), std=0.3).eval()


def _batch():
    g = torch.Generator().manual_seed(3)
    lengths = [5, 9, 3, 7]
    src = torch.zeros(4, 10, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, 20, (n,), generator=g)
        src[i, n] = EOS
    return src


def test_beam_size_one_equals_greedy():
    model, src = _model(), _batch()
    greedy = greedy_search(model, src, max_len=12)
    beam = [h[0].tokens for h in beam_search(model, src, beam_size=1, alpha=0.0, max_len=12)]
    assert beam == greedy


@pytest.mark.parametrize("beam", [1, 4])
def test_cached_and_uncached_decoding_agree(beam):
    model, src = _model(), _batch()
    if beam == 1:
        assert greedy_search(model, src, max_len=12) == greedy_search(
            model, src, max_len=12, use_cache=False
        )
    cached = beam_search(model, src, beam_size=beam, max_len=12)
    uncached = beam_search(model, src, beam_size=beam, max_len=12, use_cache=False)
    assert [[h.tokens for h in s] for s in cached] == [[h.tokens for h in s] for s in uncached]


def test_results_do_not_depend_on_batch_or_padding():
    model, src = _model(), _batch()
    together = beam_search(model, src, beam_size=4, max_len=12)
    for i in range(src.shape[0]):
        n = int((src[i] != PAD).sum())
        alone = beam_search(model, src[i : i + 1, :n], beam_size=4, max_len=12)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]
        extra = torch.cat([src[i : i + 1], torch.zeros(1, 6, dtype=torch.long)], 1)
        assert greedy_search(model, extra, max_len=12) == greedy_search(
            model, src[i : i + 1, :n], max_len=12
        )
    lens = {len(s[0].tokens) for s in together}
    assert len(lens) > 1, "the batch should end at different lengths to exercise early exit"


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, True, False, False]]
    probs = logits.softmax(-1)[0]  # ~ [0.086, 0.636, 0.234, 0.032, 0.012]
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [
        [False, True, False, False, False]
    ]
    assert torch.isfinite(top_p_filter(logits, float(probs[1] + 0.01))).tolist() == [
        [False, True, True, False, False]
    ]
    assert torch.isfinite(top_p_filter(logits, 0.98)).sum() == 4
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()


def test_the_one_token_step_says_why_it_was_not_taken(caplog):
    import logging

    model = _model()
    layer = model.decoder.layers[0]
    assert layer.step_refusal() is None  # eval mode, causal, dot scoring: the lean step
    assert layer.step_refusal(need_weights=True) == "attention weights asked for"
    assert layer.step_refusal(window=4) == "local attention window"
    layer.train()
    assert layer.step_refusal() == "training mode (dropout)"
    layer.eval()
    # A cached one-token call that needs the weights takes the general path and logs why.
    src = _batch()
    cache = model.new_cache()
    memory = model.encode(src, model.source_mask(src, None))
    x = torch.zeros(src.shape[0], 1, model.config.d_model)
    with caplog.at_level(logging.DEBUG, logger="aiayn.layers"):
        model.decoder(x, memory, memory_key_mask=src != PAD, cache=cache, need_weights=True)
    assert "one-token step not taken: attention weights asked for" in caplog.text
    assert cache.steps is None  # no step functions were built
    model.decoder(x, memory, memory_key_mask=src != PAD, cache=model.new_cache())
    # The state, not the caches, holds the step functions; the caches hold keys and values only.
    state = model.new_cache()
    model.decoder(x, memory, memory_key_mask=src != PAD, cache=state)
    assert state.steps is not None and len(state.steps) == len(model.decoder.layers)
    assert set(vars(state[0].self_attn)) == {"static", "_k", "_v", "length"}


def test_beams_share_their_sentence_cross_attention_cache():
    # Beam search without waste: K beams read one cached copy of their source's keys/values, and a
    # beam reorder leaves that cache alone (only finished sentences leave it).
    from aiayn.decoding import _Stepper

    model, src = _model(), _batch()
    B, K = src.shape[0], 4
    mask = model.source_mask(src, None)
    stepper = _Stepper(model, model.encode(src, mask), mask, True, copies=K, share=True)
    tokens = torch.full((B * K, 1), 1, dtype=torch.long)
    stepper.logits(tokens)
    cross = stepper.cache[0].cross_attn
    keys = cross.get()[0]
    assert keys.shape[0] == B  # one row per sentence, not B * K
    stepper.select(torch.arange(B * K).flip(0))  # a beam reorder
    assert cross.get()[0] is keys or torch.equal(cross.get()[0], keys)
    assert stepper.cache[0].self_attn.get()[0].shape[0] == B * K
    stepper.select(torch.arange(K, B * K), sentences=torch.arange(1, B))  # sentence 0 finished
    assert cross.get()[0].shape[0] == B - 1
