"""A model folder from elsewhere is input: every way of tampering with it is one clear error."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from aiayn.cli import main
from aiayn.data.tokenizers import BPETokenizer
from aiayn.errors import CheckpointError
from aiayn.modeldir import load_model_dir, save_model_dir
from aiayn.models.vit import ViT, ViTConfig
from aiayn.tasks.translation import Translator
from tiny_translation import tiny_translation_model_dir


@pytest.fixture
def folder(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_translation_model_dir(), copy)
    return copy


def _edit_config(folder, change) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    "field, value", [("d_model", 2**20), ("src_vocab_size", 10**8), ("d_ff", 2**30)]
)
def test_a_huge_config_over_small_weights_is_refused_before_allocating(folder, field, value):
    _edit_config(folder, lambda d: d["config"].update({field: value}))
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=r"has shape .* but config.json makes it"):
        load_model_dir(folder)
    assert time.monotonic() - start < 5  # nothing of that size was built (2^20 × 2^30 floats)


def test_weights_of_another_dtype_are_refused(folder, tmp_path):
    loaded = load_model_dir(folder)
    save_model_dir(tmp_path / "half", "transformer", loaded.model.half(), loaded.config)
    shutil.copy(tmp_path / "half" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="is F16, the model expects torch.float32"):
        load_model_dir(folder)


@pytest.mark.parametrize("name", ["../x.json", "/etc/passwd", "sub/tok.json", "..", 7])
def test_tokenizer_files_must_be_plain_names_inside_the_folder(folder, name):
    _edit_config(folder, lambda d: d["tokenizers"].update({"source": name}))
    with pytest.raises(CheckpointError, match="must be a file name inside the folder"):
        Translator.load(folder)


def test_a_tokenizer_larger_than_the_embedding_is_refused(folder):
    listed = json.loads((folder / "config.json").read_text())["tokenizers"]["source"]
    characters = [chr(0x4E00 + i) for i in range(300)]  # 300 pieces at least: the model has ~64
    BPETokenizer.train(characters * 3, vocab_size=500, min_frequency=1).save(folder, listed[:-5])
    with pytest.raises(CheckpointError, match="embedding rows"):
        Translator.load(folder)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("format_version", "1", "format_version must be an integer"),
        ("format_version", True, "format_version must be an integer"),
        ("kind", 3, "kind must be a JSON string"),
        ("config", [1], "config must be a JSON object"),
        ("tokenizers", "x", "tokenizers must be a JSON object"),
    ],
)
def test_wrong_json_types_are_exit_2(folder, capsys, key, value, message):
    _edit_config(folder, lambda d: d.update({key: value}))
    assert main(["translate", "--model", str(folder), "hello"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_tampered_vit_image_size_is_refused(tmp_path):
    config = ViTConfig(
        image_size=8, patch_size=2, in_channels=1, num_classes=3, d_model=16,
        num_heads=2, d_ff=32, num_layers=1,
    )  # fmt: skip
    save_model_dir(tmp_path, "vit", ViT(config), config)
    data = json.loads((tmp_path / "config.json").read_text())
    data["config"]["image_size"] = 2**16  # a 32768² grid of position embeddings
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="pos_emb has shape"):
        load_model_dir(tmp_path)
    assert torch.get_default_device().type == "cpu"  # the meta probe left no trace
