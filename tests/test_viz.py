"""Pictures: valid PNGs of the expected size that draw exactly the model's attention maps."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from aiayn import viz
from aiayn.cli import main
from aiayn.errors import AiaynError, DataError
from aiayn.positional import sinusoidal_table
from aiayn.tasks.translation import Translator
from tiny_translation import tiny_lm_model_dir, tiny_translation_model_dir

SRC, TGT = "我是一个学生", "I am a student"


# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def translator() -> Translator:
    return Translator.load(tiny_translation_model_dir())


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()  # checksums and structure: a complete, valid file
        return image.size


def _expected_size(fig) -> tuple[int, int]:
    width, height = fig.get_size_inches() * viz.DPI
    return round(width), round(height)


def _heatmap_axes(fig):
    """The panels that hold a heatmap (not the colour bar or the secondary label axes)."""
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_a_cjk_font_is_available():
    assert viz.find_cjk_font() is not None, viz.CJK_INSTALL_HINT


def test_chinese_draws_with_the_packaged_font_alone(monkeypatch, translator, tmp_path):
    """With every system font hidden from matplotlib (a machine with nothing but Python), aiayn's
    own font package still draws 我是一个学生: no missing-glyph warning (the suite turns it into an
    error), and the font that draws the labels is the package's Simplified-Chinese face."""
    import matplotlib
    from matplotlib import font_manager

    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *a, **k: [])
    bare = font_manager.FontManager()  # matplotlib's bundled fonts only (DejaVu, no CJK)
    assert not any("CJK" in f.name or "WenQuanYi" in f.name for f in bare.ttflist), (
        "system fonts are not hidden"
    )
    monkeypatch.setattr(font_manager, "fontManager", bare)
    monkeypatch.setattr(font_manager, "findfont", bare.findfont)
    monkeypatch.setattr(viz, "CJK_FONT_FILES", ())
    monkeypatch.setitem(matplotlib.rcParams, "font.sans-serif", ["DejaVu Sans"])
    viz.find_cjk_font.cache_clear()
    try:
        assert viz.find_cjk_font() == "Noto Sans CJK SC"
        viz.plot_translation_attention(translator, SRC, TGT, tmp_path / "a.png")
        used = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))
        assert "noto_cjk_sans_otc" in used
        assert _png_size(tmp_path / "a.png")[0] > 0
    finally:
        viz.find_cjk_font.cache_clear()


@pytest.mark.parametrize("kind", ["cross", "encoder", "decoder"])
def test_attention_view_is_the_models_own_maps(translator, kind):
    maps = translator.attention(SRC, TGT)
    field = {"cross": maps.cross, "encoder": maps.encoder, "decoder": maps.decoder_self}[kind]
    src_tokens, tgt_tokens = translator.tokens_of(SRC, TGT)
    for layer in range(len(field)):
        view = viz.translation_attention(translator, SRC, TGT, kind=kind, layer=layer)
        np.testing.assert_array_equal(view.weights, field[layer][0].numpy())
        np.testing.assert_allclose(view.weights.sum(-1), 1.0, atol=1e-5)  # rows are distributions
        queries = src_tokens if kind == "encoder" else tgt_tokens
        keys = tgt_tokens if kind == "decoder" else src_tokens
        assert (view.query_tokens, view.key_tokens) == (queries, keys)
        assert view.weights.shape == (2, len(queries), len(keys))
    assert viz.translation_attention(translator, SRC, TGT, kind=kind).layer == len(field) - 1
    assert src_tokens[1:-1] == list(SRC) and src_tokens[-1] == "<eos>"


def test_decoder_self_attention_is_causal(translator):
    view = viz.translation_attention(translator, SRC, TGT, kind="decoder")
    upper = np.triu(np.ones(view.weights.shape[1:], dtype=bool), k=1)
    assert (view.weights[:, upper] == 0).all()


def test_figure_draws_every_head_with_the_tokens_on_the_axes(translator):
    view = viz.translation_attention(translator, SRC, TGT, kind="cross")
    fig = viz.attention_figure(
        view.weights, view.query_tokens, view.key_tokens, "t", next_tokens=view.next_tokens
    )
    panels = _heatmap_axes(fig)
    assert len(panels) == view.weights.shape[0]
    for h, ax in enumerate(panels):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), view.weights[h])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["▁", *SRC, "<eos>"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["<bos>", "I", "am", "a", "student"]
        assert ax.get_title() == f"head {h}"
    (right_axis,) = panels[-1].child_axes  # the next tokens, right of the last panel
    right = [t.get_text() for t in right_axis.get_yticklabels()]
    assert right == ["→ I", "→ am", "→ a", "→ student", "→ <eos>"]


def test_one_head_is_drawn_alone_with_its_values(translator):
    view = viz.translation_attention(translator, SRC, TGT, kind="encoder", layer=0)
    fig = viz.attention_figure(view.weights, view.query_tokens, view.key_tokens, heads=[1])
    (ax,) = _heatmap_axes(fig)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), view.weights[1])
    values = [float(t.get_text()) for t in ax.texts]
    np.testing.assert_allclose(values, view.weights[1].ravel(), atol=0.005)


def test_language_model_self_attention():
    from aiayn.data.tokenizers import load_tokenizer
    from aiayn.modeldir import load_model_dir

    loaded = load_model_dir(tiny_lm_model_dir())
    tokenizer = load_tokenizer(loaded.tokenizer_path("text"))
    model, text = loaded.model, "the cat sat"
    ids = torch.tensor([tokenizer.encode(text)])
    # The maps come from the model itself (GPT.attention_maps), one per layer.
    maps = model.attention_maps(ids).decoder_self
    assert [tuple(m.shape) for m in maps] == [(1, 2, len(text), len(text))] * 2
    for layer in (0, 1):
        view = viz.lm_attention(model, tokenizer, text, layer)
        assert view.kind == "self" and view.weights.shape == (2, len(text), len(text))
        assert view.query_tokens == view.key_tokens == list(text)
        assert view.next_tokens == [*text[1:], "…"]
        np.testing.assert_allclose(view.weights.sum(-1), 1.0, atol=1e-5)
        upper = np.triu(np.ones((len(text), len(text)), dtype=bool), k=1)
        assert (view.weights[:, upper] == 0).all()  # causal: nothing from the future
    with pytest.raises(AiaynError, match="layer 2 does not exist"):
        viz.lm_attention(model, tokenizer, text, 2)
    with pytest.raises(AiaynError, match="the model reads at most 48"):
        viz.lm_attention(model, tokenizer, "the cat " * 7, 0)


def test_plot_translation_attention_writes_a_png_of_the_figure_size(translator, tmp_path):
    out = tmp_path / "sub" / "attention.png"
    view = viz.plot_translation_attention(translator, SRC, TGT, out)
    fig = viz.attention_figure(
        view.weights, view.query_tokens, view.key_tokens, view.title, None, view.next_tokens
    )
    assert _png_size(out) == _expected_size(fig)
    assert view.kind == "cross" and view.layer == 1
    assert not list(out.parent.glob(".*tmp*"))  # written atomically: no temporary left behind


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "sideways"}, "unknown attention kind"),
        ({"layer": 2}, "layer 2 does not exist"),
        ({"layer": -3}, "layer -3 does not exist"),
        ({"head": 2}, "head 2 does not exist"),
    ],
)
def test_bad_choices_are_clear_errors(translator, tmp_path, kwargs, message):
    with pytest.raises(AiaynError, match=message):
        viz.plot_translation_attention(translator, SRC, TGT, tmp_path / "a.png", **kwargs)
    assert not (tmp_path / "a.png").exists()


def test_mismatched_tokens_are_an_error():
    with pytest.raises(AiaynError, match="2 query and 3 key tokens"):
        viz.attention_figure(torch.full((3, 3), 1 / 3), ["a", "b"], ["x", "y", "z"])


def test_display_token_drops_the_word_marker():
    assert viz.display_token("▁student") == "student"
    assert viz.display_token("ent") == "ent"
    assert viz.display_token("▁") == "▁"
    assert [viz.display_token(t) for t in (" ", "\n", "\t")] == ["▁", "↵", "⇥"]


def test_positions_picture(tmp_path):
    out = tmp_path / "positions.png"
    picture = viz.plot_positions(out, max_len=100, d_model=128)
    assert _png_size(out) == (1950, 840)  # 13 x 5.6 inches at 150 dpi
    np.testing.assert_array_equal(picture.table, sinusoidal_table(100, 128).numpy())
    np.testing.assert_allclose(np.diag(picture.similarity), 64.0, rtol=1e-5)  # D/2
    fig, _ = viz.positions_figure(100, 128)
    drawn = [np.asarray(ax.images[0].get_array()) for ax in _heatmap_axes(fig)]
    np.testing.assert_array_equal(drawn[0], picture.table[:, picture.columns])
    np.testing.assert_array_equal(drawn[1], picture.similarity)
    assert list(picture.columns[:3]) == [0, 2, 4] and list(picture.columns[64:67]) == [1, 3, 5]
    with pytest.raises(AiaynError, match="even"):
        viz.plot_positions(tmp_path / "p.png", d_model=7)


def _write_metrics(directory, lines):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "metrics.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_metrics_picture(tmp_path):
    records = [
        {"step": 10, "loss": 5.0, "lr": 1e-4, "tokens_per_s": 1000.0},
        {"step": 20, "loss": 4.0, "lr": 2e-4, "tokens_per_s": 1000.0},
        {"step": 20, "loss": None, "lr": 2e-4, "val_loss": 4.5, "bleu": 3.0},
        {"step": 30, "loss": 3.0, "lr": 1.5e-4, "tokens_per_s": 1000.0, "val_loss": 3.5, "bleu": 9},
    ]
    path = _write_metrics(tmp_path / "run", [json.dumps(r) for r in records] + [""])
    out = tmp_path / "metrics.png"
    drawn = viz.plot_metrics(path.parent, out)  # a run directory works as well as the file
    assert drawn["loss"] == [(10, 5.0), (20, 4.0), (30, 3.0)]
    assert drawn["val_loss"] == [(20, 4.5), (30, 3.5)]
    assert drawn["bleu"] == [(20, 3.0), (30, 9.0)]
    assert [v for _, v in drawn["lr"]] == [1e-4, 2e-4, 2e-4, 1.5e-4]
    assert _png_size(out) == (round(4.6 * 3 * viz.DPI), round(3.8 * viz.DPI))
    # A language model's run has no BLEU: two panels.
    lm = _write_metrics(tmp_path / "lm", ['{"step": 1, "loss": 2.0, "lr": 0.001}'])
    assert set(viz.plot_metrics(lm, tmp_path / "lm.png")) == {"loss", "lr"}
    assert _png_size(tmp_path / "lm.png")[0] == round(4.6 * 2 * viz.DPI)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"step": 1, "loss": 2}\n{"step": 2, "lo', r"metrics.jsonl:2: not a JSON object"),
        ('{"loss": 2}\n', r"metrics.jsonl:1: expected a JSON object with a numeric 'step'"),
        ("[1, 2]\n", r"metrics.jsonl:1: expected a JSON object"),
        ("\n\n", "no metric records"),
    ],
)
def test_bad_metrics_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        viz.plot_metrics(path, tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()


def test_missing_metrics_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        viz.plot_metrics(tmp_path / "nothing", tmp_path / "m.png")


def test_unknown_picture_format(tmp_path):
    with pytest.raises(AiaynError, match="cannot write .xyz"):
        viz.plot_positions(tmp_path / "p.xyz", max_len=4, d_model=4)


def test_no_cjk_font_logs_the_install_hint(monkeypatch, caplog):
    monkeypatch.setattr(viz, "find_cjk_font", lambda: None)
    viz._warn_no_cjk_font.cache_clear()
    with caplog.at_level(logging.WARNING, logger="aiayn.viz"):
        assert viz.setup_fonts(["no Chinese here"]) is None
        assert not caplog.records
        assert viz.setup_fonts(["我"]) is None
    assert "fonts-wqy-microhei" in caplog.text
    viz._warn_no_cjk_font.cache_clear()


def test_no_pyplot_figures_are_left_open(translator, tmp_path):
    viz.plot_translation_attention(translator, SRC, TGT, tmp_path / "a.png", kind="decoder")
    viz.plot_positions(tmp_path / "p.png", max_len=8, d_model=8)
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


# ---- the command line ------------------------------------------------------------------------------


def test_cli_attention(tmp_path, capsys):
    model = tiny_translation_model_dir()
    out = tmp_path / "a.png"
    args = ["attention", "--model", str(model), SRC, "--out", str(out), "--device", "cpu"]
    assert (
        main(
            [
                *args,
                "--kind",
                "encoder",
                "--layer",
                "0",
                "--head",
                "1",
                "--beam",
                "1",
                "--max-len",
                "4",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "encoder" and result["layer"] == 0 and result["heads"] == [1]
    assert result["query_tokens"] == ["▁", *SRC, "<eos>"]
    assert _png_size(out)[0] > 300
    assert main([*args, "--target", TGT]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["translation"] == TGT and result["heads"] == [0, 1]
    assert result["query_tokens"] == ["<bos>", "▁I", "▁am", "▁a", "▁student"]


def test_cli_attention_language_model(tmp_path, capsys):
    pytest.importorskip("aiayn.tasks.lm")
    out = tmp_path / "lm.png"
    args = ["attention", "--model", str(tiny_lm_model_dir()), "the cat", "--out", str(out)]
    assert main([*args, "--head", "-1", "--layer", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "self" and result["heads"] == [1] and result["layer"] == 0
    assert result["query_tokens"] == list("the cat")
    assert _png_size(out)[0] > 300
    assert main([*args, "--kind", "cross"]) == 2
    assert "only self-attention" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--head", "5"], "head 5 does not exist"),
        (["--layer", "9"], "layer 9 does not exist"),
        (["--out", "x.doc"], "cannot write .doc"),
    ],
)
def test_cli_attention_bad_input_exits_2(tmp_path, capsys, extra, message):
    model = tiny_translation_model_dir()
    args = ["attention", "--model", str(model), SRC, "--out", str(tmp_path / "a.png")]
    assert main([*args, "--target", TGT, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_attention_missing_model(tmp_path, capsys):
    assert main(["attention", "--model", str(tmp_path), SRC, "--out", str(tmp_path / "a.png")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_cli_plot_commands(tmp_path, capsys):
    out = tmp_path / "pos.png"
    assert main(["plot", "positions", "--out", str(out), "--max-len", "50", "--d-model", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    assert _png_size(out) == (1950, 840)
    run = tmp_path / "run"
    _write_metrics(run, ['{"step": 1, "loss": 2.0, "lr": 0.001}', '{"step": 2, "loss": 1.0}'])
    assert main(["plot", "metrics", str(run)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(run / "metrics.png") and result["series"]["loss"]["points"] == 2
    assert _png_size(run / "metrics.png")[1] == round(3.8 * viz.DPI)
    assert main(["plot", "metrics", str(tmp_path / "none")]) == 2
    assert "no such file" in capsys.readouterr().err
