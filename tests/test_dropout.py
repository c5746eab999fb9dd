"""aiayn's CPU dropout: the right drop rate, unbiased, gradients through the kept elements only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aiayn.dropout import Dropout, byte_threshold, cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = cpu_dropout(x, p)
    used = byte_threshold(p) / 256
    assert abs(used - p) <= 1 / 512  # p rounded to a multiple of 1/256
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - used) < 0.004  # binomial spread at n = 400k is ~0.0008
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased: E[y] = x
    values = y.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - used))


def test_gradient_flows_through_kept_elements_only():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = cpu_dropout(x, 0.25)
    y.sum().backward()
    kept = y.detach() != 0
    scale = 1 / (1 - byte_threshold(0.25) / 256)
    torch.testing.assert_close(x.grad, kept.float() * scale)


def test_module_is_identity_in_eval_and_seeded_in_training():
    module = Dropout(0.1)
    x = torch.randn(8, 16)
    assert module.eval()(x) is x
    module.train()
    torch.manual_seed(5)
    a = module(x)
    torch.manual_seed(5)
    b = module(x)
    torch.testing.assert_close(a, b)  # the same seed draws the same mask
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(cpu_dropout(x, 1.0), torch.zeros_like(x))


def test_inplace_uses_torch_dropout():
    x = torch.randn(1000)
    torch.manual_seed(2)
    expected = F.dropout(x.clone(), 0.2, True, True)
    torch.manual_seed(2)
    got = Dropout(0.2, inplace=True).train()(x.clone())
    torch.testing.assert_close(got, expected)
