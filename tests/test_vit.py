"""Vision Transformer: parity with Hugging Face, position interpolation, images, learning, command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aiayn.cli import main
from aiayn.data.images import (
    list_image_folder,
    load_digits,
    load_image,
    random_affine,
    random_shift,
    stratified_holdout,
)
from aiayn.errors import ConfigError, DataError
from aiayn.interop.vit import convert_state_dict, from_hf
from aiayn.modeldir import load_model_dir, save_model_dir
from aiayn.models.vit import ViT, ViTConfig, resize_position_grid
from aiayn.tasks.vision import evaluate_classifier, train_vit
from reference import randomize_

transformers = pytest.importorskip("transformers")


# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


def _hf(qkv_bias: bool = True, classes: int = 5):
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        num_labels=classes,
        qkv_bias=qkv_bias,
    )
    model = randomize_(transformers.ViTForImageClassification(config), std=0.1).eval()
    if not qkv_bias:  # randomize_ only touches parameters that exist
        assert model.vit.layers[0].attention.q_proj.bias is None
    return model


def _micro(**overrides) -> ViT:
    base = dict(
        image_size=8, patch_size=2, in_channels=1, num_classes=10, d_model=32, num_heads=2,
        d_ff=64, num_layers=2,
    )  # fmt: skip
    base.update(overrides)
    return ViT(ViTConfig(**base))


@pytest.mark.parametrize("qkv_bias", [True, False])
@torch.no_grad()
def test_logits_equal_hugging_face_with_the_same_weights(qkv_bias):
    hf = _hf(qkv_bias)
    ours = from_hf(hf)
    images = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(ours(images), hf(pixel_values=images).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(12, 12), (4, 4), (8, 14)])
@torch.no_grad()
def test_position_interpolation_equals_hugging_face(size):
    hf = _hf()
    ours = from_hf(hf)
    images = torch.randn(2, 3, *size)
    expected = hf(pixel_values=images, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(ours(images), expected, atol=1e-4, rtol=1e-4)


def test_hub_checkpoint_names_load_like_module_names():
    hf = _hf()
    old = {}
    for key, value in hf.state_dict().items():  # transformers 5 names -> the Hub files' names
        key = key.replace("vit.layers.", "vit.encoder.layer.")
        for new, hub in [
            ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"),
            ("attention.o_proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ]:
            key = key.replace(new, hub)
        old[key] = value
    assert convert_state_dict(old).keys() == convert_state_dict(hf.state_dict()).keys()
    for name, tensor in convert_state_dict(old).items():
        assert torch.equal(tensor, convert_state_dict(hf.state_dict())[name]), name


@torch.no_grad()
def test_resizing_positions_is_identity_at_the_same_size_and_persists(tmp_path):
    model = randomize_(_micro()).eval()
    assert resize_position_grid(model.pos_emb, (4, 4)) is model.pos_emb
    images16 = torch.randn(3, 1, 16, 16)
    on_the_fly = model(images16)
    model.resize_image(16)  # now native at 16x16: 8x8 grid stored
    assert model.config.image_size == 16 and model.pos_emb.shape == (1, 65, 32)
    torch.testing.assert_close(model(images16), on_the_fly)
    save_model_dir(tmp_path, "vit", model, model.config)
    loaded = load_model_dir(tmp_path, expect="vit")
    torch.testing.assert_close(loaded.model(images16), on_the_fly)


def test_every_parameter_gets_a_gradient_and_config_is_checked():
    model = _micro()
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ConfigError, match="divide"):
        ViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 1, 9, 8))


# ---- data ------------------------------------------------------------------------------------------
def test_digits_split_is_fixed_disjoint_and_stratified():
    splits = {s: load_digits(s) for s in ("train", "valid", "test")}
    sizes = {s: len(d) for s, d in splits.items()}
    assert sizes == {"train": 1259, "valid": 179, "test": 359}
    sources = [set(d.sources) for d in splits.values()]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert torch.bincount(splits["test"].labels).min() >= 35
    assert splits["train"].images.shape[1:] == (1, 8, 8) and splits["train"].images.max() == 1.0


def test_random_shift_moves_pixels_and_fills_with_dark():
    images = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4) + 1
    gen = torch.Generator().manual_seed(0)
    shifted = random_shift(images, 1, gen)
    gen = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 3, (2,), generator=gen), torch.randint(0, 3, (2,), generator=gen)
    for i in range(2):
        padded = torch.nn.functional.pad(images[i], (1, 1, 1, 1))
        expected = padded[:, dy[i] : dy[i] + 4, dx[i] : dx[i] + 4]
        assert torch.equal(shifted[i], expected)


def test_random_affine_without_change_is_the_identity():
    images = load_digits("valid").images[:8]
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_affine(images, gen, degrees=0, scale=0, translate=0), images)
    moved = random_affine(images, gen)
    assert moved.shape == images.shape and not torch.equal(moved, images)
    assert moved.min() >= 0 and moved.max() <= 1  # bilinear: no overshoot


def test_stratified_holdout_takes_from_every_class():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2])
    train, held = stratified_holdout(labels, 0.1, seed=0)
    assert sorted(torch.cat([train, held]).tolist()) == list(range(14))
    assert sorted(labels[held].tolist()) == [0, 1]  # one of each class with >= 2 images


def _write_bars(folder, per_class: int = 12, size: int = 16, mode: str = "RGB") -> None:
    """Two classes a model can tell apart: a bright bar at the top or at the bottom."""
    rng = np.random.default_rng(0)
    for name, rows in (("top", slice(0, 4)), ("bottom", slice(12, 16))):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            pixels[rows] = 255
            Image.fromarray(pixels).convert(mode).save(folder / name / f"{i}.png")


def test_image_loading_and_folder_errors(tmp_path):
    _write_bars(tmp_path / "data", per_class=2, mode="L")
    classes, items = list_image_folder(tmp_path / "data")
    assert classes == ("bottom", "top") and len(items) == 4
    image = load_image(items[0][0], 8, 3)
    assert image.shape == (3, 8, 8) and image.min() >= 0 and image.max() <= 1
    with pytest.raises(DataError, match="no such folder"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "data" / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_image_folder(tmp_path / "data")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        load_image(tmp_path / "bad.png", 8, 1)


# ---- learning ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A tiny ViT trained briefly on the digits' train split (a few seconds on a CPU)."""
    out = tmp_path_factory.mktemp("digits")
    train_vit(
        "builtin:digits",
        out,
        preset="micro",
        overrides=["patch_size=4"],
        max_steps=250,  # 94-96% test accuracy for seeds 0-3
        batch_size=64,
        lr=2e-3,
        augment="none",
        progress=False,
    )
    return out


def test_tiny_vit_learns_digits(digits_model, capsys):
    # Bound: a nearest-centroid classifier (each class's mean image as a template) scores 88.9% on
    # this test split and chance is 10%; 90% means the ViT learned more than one template per class.
    result = evaluate_classifier(digits_model, "builtin:digits")
    assert result["n"] == 359
    assert result["accuracy"] >= 0.90, result
    assert main(["evaluate", "--model", str(digits_model), "--test", "builtin:digits"]) == 0
    assert json.loads(capsys.readouterr().out) == result


def _fine_tune(model: ViT, images: torch.Tensor, labels: torch.Tensor, steps: int) -> ViT:
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(labels), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_a_model_trained_at_8x8_runs_and_transfers_at_16x16(digits_model):
    """Twice the resolution: the 2x2 grid of 4x4 patches becomes 4x4, positions interpolated."""
    loaded = load_model_dir(digits_model, expect="vit")
    info = loaded.info["image"]
    mean, std = (
        torch.tensor(info["mean"]).view(1, -1, 1, 1),
        torch.tensor(info["std"]).view(1, -1, 1, 1),
    )

    def at16(images: torch.Tensor) -> torch.Tensor:
        up = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear")
        return (up - mean) / std

    train, test = load_digits("train"), load_digits("test")
    with torch.no_grad():
        logits = loaded.model(at16(test.images))  # runs as it is: positions resized on the fly
    assert logits.shape == (len(test), 10) and torch.isfinite(logits).all()

    def accuracy(model: ViT) -> float:
        with torch.no_grad():
            return float((model(at16(test.images)).argmax(-1) == test.labels).float().mean())

    # What interpolation is for (ViT paper, section 3.2): fine-tuning at the new size. 40 steps from
    # the 8x8 model beat 40 steps from scratch by far: the weights and resized positions transfer.
    torch.manual_seed(0)
    pretrained = loaded.model
    pretrained.resize_image(16)
    pretrained = _fine_tune(pretrained, at16(train.images), train.labels, 40)
    torch.manual_seed(0)
    scratch = ViT(loaded.config)
    scratch.resize_image(16)
    scratch = _fine_tune(scratch, at16(train.images), train.labels, 40)
    assert accuracy(pretrained) > accuracy(scratch) + 0.2 and accuracy(pretrained) > 0.45


# ---- command line -------------------------------------------------------------------------------------
def test_train_classify_evaluate_on_a_folder(tmp_path, capsys):
    _write_bars(tmp_path / "data")
    out = tmp_path / "model"
    args = ["train", "vit", "--dataset", str(tmp_path / "data"), "--out", str(out)]
    args += ["--preset", "micro", "--image-size", "8", "--max-steps", "40", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    info = json.loads((out / "config.json").read_text())
    assert info["labels"] == ["bottom", "top"] and info["image"]["channels"] == 3
    images = [str(tmp_path / "data" / "top" / "0.png"), str(tmp_path / "data" / "bottom" / "1.png")]
    assert main(["classify", "--model", str(out), *images]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == images
    assert [r["label"] for r in rows] == ["top", "bottom"]
    assert all(0.5 < r["probability"] <= 1.0 for r in rows)
    result = evaluate_classifier(out, str(tmp_path / "data"))
    assert result == {"accuracy": 1.0, "n": 24}


def test_bad_image_input_exits_2_with_the_file_named(tmp_path, capsys):
    args = ["train", "vit", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]
    assert main(args) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    _write_bars(tmp_path / "data", per_class=2)
    (tmp_path / "data" / "top" / "broken.png").write_bytes(b"\x89PNG garbage")
    args = ["train", "vit", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "m")]
    assert main(args + ["--preset", "micro", "--image-size", "8", "--max-steps", "1"]) == 2
    assert "broken.png: not a readable image" in capsys.readouterr().err
