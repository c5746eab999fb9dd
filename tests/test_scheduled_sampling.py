"""Scheduled sampling: the schedules' formulas and the two-pass decoder input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from aiayn.data.batching import collate_seq2seq
from aiayn.models.seq2seq import PRESETS, Transformer
from aiayn.training.losses import label_smoothed_cross_entropy
from aiayn.training.scheduled_sampling import (
    ScheduledSampling,
    exponential_decay,
    inverse_sigmoid_decay,
    linear_decay,
    mix_decoder_input,
    seq2seq_loss,
)

# Tiny tensors: a second thread only adds synchronisation (and stalls on a busy shared CPU).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedules_follow_their_formulas():
    for i in (0, 1, 10, 250, 5000):
        assert linear_decay(i, 1.0, 1e-3, 0.1) == pytest.approx(max(0.1, 1.0 - 1e-3 * i))
        assert exponential_decay(i, 0.99) == pytest.approx(0.99**i)
        assert inverse_sigmoid_decay(i, 50.0) == pytest.approx(50.0 / (50.0 + math.exp(i / 50.0)))
    assert inverse_sigmoid_decay(10**9, 2.0) == 0.0  # no overflow
    assert ScheduledSampling("linear", 1.0, 0.01, 0.25).probability(100) == pytest.approx(0.25)
    assert ScheduledSampling("exponential", 0.5).probability(3) == pytest.approx(0.125)
    assert ScheduledSampling("inverse-sigmoid", 10).probability(0) == pytest.approx(10 / 11)
    probs = [ScheduledSampling("inverse-sigmoid").probability(i) for i in range(0, 3000, 100)]
    assert all(a >= b for a, b in zip(probs, probs[1:]))  # decays monotonically


def test_bad_schedules_are_rejected():
    for kwargs in (
        {"kind": "cosine"},
        {"kind": "exponential", "k": 1.5},
        {"kind": "constant", "k": 2},
    ):
        with pytest.raises(ValueError):
            ScheduledSampling(**kwargs)


def _batch():
    pairs = [([5, 6, 7, 8], [9, 10, 11]), ([5, 6], [12, 13, 14, 15, 16]), ([7], [8])]
    return collate_seq2seq(pairs)


def test_probability_one_is_teacher_forcing():
    b = _batch()
    logits = torch.randn(*b.tgt_in.shape, 20)
    assert torch.equal(mix_decoder_input(logits, b.tgt_in, 1.0, b.tgt_key_mask), b.tgt_in)


def test_probability_zero_feeds_only_the_models_own_predictions():
    b = _batch()
    logits = torch.randn(*b.tgt_in.shape, 20)
    mixed = mix_decoder_input(logits, b.tgt_in, 0.0, b.tgt_key_mask)
    predicted = logits.argmax(-1)  # position t predicts input t + 1
    assert (mixed[:, 0] == b.tgt_in[:, 0]).all()  # <bos> stays
    real = b.tgt_key_mask[:, 1:]
    assert torch.equal(mixed[:, 1:][real], predicted[:, :-1][real])
    assert torch.equal(mixed[~b.tgt_key_mask], b.tgt_in[~b.tgt_key_mask])  # padding stays


def test_intermediate_probability_mixes_at_about_that_rate():
    tgt_in = torch.full((200, 50), 3)
    logits = torch.zeros(200, 50, 10)
    logits[..., 7] = 1.0  # always predicts 7
    g = torch.Generator().manual_seed(0)
    mixed = mix_decoder_input(logits, tgt_in, 0.3, generator=g)
    kept = (mixed[:, 1:] == 3).float().mean()
    assert abs(float(kept) - 0.3) < 0.02


def _model():
    config = replace(PRESETS["micro"], src_vocab_size=20, tgt_vocab_size=20)
    return Transformer(config)


def test_loss_with_probability_one_equals_teacher_forcing_loss():
    model, b = _model(), _batch()
    ref = label_smoothed_cross_entropy(model(b.src, b.tgt_in, b.src_key_mask), b.tgt_out, 0.1)
    args = (b.src, b.tgt_in, b.tgt_out, b.src_key_mask, b.tgt_key_mask, 10, 0.1)
    got = seq2seq_loss(model, *args, scheduled_sampling=ScheduledSampling("constant", 1.0))
    assert got[1] == ref[1]
    torch.testing.assert_close(got[0], ref[0])


def test_loss_with_probability_zero_trains_on_predicted_inputs():
    model, b = _model(), _batch()
    with torch.no_grad():
        first = model(b.src, b.tgt_in, b.src_key_mask)
    mixed = mix_decoder_input(first, b.tgt_in, 0.0, b.tgt_key_mask)
    ref = label_smoothed_cross_entropy(model(b.src, mixed, b.src_key_mask), b.tgt_out, 0.0)
    args = (b.src, b.tgt_in, b.tgt_out, b.src_key_mask, b.tgt_key_mask, 0)
    got, _ = seq2seq_loss(model, *args, scheduled_sampling=ScheduledSampling("constant", 0.0))
    torch.testing.assert_close(got, ref[0])
    got.backward()
    assert model.lm_head.weight.grad is not None


def test_guided_attention_adds_the_penalty_and_its_gradient():
    model, b = _model(), _batch()
    args = (b.src, b.tgt_in, b.tgt_out, b.src_key_mask, b.tgt_key_mask, 0)
    plain, n = seq2seq_loss(model, *args)
    guided, n2 = seq2seq_loss(model, *args, guided_attention=2.0)
    assert n == n2 and float(guided.detach()) > float(plain.detach())
    guided.backward()
    assert model.decoder.layers[0].cross_attn.q_proj.weight.grad.abs().sum() > 0
