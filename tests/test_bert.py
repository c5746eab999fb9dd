"""BERT: parity with Hugging Face (same weights), masking, tying, saving, the WordPiece tokenizer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aiayn.data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from aiayn.errors import CheckpointError, ConfigError
from aiayn.interop.bert import config_from_hf, convert_state_dict, from_hf
from aiayn.modeldir import load_model_dir, save_model_dir
from aiayn.models.bert import BertConfig, BertForMaskedLM, BertModel, mean_pool
from reference import randomize_

transformers = pytest.importorskip("transformers")

V, B, T = 97, 3, 11


def _hf_config(**overrides):
    args = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=24,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    args.update(overrides)
    return transformers.BertConfig(**args)


def _batch():
    ids = torch.randint(1, V, (B, T))
    key_mask = torch.ones(B, T, dtype=torch.bool)
    key_mask[1, 6:] = False  # padding-heavy rows
    key_mask[2, 2:] = False
    ids[~key_mask] = 0
    segments = torch.randint(0, 2, (B, T))
    return ids, key_mask, segments


def _tiny(**overrides) -> BertConfig:
    base = dict(vocab_size=V, d_model=32, num_heads=4, d_ff=48, num_layers=2, max_len=24)
    base.update(overrides)
    return BertConfig(**base)


@torch.no_grad()
def test_masked_lm_logits_equal_hugging_face_with_the_same_weights():
    hf = randomize_(transformers.BertForMaskedLM(_hf_config()), std=0.1).eval()
    ours = from_hf(hf)
    assert isinstance(ours, BertForMaskedLM)
    ids, key_mask, segments = _batch()
    expected = hf(input_ids=ids, attention_mask=key_mask.long(), token_type_ids=segments).logits
    got = ours(ids, key_mask, segments)
    torch.testing.assert_close(got[key_mask], expected[key_mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
@torch.no_grad()
def test_encoder_and_pooler_equal_hugging_face_bert_model(hidden_act):
    hf = randomize_(transformers.BertModel(_hf_config(hidden_act=hidden_act)), std=0.1).eval()
    ours = from_hf(hf)
    assert isinstance(ours, BertModel) and ours.pooler is not None
    ids, key_mask, segments = _batch()
    out = hf(input_ids=ids, attention_mask=key_mask.long(), token_type_ids=segments)
    hidden = ours(ids, key_mask, segments)
    torch.testing.assert_close(
        hidden[key_mask], out.last_hidden_state[key_mask], atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(ours.pool(hidden), out.pooler_output, atol=1e-4, rtol=1e-4)


def test_config_from_hf_reads_every_field_and_refuses_variants():
    config = config_from_hf(_hf_config(layer_norm_eps=1e-7, type_vocab_size=3).to_dict())
    assert (config.d_model, config.num_heads, config.d_ff, config.num_layers) == (32, 4, 48, 2)
    assert (config.max_len, config.type_vocab_size, config.layer_norm_eps) == (24, 3, 1e-7)
    with pytest.raises(CheckpointError, match="position_embedding_type"):
        config_from_hf({**_hf_config().to_dict(), "position_embedding_type": "relative_key"})
    with pytest.raises(CheckpointError, match="activation"):
        config_from_hf({**_hf_config().to_dict(), "hidden_act": "silu"})


def test_old_checkpoint_names_load_and_unknown_keys_are_refused():
    hf = transformers.BertModel(_hf_config())
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in hf.state_dict().items()
    }
    assert convert_state_dict(state).keys() == convert_state_dict(hf.state_dict()).keys()
    with pytest.raises(CheckpointError, match="not a plain BERT"):
        convert_state_dict({**hf.state_dict(), "encoder.layer.0.crossattention.x": torch.zeros(1)})


@torch.no_grad()
def test_padding_is_never_attended():
    model = randomize_(BertModel(_tiny(dropout=0.0, attention_dropout=0.0)), std=0.1).eval()
    ids, key_mask, _ = _batch()
    hidden = model(ids, key_mask)
    garbage = ids.clone()
    garbage[~key_mask] = torch.randint(1, V, (int((~key_mask).sum()),))
    torch.testing.assert_close(model(garbage, key_mask)[key_mask], hidden[key_mask])
    # Each sentence alone (no padding at all, so no mask) gives the same vectors as in the batch.
    for b in range(B):
        n = int(key_mask[b].sum())
        alone = model(ids[b : b + 1, :n])
        torch.testing.assert_close(alone[0], hidden[b, :n], atol=1e-5, rtol=1e-5)
    pooled = mean_pool(hidden, key_mask)
    torch.testing.assert_close(pooled[2], hidden[2, :2].mean(0))


@torch.no_grad()
def test_selected_positions_score_only_those_and_head_is_tied():
    model = BertForMaskedLM(_tiny()).eval()
    assert model.mlm.lm_head.weight is model.bert.tok_emb.weight
    ids, key_mask, _ = _batch()
    selected = key_mask & (torch.rand(B, T) < 0.5)
    torch.testing.assert_close(
        model.logits_at(ids, key_mask, where=selected), model(ids, key_mask)[selected]
    )


def test_every_parameter_gets_a_gradient():
    model = BertForMaskedLM(_tiny())
    ids, key_mask, segments = _batch()
    segments[0, 0] = 1  # both segment rows used
    model(ids, key_mask, segments).sum().backward()
    model.bert.pool(model.bert(ids, key_mask)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_model_directory_round_trip_keeps_the_tie(tmp_path):
    model = randomize_(BertForMaskedLM(_tiny()))
    save_model_dir(tmp_path, "bert", model, model.config, task="mlm")
    loaded = load_model_dir(tmp_path, expect="bert")
    assert loaded.config == model.config
    assert loaded.model.mlm.lm_head.weight is loaded.model.bert.tok_emb.weight
    ids, key_mask, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids, key_mask), model.eval()(ids, key_mask))


def test_config_is_validated_and_frozen():
    with pytest.raises(ConfigError, match="divisible"):
        _tiny(num_heads=5)
    with pytest.raises(ConfigError, match="activation"):
        _tiny(activation="swish")
    with pytest.raises(dataclasses.FrozenInstanceError):
        _tiny().d_model = 8  # type: ignore[misc]


TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A lazy dog sleeps all day; the fox runs.",
    "Foxes and dogs are animals.",
] * 20


def test_wordpiece_training_puts_special_tokens_first_and_frames_sentences(tmp_path):
    tok = WordPieceTokenizer.train(TEXT, vocab_size=120)
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    ids = tok.encode("The lazy fox.")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.decode(ids) == "the lazy fox."
    assert tok.encode("the [MASK] fox", add_special_tokens=False)[1] == tok.mask_id
    again = WordPieceTokenizer.from_file(tok.save(tmp_path))
    assert again.encode_batch(TEXT[:3]) == tok.encode_batch(TEXT[:3])
    input_ids, key_mask = tok.batch(["fox", "the lazy dog sleeps"])
    assert key_mask.sum(1).tolist() == [
        len(tok.encode("fox")),
        len(tok.encode("the lazy dog sleeps")),
    ]
    assert (input_ids[~key_mask] == tok.pad_id).all()


def test_wordpiece_truncation_keeps_the_final_sep_and_vocab_txt_loads(tmp_path):
    tok = WordPieceTokenizer.train(TEXT, vocab_size=120).with_max_length(5)
    ids = tok.encode("the quick brown fox jumps over")
    assert len(ids) == 5 and ids[-1] == tok.sep_id
    vocab = [tok.hf_tokenizer.id_to_token(i) for i in range(tok.vocab_size)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    from_vocab = WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt")
    assert from_vocab.encode("The lazy fox!") == tok.with_max_length(None).encode("The lazy fox!")
    assert set(SPECIAL_TOKENS) <= set(vocab)
