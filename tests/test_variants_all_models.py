"""Additive scoring and truncated attention are fields of every model (`--set attention=additive`,
`--set attention_window=W`)."""

from __future__ import annotations

import pytest
import torch

from aiayn import config as cfg
from aiayn.masks import make_local_mask
from aiayn.models import registry


def _tiny(kind: str, **changes):
    registry.model_class(kind)  # registers presets
    preset = {"transformer": "micro", "gpt": "micro", "bert": "micro", "vit": "micro"}[kind]
    return cfg.apply_overrides(
        cfg.get_preset(kind, preset), [f"{k}={v}" for k, v in changes.items()]
    )


def _inputs(kind: str, config):
    torch.manual_seed(0)
    if kind == "vit":
        return (torch.randn(2, config.in_channels, config.image_size, config.image_size),)
    if kind == "transformer":
        return torch.randint(4, 20, (2, 9)), torch.randint(4, 20, (2, 7))
    return (torch.randint(5, 20, (2, 9)),)


@pytest.mark.parametrize("kind", ["transformer", "gpt", "bert", "vit"])
def test_additive_attention_in_every_model(kind):
    config = _tiny(kind, attention="additive")
    model = registry.build(kind, config).eval()
    out = model(*_inputs(kind, config))
    assert torch.isfinite(out).all()
    scores = [m.additive for m in model.modules() if getattr(m, "additive", None) is not None]
    assert scores, "the model's attention modules use additive scoring"


@pytest.mark.parametrize("kind", ["gpt", "bert", "vit"])
def test_attention_window_in_every_model(kind):
    config = _tiny(kind, attention_window=1)
    windowed = registry.build(kind, config).eval()
    full = registry.build(kind, _tiny(kind)).eval()
    full.load_state_dict(windowed.state_dict())
    inputs = _inputs(kind, config)
    assert not torch.allclose(windowed(*inputs), full(*inputs)), "the window changes the result"
    wide = registry.build(kind, _tiny(kind, attention_window=10_000)).eval()
    wide.load_state_dict(windowed.state_dict())
    torch.testing.assert_close(wide(*inputs), full(*inputs), atol=1e-5, rtol=1e-5)
    assert make_local_mask(3, window=1).sum() == 7  # the window the kernel implements
