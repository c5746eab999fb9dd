"""Checkpoint files: round trips, checksums, refusal of pickles, atomic directory swaps."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from aiayn.errors import CheckpointError
from aiayn.models.seq2seq import Transformer, TransformerConfig
from aiayn.training.checkpoint import (
    find_checkpoint,
    load_trainer_state,
    load_weights,
    save_trainer_state,
    save_weights,
    swap_in_directory,
)


def _model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(
        TransformerConfig(
            src_vocab_size=30,
            tgt_vocab_size=30,
            d_model=16,
            num_heads=2,
            d_ff=32,
            num_encoder_layers=1,
            num_decoder_layers=1,
            share_embeddings=True,
        )
    )


def test_weights_round_trip_with_tied_matrices(tmp_path):
    a, b = _model(0), _model(1)
    save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, tmp_path / "w.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert b.lm_head.weight is b.src_emb.weight, "ties survive loading"
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_flipped_byte_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(_model(), path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_weights(_model(), path)


def test_weights_of_another_shape_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(_model(), path)
    other = Transformer(
        TransformerConfig(
            src_vocab_size=31,
            tgt_vocab_size=31,
            d_model=16,
            num_heads=2,
            d_ff=32,
            num_encoder_layers=1,
            num_decoder_layers=1,
            share_embeddings=True,
        )
    )
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(other, path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_in_trainer_state_is_refused_unexecuted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "trainer.pt"
    torch.save({"step": 1, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        load_trainer_state(path)
    assert not (tmp_path / "PWNED").exists()
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_weights(_model(), weights)
    assert not (tmp_path / "PWNED").exists()


def test_trainer_state_round_trip(tmp_path):
    state = {"step": 7, "rng": torch.get_rng_state(), "nested": {"a": [1, 2.5, None]}}
    save_trainer_state(tmp_path / "t.pt", state)
    back = load_trainer_state(tmp_path / "t.pt")
    assert back["step"] == 7 and torch.equal(back["rng"], state["rng"])
    assert back["nested"] == {"a": [1, 2.5, None]}


def test_directory_swap_leaves_one_complete_copy(tmp_path):
    final = tmp_path / "last"
    for version in (1, 2):
        staging = tmp_path / "last.tmp"
        staging.mkdir()
        (staging / "trainer.pt").write_text(str(version))
        (staging / "model.safetensors").write_text(str(version))
        swap_in_directory(staging, final)
        assert (final / "trainer.pt").read_text() == str(version)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # A crash between the two renames of a swap leaves only last.old: it is still found.
    os.replace(final, tmp_path / "last.old")
    assert find_checkpoint(final) == tmp_path / "last.old"
