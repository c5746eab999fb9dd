"""--grad-checkpointing (aiayn.training.checkpointing): the same loss and gradients as without, less
kept for backward (each layer's forward runs again there instead), and nothing changes outside
training: evaluation, decoding, state-dict keys."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from aiayn import config as cfg
from aiayn.layers import DecoderLayer, EncoderLayer
from aiayn.models import registry
from aiayn.training.checkpointing import (
    disable_checkpointing,
    enable_checkpointing,
    is_checkpointed,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(kind: str, dropout: float = 0.0) -> torch.nn.Module:
    registry.model_class(kind)  # registers the kind's presets
    config = cfg.get_preset(kind, "micro")
    if kind == "transformer":
        config = replace(config, src_vocab_size=50, tgt_vocab_size=50, num_encoder_layers=2,
                         num_decoder_layers=2)  # fmt: skip
    elif kind == "gpt":
        config = replace(config, vocab_size=50)
    config = replace(config, dropout=dropout, attention_dropout=dropout)
    torch.manual_seed(0)
    return registry.build(kind, config).train()


def _inputs(kind: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    if kind == "transformer":
        return torch.randint(4, 50, (3, 7), generator=g), torch.randint(4, 50, (3, 6), generator=g)
    if kind == "gpt":
        return (torch.randint(4, 50, (3, 9), generator=g),)
    return (torch.rand(3, 1, 8, 8, generator=g),)  # vit


def _loss_and_grads(model, inputs, seed: int = 7) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks for both runs
    logits = model(*inputs)
    loss = logits.float().pow(2).mean() + logits.float().mean()
    loss.backward()
    return float(loss.detach()), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


class _LayerCalls:
    """Counts every run of the layers' own forward: a recompute in backward counts too."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        for cls in (EncoderLayer, DecoderLayer):
            monkeypatch.setattr(cls, "forward", self._counting(cls.forward))

    def _counting(self, forward):
        def counted(layer, *args, **kwargs):
            self.count += 1
            return forward(layer, *args, **kwargs)

        return counted


def _layers(model) -> int:
    return sum(isinstance(m, (EncoderLayer, DecoderLayer)) for m in model.modules())


@pytest.mark.parametrize("kind", ["transformer", "gpt", "vit"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_checkpointing_gives_the_same_loss_and_gradients(kind, dropout):
    """Dropout included: the recompute replays the random state, so it draws the same masks."""
    model, inputs = _model(kind, dropout), _inputs(kind)
    plain_loss, plain_grads = _loss_and_grads(model, inputs)
    assert enable_checkpointing(model) == _layers(model) > 0
    loss, grads = _loss_and_grads(model, inputs)
    assert loss == pytest.approx(plain_loss, rel=1e-6, abs=1e-7)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_each_layer_runs_its_forward_twice_a_step_and_keeps_less_for_backward(monkeypatch):
    model, inputs = _model("transformer"), _inputs("transformer")
    calls = _LayerCalls(monkeypatch)

    def step() -> tuple[int, int]:
        """(layer forwards, bytes autograd kept for backward) of one training step."""
        kept = 0

        def pack(t):
            nonlocal kept
            kept += t.numel() * t.element_size()
            return t

        calls.count = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = model(*inputs)
        forwards = calls.count
        logits.float().pow(2).mean().backward()
        assert calls.count - forwards == (_layers(model) if is_checkpointed(layer) else 0)
        return calls.count, kept

    layer = next(m for m in model.modules() if isinstance(m, EncoderLayer))
    plain_calls, plain_kept = step()
    assert plain_calls == _layers(model) == 4
    enable_checkpointing(model)
    checkpointed_calls, checkpointed_kept = step()
    assert checkpointed_calls == 2 * plain_calls  # once in forward, once more in backward
    # What the layers kept (attention and FFN activations) is gone: only their inputs, the
    # embeddings and the output layer's are left (about a third here, for 4 layers only).
    assert checkpointed_kept < 0.5 * plain_kept, (checkpointed_kept, plain_kept)


def test_evaluation_and_decoding_run_each_layer_once(monkeypatch):
    from aiayn.decoding import greedy_search

    model, (src, tgt) = _model("transformer"), _inputs("transformer")
    expected = greedy_search(model.eval(), src, max_len=6)
    enable_checkpointing(model)
    calls = _LayerCalls(monkeypatch)
    model(src, tgt)  # eval mode
    assert calls.count == 4
    model.train()
    calls.count = 0
    with torch.no_grad():  # training mode, but no gradients: nothing to recompute for
        model(src, tgt)
    assert calls.count == 4
    # Incremental decoding fills its KV cache in place: never recomputed, even with gradients on.
    assert greedy_search(model, src, max_len=6) == expected
    with torch.inference_mode():
        assert greedy_search(model.eval(), src, max_len=6) == expected


def test_the_model_is_unchanged_but_for_its_layers_forward():
    model = _model("gpt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [n for n, _ in model.named_modules()]
    assert enable_checkpointing(model) == enable_checkpointing(model) == 2  # idempotent
    assert list(model.state_dict()) == list(before)
    assert [n for n, _ in model.named_modules()] == modules
    # A deep copy (FSDP's plain replica, the planner's trial model) runs its own weights.
    twin = copy.deepcopy(model)
    layer = next(m for m in twin.modules() if isinstance(m, DecoderLayer))
    assert is_checkpointed(layer) and layer.forward.__self__ is layer
    disable_checkpointing(model)
    assert not any(is_checkpointed(m) for m in model.modules())


def test_the_trainer_checkpoints_the_layers_when_configured(tmp_path, caplog):
    import logging

    from aiayn.training.trainer import TrainConfig, Trainer

    model = _model("gpt")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.INFO, logger="aiayn.training.trainer"):
        Trainer(
            model,
            optimizer,
            lambda s: 0.1,
            object(),
            tmp_path,
            TrainConfig(grad_checkpointing=True),
        )
    assert all(is_checkpointed(m) for m in model.modules() if isinstance(m, DecoderLayer))
    assert "gradient checkpointing: 2 layers" in caplog.text
    plain = _model("gpt")
    Trainer(plain, torch.optim.SGD(plain.parameters(), lr=0.1), lambda s: 0.1, object(), tmp_path,
            TrainConfig())  # fmt: skip
    assert not any(is_checkpointed(m) for m in plain.modules())
