"""The LSTM encoder-decoder baseline: shapes, padding invariance, gradients, learning."""

from __future__ import annotations

import pytest
import torch

from aiayn.data.batching import collate_seq2seq
from aiayn.models.rnn import RNNConfig, RNNSeq2Seq
from aiayn.training.losses import label_smoothed_cross_entropy

# Tiny tensors: a second thread only adds synchronisation (and stalls on a busy shared CPU).
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw):
    return RNNSeq2Seq(RNNConfig(src_vocab_size=30, tgt_vocab_size=25, d_model=16, **kw))


def test_shapes_and_every_parameter_gets_a_gradient():
    model = _model(num_layers=2)
    b = collate_seq2seq([([5, 6, 7], [8, 9]), ([5], [10, 11, 12, 13])])
    logits = model(b.src, b.tgt_in, b.src_key_mask)
    assert logits.shape == (2, b.tgt_in.shape[1], 25)
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_padding_does_not_change_a_sentence():
    model = _model().eval()
    alone = collate_seq2seq([([5, 6], [8, 9])])
    padded = collate_seq2seq([([5, 6], [8, 9]), ([5, 6, 7, 8, 9, 10], [8])])
    a = model(alone.src, alone.tgt_in, alone.src_key_mask)[0]
    b = model(padded.src, padded.tgt_in, padded.src_key_mask)[0, : a.shape[0]]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_learns_to_copy_short_sequences():
    torch.manual_seed(0)
    model = _model(num_layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        seqs = [torch.randint(4, 10, (3,), generator=g).tolist() for _ in range(32)]
        b = collate_seq2seq([(s, s) for s in seqs])
        loss, n = label_smoothed_cross_entropy(model(b.src, b.tgt_in, b.src_key_mask), b.tgt_out, 0)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    assert float(loss.detach() / n) < 0.3
