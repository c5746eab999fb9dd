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


# ---- the post-2017 fields (issue 19): positions in attention, GQA, RMSNorm, gated FFNs ------------

#: Each variant as ``--set`` overrides, with the model kinds it applies to (ViT: no rotary/ALiBi,
#: see tests/test_modern_blocks.py; BERT has no ``bias`` field).
MODERN = {
    "rotary": (["positional=rotary"], "transformer gpt bert"),
    "rotary-interleaved": (
        ["positional=rotary", "rotary_layout=interleaved", "rotary_base=500"],
        "transformer gpt bert",
    ),
    "alibi": (["positional=alibi"], "transformer gpt bert"),
    "sinusoidal": (["positional=sinusoidal"], "gpt bert"),
    "gqa": (["num_heads=4", "num_kv_heads=2"], "transformer gpt bert vit"),
    "mqa": (["num_kv_heads=1"], "transformer gpt bert vit"),
    "rmsnorm": (["norm=rmsnorm"], "transformer gpt bert vit"),
    "swiglu": (["activation=swiglu", "d_ff=none"], "transformer gpt bert vit"),
    "geglu": (["activation=geglu"], "transformer gpt bert vit"),
    "llama": (
        ["positional=rotary", "num_heads=4", "num_kv_heads=2", "norm=rmsnorm"]
        + ["activation=swiglu", "bias=false"],
        "transformer gpt",
    ),
}
CASES = [(kind, name) for name, (_, kinds) in MODERN.items() for kind in kinds.split()]
DECODER_CASES = [(kind, name) for kind, name in CASES if kind in ("transformer", "gpt")]
#: Small vocabularies: the presets' 37000 / 30522 rows would only cost time here.
SMALL_VOCAB = {
    "transformer": ["src_vocab_size=20", "tgt_vocab_size=20", "num_decoder_layers=2"],
    "gpt": ["vocab_size=23", "max_len=16"],
    "bert": ["vocab_size=20"],
    "vit": [],
}


def _modern(kind: str, name: str):
    registry.model_class(kind)
    preset = cfg.get_preset(kind, "micro")
    return cfg.apply_overrides(preset, SMALL_VOCAB[kind] + MODERN[name][0])


def _padded_inputs(kind: str, config):
    """``_inputs`` with padding where the model takes it (BERT: right, seq2seq source: right)."""
    inputs = _inputs(kind, config)
    if kind == "bert":
        inputs[0][1, 6:] = config.pad_id
    if kind == "transformer":
        inputs[0][1, 5:] = config.pad_id
    return inputs


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Weights large enough that greedy choices are not near-ties (norm gains near 1)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm)) and m.weight is not None:
                m.weight.add_(1.0)
    return model


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_modern_fields_shapes_finite_and_every_parameter_learns(kind, name):
    config = _modern(kind, name)
    model = registry.build(kind, config).train()
    baseline = registry.build(kind, cfg.apply_overrides(cfg.get_preset(kind, "micro"),
                                                        SMALL_VOCAB[kind])).eval()  # fmt: skip
    inputs = _padded_inputs(kind, config)
    out = model(*inputs)
    assert out.shape == baseline(*inputs).shape
    assert torch.isfinite(out).all()
    loss = out.float().logsumexp(-1).sum()
    if kind == "bert":  # the pooler and the second segment row are used only here
        segments = torch.zeros_like(inputs[0])
        segments[:, 4:] = 1
        loss = loss + model(inputs[0], segment_ids=segments).sum()
        loss = loss + model.bert.pool(model.bert(inputs[0])).sum()
    loss.backward()
    for param_name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), param_name
        assert p.grad.abs().sum() > 0, param_name


def _stack_output(kind: str, model, inputs, need_weights: bool) -> torch.Tensor:
    """The last stack's hidden states; ``need_weights`` takes every attention down the reference
    (formula written out) path instead of the fused kernel."""
    if kind == "gpt":
        (ids,) = inputs
        x = model._embed(ids, torch.arange(ids.shape[1]))
        return model.decoder(x, need_weights=need_weights)[0]
    if kind == "bert":
        (ids,) = inputs
        bert = model.bert
        return bert.encoder(bert.embed(ids), bert.key_mask(ids, None), need_weights)[0]
    if kind == "vit":
        return model.encoder(model.embed(*inputs), need_weights=need_weights)[0]
    src, tgt = inputs
    mask = model.source_mask(src, None)
    memory, _ = model.encoder(model.embed_source(src), mask, need_weights=need_weights)
    out, _, _ = model.decoder(
        model.embed_target(tgt), memory, memory_key_mask=mask, need_weights=need_weights
    )
    return out


@pytest.mark.parametrize(("kind", "name"), CASES)
@torch.no_grad()
def test_modern_fields_fused_path_equals_reference_path(kind, name):
    config = _modern(kind, name)
    model = _randomize(registry.build(kind, config)).eval()
    inputs = _padded_inputs(kind, config)
    fused = _stack_output(kind, model, inputs, need_weights=False)
    reference = _stack_output(kind, model, inputs, need_weights=True)
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("kind", "name"), DECODER_CASES)
def test_modern_fields_cached_decoding_equals_uncached(kind, name):
    from aiayn.decoding import beam_search, generate, greedy_search

    config = _modern(kind, name)
    model = _randomize(registry.build(kind, config)).eval()
    if kind == "gpt":
        # Left-padded prompts of different lengths; 30 tokens slide the 16-token window twice.
        prompts = [[3, 7, 9, 4, 1, 5], [8], [11, 2, 20], [6] * 14]
        cached = generate(model, prompts, 30, temperature=0)
        assert cached == generate(model, prompts, 30, temperature=0, use_cache=False)
        assert cached == [generate(model, [p], 30, temperature=0)[0] for p in prompts]
        ids = torch.randint(0, 23, (2, 10))
        with torch.no_grad():
            full = model(ids)
            cache = model.new_cache()
            steps = [model(ids[:, :6], cache=cache)]
            steps += [model(ids[:, t : t + 1], cache=cache) for t in range(6, 10)]
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)
        return
    src = _padded_inputs(kind, config)[0]
    greedy = greedy_search(model, src, max_len=10)
    assert greedy == greedy_search(model, src, max_len=10, use_cache=False)
    beams = beam_search(model, src, beam_size=3, max_len=10)
    uncached = beam_search(model, src, beam_size=3, max_len=10, use_cache=False)
    assert [[h.tokens for h in s] for s in beams] == [[h.tokens for h in s] for s in uncached]
