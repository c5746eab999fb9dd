"""Llama architecture: aiayn's GPT (RMSNorm, SwiGLU, rotary, GQA, untied, no biases) computes exactly
what Hugging Face's ``LlamaForCausalLM`` does; weights import, export and load from a folder."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from aiayn.decoding import generate
from aiayn.errors import CheckpointError
from aiayn.interop.llama import (
    config_from_hf,
    from_hf_llama,
    from_pretrained_dir,
    to_hf_llama,
)

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

V = 100
SMALL = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=172,
    vocab_size=V,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    max_position_embeddings=64,
    bos_token_id=None,
    eos_token_id=None,
)


def _hf(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SMALL, **changes}))
    with torch.no_grad():  # larger than the 0.02 init, so greedy choices are not near-ties
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    hf = _hf()
    return hf, from_hf_llama(hf)


def _hf_greedy(hf, prompt: list[int], n: int) -> list[int]:
    """Hugging Face's model, recomputed from scratch at every step (no cache)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, hf(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[0, len(prompt) :].tolist()


def test_config_maps_every_llama_field(pair):
    _, ours = pair
    c = ours.config
    assert (c.d_model, c.num_heads, c.num_kv_heads, c.d_ff, c.num_layers) == (64, 4, 2, 172, 2)
    assert (c.positional, c.rotary_layout, c.rotary_base, c.norm) == (
        "rotary",
        "half",
        1e4,
        "rmsnorm",
    )
    assert (c.activation, c.bias, c.tie_output, c.layer_norm_eps) == ("swiglu", False, False, 1e-6)
    assert ours.decoder.layers[0].self_attn.k_proj.weight.shape == (32, 64)  # 2 KV heads of 16
    assert not any(n.endswith(".bias") for n, _ in ours.named_parameters())


@torch.no_grad()
def test_logits_equal_hugging_faces(pair):
    hf, ours = pair
    ids = torch.randint(0, V, (3, 17))
    torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=0)


def test_greedy_tokens_identical_for_20_new_tokens(pair):
    hf, ours = pair
    for prompt in ([5, 17, 42], [9, 1, 88, 23, 7, 64, 3]):
        expected = _hf_greedy(hf, prompt, 20)
        assert generate(ours, [prompt], 20, temperature=0) == [expected]
        assert len(set(expected)) > 1, "a degenerate model would prove little"


@torch.no_grad()
def test_cached_decoding_equals_uncached(pair):
    _, ours = pair
    ids = torch.randint(0, V, (2, 14))
    full = ours(ids)
    cache = ours.new_cache()
    steps = [ours(ids[:, :5], cache=cache)] + [
        ours(ids[:, t : t + 1], cache=cache) for t in range(5, 14)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    prompts = [[3, 4, 5], [60, 61]]
    assert generate(ours, prompts, 20, temperature=0) == generate(
        ours, prompts, 20, temperature=0, use_cache=False
    )


@torch.no_grad()
def test_left_padded_batch_equals_each_row_alone_and_hugging_face(pair):
    hf, ours = pair
    rows = [torch.randint(1, V, (n,)) for n in (9, 4, 6)]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :], mask[b, T - len(r) :] = r, True
    batched = ours(ids, key_mask=mask)
    for b, r in enumerate(rows):
        alone = ours(r[None])
        torch.testing.assert_close(batched[b, T - len(r) :], alone[0], atol=1e-5, rtol=1e-5)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    theirs = hf(ids, attention_mask=mask.long(), position_ids=positions).logits
    torch.testing.assert_close(batched[mask], theirs[mask], atol=1e-4, rtol=0)
    prompts = [r.tolist() for r in rows]
    together = generate(ours, prompts, 20, temperature=0)
    assert together == [generate(ours, [p], 20, temperature=0)[0] for p in prompts]
    assert together == [_hf_greedy(hf, p, 20) for p in prompts]


@torch.no_grad()
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("tied", [False, True])
def test_export_round_trip(pair, layout, tied):
    """aiayn -> HF state dict -> HF logits equal; an interleaved-rotary model exports too (its
    q/k rows are permuted into the half layout)."""
    _, ours = pair
    config = dataclasses.replace(ours.config, rotary_layout=layout, tie_output=tied)
    torch.manual_seed(1)
    model = type(ours)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    model.eval()
    hf = to_hf_llama(model)
    ids = torch.randint(0, V, (2, 11))
    torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=0)
    back = from_hf_llama(hf)
    if layout == "half":  # the import is the export's inverse
        for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)
    torch.testing.assert_close(back(ids), model(ids), atol=1e-4, rtol=0)


@torch.no_grad()
def test_biases_and_tied_embeddings_import(pair):
    hf = _hf(attention_bias=True, mlp_bias=True, tie_word_embeddings=True)
    ours = from_hf_llama(hf)
    assert ours.config.bias and ours.config.tie_output
    assert ours.lm_head.weight is ours.tok_emb.weight
    ids = torch.randint(0, V, (2, 9))
    torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("shard", [False, True])
def test_save_pretrained_folder_loads(tmp_path, pair, shard):
    hf, _ = pair
    kwargs = {"max_shard_size": "20KB"} if shard else {}
    hf.save_pretrained(tmp_path, **kwargs)
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    model = from_pretrained_dir(tmp_path)
    ids = torch.randint(0, V, (2, 13))
    torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)


def test_folders_and_configs_aiayn_cannot_compute_are_refused(tmp_path, pair):
    hf, _ = pair
    with pytest.raises(CheckpointError, match="no such model folder"):
        from_pretrained_dir(tmp_path / "missing")
    hf.config.to_json_file(tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        from_pretrained_dir(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="RoPE scaling .llama3."):
        config_from_hf({**data, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}})
    with pytest.raises(CheckpointError, match="hidden_act"):
        config_from_hf({**data, "hidden_act": "gelu"})
    with pytest.raises(CheckpointError, match="not Llama"):
        config_from_hf({**data, "model_type": "mistral"})
    assert config_from_hf({**data, "rope_parameters": None, "rope_theta": 5e5}).rotary_base == 5e5
