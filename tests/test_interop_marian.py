"""Marian interop: same weights, same logits, same generated tokens as Hugging Face's MarianMTModel."""

from __future__ import annotations

import pytest
import torch

from aiayn.data.batching import collate_seq2seq
from aiayn.decoding import beam_search, greedy_search
from aiayn.interop.marian import from_hf_marian, to_hf_marian
from aiayn.tasks.translation import Translator, train_translation
from reference import tiny_marian
from test_translation import PHRASES

transformers = pytest.importorskip("transformers")

MARIAN_SHAPE = [
    "positional=sinusoidal_halves",
    "final_norm=false",
    "activation=silu",
    "output_bias=true",
    "dropout=0",
]


def test_logits_equal_after_import_and_export():
    hf = tiny_marian()
    ours = from_hf_marian(hf)
    src = torch.randint(1, 59, (3, 7))
    src[0, -2:] = 59
    mask = src != 59
    tgt = torch.randint(1, 59, (3, 5))
    tgt[:, 0] = 59
    expected = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
    torch.testing.assert_close(ours(src, tgt, mask), expected, atol=1e-4, rtol=1e-4)
    back = to_hf_marian(ours, bos_id=59, eos_id=0)
    again = back(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)


def test_trained_model_generates_the_same_tokens_as_hf_generate(tmp_path):
    path = tmp_path / "data.tsv"
    from aiayn.data.corpus import write_parallel_tsv

    write_parallel_tsv(path, PHRASES * 4)
    out = tmp_path / "model"
    train_translation(
        str(path),
        out,
        valid_spec=str(path),
        preset="micro",
        overrides=MARIAN_SHAPE,
        max_steps=40,
        progress=False,
    )
    translator = Translator.load(out)
    hf = to_hf_marian(translator.model)
    batch = collate_seq2seq([(translator.src_tok.encode(s), []) for s, _ in PHRASES])
    mask = batch.src_key_mask
    ours = greedy_search(translator.model, batch.src, mask, max_len=12)
    theirs = hf.generate(
        input_ids=batch.src,
        attention_mask=mask.long(),
        num_beams=1,
        do_sample=False,
        max_new_tokens=12,
    )
    assert ours == [_strip(row) for row in theirs.tolist()]
    ours_beam = beam_search(translator.model, batch.src, mask, beam_size=4, alpha=0.0, max_len=12)
    theirs_beam = hf.generate(
        input_ids=batch.src,
        attention_mask=mask.long(),
        num_beams=4,
        do_sample=False,
        max_new_tokens=12,
        length_penalty=0.0,
    )
    assert [h[0].tokens for h in ours_beam] == [_strip(row) for row in theirs_beam.tolist()]


def _strip(row: list[int]) -> list[int]:
    """HF's output: <bos> + tokens [+ <eos>] + padding -> tokens."""
    out = []
    for tok in row[1:]:
        if tok == 2:
            break
        out.append(tok)
    return out
