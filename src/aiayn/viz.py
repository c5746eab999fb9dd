"""Pictures that make attention visible: heatmaps, the sinusoidal encoding, training curves.

* :func:`attention_figure` draws attention weights ``(H, T, S)`` (or one head ``(T, S)``) as heatmaps,
  one panel per head, queries down the side, keys along the top, with a shared colour bar.
* :func:`translation_attention` computes the maps a translation model produces for a sentence pair
  (teacher-forced pass ``src -> tgt``), and :func:`plot_translation_attention` draws and saves them;
  :func:`lm_attention` does the same for a GPT's causal self-attention over a text.
* :func:`plot_positions` draws the paper's sinusoidal encoding and the dot products between positions.
* :func:`plot_metrics` draws loss, validation loss, BLEU and learning rate from ``metrics.jsonl``.

Shapes: H heads, T queries (rows), S keys (columns). Every row of an attention map sums to 1.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so no
global figure state is created or leaked and nothing needs a display. Files are written atomically.
Chinese (and other CJK) text needs a CJK font: :func:`setup_fonts` finds one and registers it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import AiaynError, DataError

# For annotations only: importing viz must not pull in matplotlib or the model code.
if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .tasks.translation import Translator

log = logging.getLogger(__name__)

#: Attention kinds of an encoder-decoder model: CLI name -> (AttentionMaps field, query side, key side).
ATTENTION_KINDS: dict[str, tuple[str, str, str]] = {
    "cross": ("cross", "target", "source"),
    "encoder": ("encoder", "source", "source"),
    "decoder": ("decoder_self", "target", "target"),
}

_KIND_TITLES = {
    "cross": "cross-attention (decoder queries → encoder keys)",
    "encoder": "encoder self-attention",
    "decoder": "decoder self-attention (causal)",
    "self": "self-attention (causal)",
    "patches": "self-attention over the image patches",
}

#: CJK fonts that install from PyPI, in order of preference: (module, the family aiayn draws with).
#: ``noto-cjk-sans-otc`` is a dependency of aiayn, so every install draws Chinese the same way on
#: every system: Noto Sans CJK (OFL) as one collection whose Simplified-Chinese face is used (the
#: collection's first face is the Japanese one, whose glyph forms differ for some characters).
PACKAGED_CJK_FONTS = (
    ("noto_cjk_sans_otc", "Noto Sans CJK SC"),
    ("noto_cjk_sans_jp_regular", "Noto Sans CJK JP"),
)
#: System fonts with CJK glyphs, used when no packaged font is installed (Debian/Ubuntu, Fedora,
#: Arch, macOS, Windows), in order of preference.
CJK_FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Light.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)
#: Family names that cover CJK, for fonts matplotlib already knows about (e.g. from its font cache).
CJK_FONT_FAMILIES = (
    "Noto Sans CJK SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "Droid Sans Fallback",
    "PingFang SC",
    "Microsoft YaHei",
    "SimHei",
)
CJK_INSTALL_HINT = (
    "no CJK font found, so Chinese/Japanese/Korean tokens will be drawn as empty boxes; aiayn's "
    "own font package is missing: `pip install noto-cjk-sans-otc` (or, on Debian/Ubuntu, "
    "`apt-get install fonts-wqy-microhei`)"
)
_CJK_RE = re.compile(
    "[\u2e80-\u2fdf\u3001-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]"
)
_METASPACE = "\u2581"  # ▁: the BPE tokenizer's word-start marker

DPI = 150


# ---- fonts -----------------------------------------------------------------------------------------


def _packaged_fonts() -> list[tuple[str, str]]:
    """(font file, preferred family) of every installed PyPI font package of PACKAGED_CJK_FONTS."""
    import importlib

    found = []
    for module, family in PACKAGED_CJK_FONTS:
        try:
            pkg = importlib.import_module(module)
        except ImportError:
            continue
        path = getattr(pkg, "FONT_PATH", None)
        if path is not None:
            found.append((str(path), family))
    return found


def _families_by_file(manager) -> dict[Path, list[str]]:
    """Font file -> the families of its faces, in face order (a .ttc holds several)."""
    faces: dict[Path, list[tuple[int, str]]] = {}
    for entry in manager.ttflist:
        path, index = Path(entry.fname).resolve(), getattr(entry, "index", 0)
        faces.setdefault(path, []).append((index, entry.name))
    return {path: [name for _, name in sorted(found)] for path, found in faces.items()}


@functools.lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """Register a CJK-capable font with matplotlib and return its family name (None if there is none).

    aiayn's own font package comes first, then the system's fonts. matplotlib never picks a CJK font
    by itself, and its font cache does not know about fonts installed after the cache was built, so
    the font file is added explicitly. The search runs once per process.
    """
    from matplotlib import font_manager

    manager = font_manager.fontManager
    known = _families_by_file(manager)
    # A system font's first face is the one to use (WenQuanYi's second face is monospaced).
    candidates = [*_packaged_fonts(), *((path, None) for path in CJK_FONT_FILES)]
    for path, preferred in candidates:
        if not Path(path).is_file():
            continue
        resolved = Path(path).resolve()
        if resolved not in known:
            try:
                manager.addfont(str(resolved))
            except (OSError, RuntimeError, ValueError) as e:  # unreadable or unsupported file
                log.debug("could not load font %s: %s", resolved, e)
                continue
            known = _families_by_file(manager)
        families = known.get(resolved, [])
        if families:
            return preferred if preferred in families else families[0]
    names = {f.name for f in manager.ttflist}
    return next((family for family in CJK_FONT_FAMILIES if family in names), None)


def setup_fonts(texts: Sequence[str] = ()) -> str | None:
    """Make matplotlib draw CJK text: a CJK font first in ``font.sans-serif``, then DejaVu Sans.

    The generic ``sans-serif`` family resolves to ONE font (matplotlib falls back glyph by glyph only
    across the names in ``font.family``), so the CJK font, whose Latin letters are fine, comes first.
    When no CJK font exists and ``texts`` contain CJK characters, a warning with an install hint is
    logged (drawing still works; those glyphs come out as boxes).

    Args:
        texts: the strings about to be drawn (only used to decide whether to warn).

    Returns:
        The CJK family in use, or None.
    """
    import matplotlib

    family = find_cjk_font()
    if family is None:
        if any(_CJK_RE.search(t) for t in texts):
            _warn_no_cjk_font()
        return None
    current = list(matplotlib.rcParams["font.sans-serif"])
    if current[:2] != [family, "DejaVu Sans"]:
        rest = [f for f in current if f not in (family, "DejaVu Sans")]
        matplotlib.rcParams["font.sans-serif"] = [family, "DejaVu Sans", *rest]
    return family


@functools.lru_cache(maxsize=1)
def _warn_no_cjk_font() -> None:
    log.warning(CJK_INSTALL_HINT)


#: How a whitespace token is labelled (a blank label would look like a missing one).
_BLANK_LABELS = {"\n": "\u21b5", "\t": "\u21e5", "\r": "\u21b5"}


def display_token(token: str) -> str:
    """A token as it is labelled on an axis: the BPE word-start marker ``▁`` is dropped.

    A token that is nothing but the marker (a sentence that begins with a CJK character starts with
    one) keeps it, as does a space of a character-level model (``▁``, as SentencePiece writes it);
    a line break is ``↵`` and a tab ``⇥``, so no label is ever blank.
    """
    stripped = token.replace(_METASPACE, "")
    if stripped in _BLANK_LABELS:
        return _BLANK_LABELS[stripped]
    return stripped if stripped.strip() else _METASPACE


# ---- saving ----------------------------------------------------------------------------------------


def new_figure(width: float, height: float) -> Figure:
    """A figure outside pyplot (no global state) with constrained layout, so labels never overlap."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` atomically; the format comes from the suffix (``.png`` if none).

    Raises:
        AiaynError: the suffix names a format matplotlib cannot write.
    """
    from .training.checkpoint import atomic_write

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise AiaynError(f"{path}: cannot write .{fmt} pictures; use one of .png, .svg, .pdf")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    return path


# ---- attention -------------------------------------------------------------------------------------


def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) for n panels: 4 heads as 2x2, more in rows of 4."""
    cols = {1: 1, 2: 2, 3: 3, 4: 2}.get(n, 4)
    return math.ceil(n / cols), cols


def _label_size(n_tokens: int) -> float:
    return 10 if n_tokens <= 12 else 8.5 if n_tokens <= 24 else 7 if n_tokens <= 40 else 5.5


def _tick_stride(n_tokens: int) -> int:
    """Label every token up to 60; beyond that every k-th, so labels never overprint."""
    return 1 if n_tokens <= 60 else math.ceil(n_tokens / 60)


def attention_figure(
    weights: Any,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    title: str = "",
    heads: Sequence[int] | None = None,
    next_tokens: Sequence[str] | None = None,
) -> Figure:
    """Heatmaps of attention weights, one panel per head, with the tokens on the axes.

    Args:
        weights: ``(H, T, S)`` or ``(T, S)`` weights (tensor or array); row t is what query t attends to.
        query_tokens: the T query tokens (rows, left axis).
        key_tokens: the S key tokens (columns, top axis).
        title: figure title.
        heads: indices of the heads in ``weights`` to draw (their numbers label the panels); all heads
            when None. With one head and a small map, every cell also shows its value.
        next_tokens: for decoder queries, the T tokens each row predicts; labelled on the right
            (``→ token``), so a row reads "while writing this word, the decoder looked here".

    Returns:
        The figure. Panel ``i`` is ``fig.axes[i]``; its image array is the ``(T, S)`` map drawn.

    Raises:
        AiaynError: shapes and token counts disagree, or a head index is out of range.
    """
    w = _as_numpy(weights)
    if w.ndim == 2:
        w = w[None]  # (1, T, S)
    if w.ndim != 3:
        raise AiaynError(f"attention weights must be (H, T, S) or (T, S), got shape {w.shape}")
    H, T, S = w.shape
    if len(query_tokens) != T or len(key_tokens) != S:
        raise AiaynError(
            f"attention map is {T}x{S} but there are {len(query_tokens)} query and "
            f"{len(key_tokens)} key tokens"
        )
    if next_tokens is not None and len(next_tokens) != T:
        raise AiaynError(f"{len(next_tokens)} next tokens for {T} queries")
    heads = list(range(H)) if heads is None else [int(h) for h in heads]
    for h in heads:
        if not -H <= h < H:
            raise AiaynError(f"head {h} does not exist: the map has {H} heads (0..{H - 1})")
    heads = [h % H for h in heads]
    q_labels = [display_token(t) for t in query_tokens]
    k_labels = [display_token(t) for t in key_tokens]
    n_labels = None if next_tokens is None else [f"→ {display_token(t)}" for t in next_tokens]
    setup_fonts([title, *q_labels, *k_labels, *(n_labels or [])])

    size = _label_size(max(T, S))
    annotate = len(heads) == 1 and T <= 14 and S <= 14
    rotate = 90 if max(map(len, k_labels), default=0) > 2 else 0
    # Square cells, large enough for a printed value, shrinking so a panel stays under ~8 inches;
    # the panel is the cells plus the room its labels take (estimated from their printed width).
    cell = min(0.45 if annotate else 0.32, max(8.0 / max(T, S), 0.1))
    left_w = max((_text_width(t, size) for t in q_labels), default=0.0) + 0.35
    right_w = 0.0 if n_labels is None else max(_text_width(t, size) for t in n_labels) + 0.1
    top_h = max((_text_width(t, size) for t in k_labels), default=0.0) if rotate else size / 72
    panel_w = cell * S + left_w + right_w + 0.15
    panel_h = cell * T + top_h + 0.7 + (0.35 if len(heads) > 1 else 0.0)
    rows, cols = _grid(len(heads))
    while cols > 1 and cols * panel_w > 16.0:  # wide maps (long sources) stack instead
        cols = math.ceil(cols / 2)
        rows = math.ceil(len(heads) / cols)
    width = cols * panel_w + 1.0  # + the colour bar
    title = _wrap_title(title, width)
    title_h = 0.3 * (title.count("\n") + 1) if title else 0.0
    fig = new_figure(width, rows * panel_h + title_h)
    if title:
        fig.suptitle(title, fontsize=12)
    vmax = float(w[heads].max()) if w.size else 1.0
    vmax = vmax if vmax > 0 else 1.0  # a map of zeros (fully masked) still gets a usable scale
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    ks, qs = _tick_stride(S), _tick_stride(T)
    for i, ax in enumerate(axes.flat):
        if i >= len(heads):
            ax.set_visible(False)  # an incomplete last row
            continue
        h = heads[i]
        image = ax.imshow(
            w[h], cmap="viridis", vmin=0.0, vmax=vmax, aspect="equal", interpolation="nearest"
        )
        if len(heads) > 1:
            ax.set_title(f"head {h}", fontsize=10)
        ax.set_xticks(range(0, S, ks), [k_labels[j] for j in range(0, S, ks)], fontsize=size)
        ax.set_yticks(range(0, T, qs), [q_labels[j] for j in range(0, T, qs)], fontsize=size)
        # Keys along the top, as in the notes' α matrices: read a row left to right.
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", labelrotation=rotate)
        ax.tick_params(length=0)
        if i % cols == 0:
            ax.set_ylabel("query", fontsize=9)
        if i >= len(heads) - cols:
            ax.set_xlabel("key (attended to)", fontsize=9)
        if n_labels is not None and (i % cols == cols - 1 or i == len(heads) - 1):
            right = ax.secondary_yaxis("right")
            right.set_yticks(range(0, T, qs), [n_labels[j] for j in range(0, T, qs)], fontsize=size)
            right.tick_params(length=0)
        if annotate:
            _annotate_cells(ax, w[h], vmax)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85, pad=0.02, aspect=30)
    bar.set_label("attention weight", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return fig


def _text_width(text: str, points: float) -> float:
    """Rough printed width in inches: a Latin character is ~0.6 em, a CJK one a full em."""
    ems = sum(1.0 if _CJK_RE.match(c) else 0.6 for c in text)
    return ems * points / 72


def _wrap_title(title: str, width_in: float) -> str:
    """Break a title at ", " so each line fits ``width_in`` inches at 12 points (~0.1 in a char)."""
    per_line = max(int((width_in - 0.3) / 0.1), 20)
    lines: list[str] = []
    for part in title.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= per_line:
            lines[-1] += ", " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _annotate_cells(ax, w: np.ndarray, vmax: float) -> None:
    for t in range(w.shape[0]):
        for s in range(w.shape[1]):
            value = w[t, s]
            # Light text on the dark end of viridis, dark text on the bright end.
            color = "white" if value < 0.55 * vmax else "black"
            ax.text(s, t, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


@dataclass(frozen=True)
class AttentionView:
    """One layer's attention maps for one sentence pair: what a heatmap draws.

    Attributes:
        kind: ``cross``, ``encoder`` or ``decoder`` (translation models); ``self`` (language models).
        layer: the layer index (non-negative).
        num_layers: layers of this kind in the model.
        weights: ``(H, T, S)`` float32 array; row t sums to 1.
        query_tokens: the T query tokens (raw tokenizer strings).
        key_tokens: the S key tokens.
        next_tokens: for decoder-side queries, the token each query position predicts (the target
            tokens shifted by one, ending in ``<eos>``; a language model's last guess is ``…``);
            None for encoder self-attention.
    """

    kind: str
    layer: int
    num_layers: int
    weights: np.ndarray
    query_tokens: list[str]
    key_tokens: list[str]
    next_tokens: list[str] | None = None

    @property
    def title(self) -> str:
        """E.g. ``cross-attention (decoder queries → encoder keys), layer 2 of 2``."""
        return f"{_KIND_TITLES[self.kind]}, layer {self.layer + 1} of {self.num_layers}"


def _check_kind(kind: str) -> None:
    if kind not in ATTENTION_KINDS:
        raise AiaynError(
            f"unknown attention kind {kind!r}; choose from {', '.join(ATTENTION_KINDS)}"
        )


def translation_attention(
    translator: Translator, src_text: str, tgt_text: str, kind: str = "cross", layer: int = -1
) -> AttentionView:
    """The attention maps of one layer of a translation model, teacher-forced on ``src -> tgt``.

    Source tokens end with ``<eos>``; target (decoder input) tokens start with ``<bos>``, so the row of
    ``<bos>`` is the query that chose the first output word.

    Args:
        translator: a loaded :class:`~aiayn.tasks.translation.Translator`.
        src_text: the source sentence.
        tgt_text: its translation (usually the model's own output).
        kind: ``cross``, ``encoder`` (self-attention) or ``decoder`` (causal self-attention).
        layer: layer index; negative counts from the last.

    Raises:
        AiaynError: unknown kind, a layer that does not exist, or an empty source.
    """
    _check_kind(kind)
    if not src_text.strip():
        raise AiaynError("the source text is empty")
    field, q_side, k_side = ATTENTION_KINDS[kind]
    maps = getattr(translator.attention(src_text, tgt_text), field)
    n = len(maps)
    if n == 0:
        raise AiaynError(f"this model has no {kind} attention layers")
    if not -n <= layer < n:
        raise AiaynError(
            f"layer {layer} does not exist: the model has {n} {kind} layers (0..{n - 1})"
        )
    src_tokens, tgt_tokens = translator.tokens_of(src_text, tgt_text)
    sides = {"source": src_tokens, "target": tgt_tokens}
    weights = _as_numpy(maps[layer][0])  # (H, T, S) of the only sentence in the batch
    # Decoder position t reads target token t (<bos> first) and predicts token t + 1 (<eos> last).
    next_tokens = [*tgt_tokens[1:], "<eos>"] if q_side == "target" else None
    return AttentionView(kind, layer % n, n, weights, sides[q_side], sides[k_side], next_tokens)


def plot_attention_view(view: AttentionView, path: str | Path, head: int | None = None) -> Path:
    """Draw ``view`` (a grid of all heads, or the one ``head`` with its values) into ``path``.

    Raises:
        AiaynError: ``head`` does not exist.
    """
    H = view.weights.shape[0]
    if head is not None and not -H <= head < H:
        raise AiaynError(f"head {head} does not exist: the map has {H} heads (0..{H - 1})")
    heads = None if head is None else [head % H]
    title = view.title if head is None else f"{view.title}, head {head % H}"
    fig = attention_figure(
        view.weights, view.query_tokens, view.key_tokens, title, heads, view.next_tokens
    )
    return save_figure(fig, path)


def plot_translation_attention(
    translator: Translator,
    src_text: str,
    tgt_text: str,
    path: str | Path,
    kind: str = "cross",
    layer: int = -1,
    head: int | None = None,
) -> AttentionView:
    """Draw a translation model's attention for ``src -> tgt`` and write it to ``path``.

    Args:
        translator: a loaded :class:`~aiayn.tasks.translation.Translator`.
        src_text: the source sentence.
        tgt_text: its translation.
        path: the picture file (``.png``; ``.svg``/``.pdf`` work too).
        kind: ``cross``, ``encoder`` or ``decoder``.
        layer: layer index; negative counts from the last (default: the last layer).
        head: one head to draw, or None for a grid of all heads.

    Returns:
        The maps that were drawn (all heads of the layer, whichever were drawn).
    """
    view = translation_attention(translator, src_text, tgt_text, kind, layer)
    plot_attention_view(view, path, head)
    return view


def lm_attention_maps(model: Any, ids: Sequence[int]) -> list[Any]:
    """Per-layer causal self-attention weights ``(1, H, T, T)`` of a GPT over the token ``ids``."""
    import torch

    device = next(model.parameters()).device
    return model.attention_maps(torch.tensor([list(ids)], device=device)).decoder_self


def lm_attention(model: Any, tokenizer: Any, text: str, layer: int = -1) -> AttentionView:
    """One layer's self-attention of a GPT language model over ``text``.

    Args:
        model: a :class:`~aiayn.models.gpt.GPT`.
        tokenizer: its tokenizer.
        text: the text (at most the model's ``max_len`` tokens).
        layer: layer index; negative counts from the last.

    Raises:
        AiaynError: empty or too long a text, or a layer that does not exist.
    """
    ids = tokenizer.encode(text)
    if not ids:
        raise AiaynError("the text has no tokens")
    if len(ids) > model.config.max_len:
        raise AiaynError(
            f"the text has {len(ids)} tokens; the model reads at most {model.config.max_len}"
        )
    maps = lm_attention_maps(model, ids)
    tokens = [tokenizer.id_to_token(i) for i in ids]
    return _self_attention_view("self", maps, layer, tokens, [*tokens[1:], "…"])


def _self_attention_view(
    kind: str, maps: Sequence[Any], layer: int, tokens: list[str], next_tokens: list[str] | None
) -> AttentionView:
    """The view of one layer of per-layer ``(1, H, T, T)`` self-attention maps."""
    n = len(maps)
    if not -n <= layer < n:
        raise AiaynError(f"layer {layer} does not exist: the model has {n} layers (0..{n - 1})")
    weights = _as_numpy(maps[layer][0])  # (H, T, T)
    return AttentionView(kind, layer % n, n, weights, tokens, tokens, next_tokens)


def bert_attention(model: Any, tokenizer: Any, text: str, layer: int = -1) -> AttentionView:
    """One layer's (bidirectional) self-attention of a BERT encoder over ``text``, ``[CLS]`` and
    ``[SEP]`` included.

    Args:
        model: a :class:`~aiayn.models.bert.BertModel` (a ``BertForMaskedLM`` is unwrapped).
        tokenizer: its WordPiece tokenizer.
        text: the sentence (cut at the model's ``max_len`` tokens).
        layer: layer index; negative counts from the last.
    """
    import torch

    encoder = getattr(model, "bert", model)
    ids = tokenizer.encode(text)[: encoder.config.max_len]
    device = next(encoder.parameters()).device
    with torch.inference_mode():
        maps = encoder.attention_maps(torch.tensor([ids], device=device)).encoder
    tokens = [tokenizer.id_to_token(i) for i in ids]
    return _self_attention_view("encoder", maps, layer, tokens, None)


def vit_attention(model: Any, image: Any, layer: int = -1) -> AttentionView:
    """One layer's self-attention of a Vision Transformer over one image: ``[CLS]`` and the patches,
    named by row and column (``r0c0`` is the top-left patch).

    Args:
        model: a :class:`~aiayn.models.vit.ViT`.
        image: ``(C, S, S)``, normalised as the model was trained.
        layer: layer index; negative counts from the last.
    """
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        maps = model.attention_maps(image.unsqueeze(0).to(device)).encoder
    side = model.config.image_size // model.config.patch_size
    tokens = ["[CLS]"] + [f"r{r}c{c}" for r in range(side) for c in range(side)]
    return _self_attention_view("patches", maps, layer, tokens, None)


# ---- positions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionsPicture:
    """What :func:`plot_positions` draws.

    Attributes:
        table: the ``(max_len, d_model)`` encoding, columns in the paper's order (sin, cos, sin, ...).
        columns: the column order of the image: the sines (even dimensions) first, then the cosines, so
            each half is a smooth fan of frequencies instead of stripes. The image is
            ``table[:, columns]``.
        similarity: ``(max_len, max_len)`` dot products ``PE(p) · PE(q)``.
    """

    table: np.ndarray
    columns: np.ndarray
    similarity: np.ndarray


def positions_figure(max_len: int = 100, d_model: int = 128) -> tuple[Figure, PositionsPicture]:
    """The sinusoidal encoding as an image, and the dot-product similarity between positions.

    Raises:
        AiaynError: sizes out of range (``d_model`` must be even and > 0, ``max_len`` > 1).
    """
    from .positional import sinusoidal_table

    if not 2 <= max_len <= 10_000:
        raise AiaynError(f"max_len must be in 2..10000, got {max_len}")
    if not 2 <= d_model <= 4096 or d_model % 2:
        raise AiaynError(f"d_model must be even and in 2..4096, got {d_model}")
    table = sinusoidal_table(max_len, d_model).numpy()  # (L, D)
    columns = np.concatenate([np.arange(0, d_model, 2), np.arange(1, d_model, 2)])  # sin | cos
    similarity = table @ table.T  # (L, L); the diagonal is D/2 (each sin/cos pair has norm 1)
    half = d_model // 2
    setup_fonts()
    fig = new_figure(13.0, 5.6)
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1.0])
    im = left.imshow(
        table[:, columns], cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest"
    )
    left.axvline(half - 0.5, color="black", linewidth=0.8)
    # Column j of the left half is dimension 2j (a sine), column half + j is dimension 2j + 1.
    ticks = [0, half // 2, half, half + half // 2]
    left.set_xticks(ticks, [str(2 * c if c < half else 2 * (c - half) + 1) for c in ticks])
    for center, text in (
        (half / 2, "sin: even dimensions 2i"),
        (1.5 * half, "cos: odd dimensions 2i+1"),
    ):
        left.text(
            center, 1.01, text, transform=left.get_xaxis_transform(), ha="center", fontsize=10
        )
    left.set_xlabel("embedding dimension (wavelength grows from 2π to 10000·2π, left to right)")
    left.set_ylabel("position")
    fig.colorbar(im, ax=left, shrink=0.9, pad=0.02).set_label("value")
    im = right.imshow(similarity, cmap="viridis", aspect="equal", interpolation="nearest")
    right.set_title("PE(p) · PE(q): the closer two positions, the more alike", fontsize=10, pad=14)
    right.set_xlabel("position q")
    right.set_ylabel("position p")
    fig.colorbar(im, ax=right, shrink=0.9, pad=0.02).set_label("dot product")
    fig.suptitle(f"Sinusoidal positional encoding (d_model = {d_model})", fontsize=12)
    return fig, PositionsPicture(table, columns, similarity)


def plot_positions(path: str | Path, max_len: int = 100, d_model: int = 128) -> PositionsPicture:
    """Write :func:`positions_figure` to ``path``; returns the arrays drawn."""
    fig, picture = positions_figure(max_len, d_model)
    save_figure(fig, path)
    return picture


# ---- training curves -------------------------------------------------------------------------------

#: metrics.jsonl keys drawn by :func:`plot_metrics`, in panel order: (panel title, [(key, label)]).
_METRIC_PANELS = (
    # The training objective may include label smoothing (translation) and so sit above the plain
    # cross-entropy measured on validation data.
    ("loss (nats per token)", (("loss", "training objective"), ("val_loss", "validation CE"))),
    ("BLEU (validation)", (("bleu", "BLEU"),)),
    ("learning rate", (("lr", "learning rate"),)),
)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (one JSON object per line; blank lines skipped).

    Raises:
        DataError: the file is missing, or a line is not a JSON object with a ``step``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            path, "no such file (train a model first; it writes metrics.jsonl)"
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 ({e.reason})") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"not a JSON object ({e.msg})", number) from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int | float):
            raise DataError(path, "expected a JSON object with a numeric 'step'", number)
        records.append(record)
    if not records:
        raise DataError(path, "no metric records")
    return records


def _series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    out = []
    for r in records:
        value = r.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append((float(r["step"]), float(value)))
    return out


def metrics_figure(
    records: list[dict[str, Any]], title: str = "training"
) -> tuple[Figure, dict[str, list[tuple[float, float]]]]:
    """Training curves: loss and validation loss, BLEU (when recorded), learning rate.

    Returns:
        The figure and the ``{key: [(step, value), ...]}`` series drawn.
    """
    panels = []
    drawn: dict[str, list[tuple[float, float]]] = {}
    for panel_title, keys in _METRIC_PANELS:
        lines = [(key, label, _series(records, key)) for key, label in keys]
        lines = [line for line in lines if line[2]]
        if lines:
            panels.append((panel_title, lines))
            drawn.update({key: points for key, _, points in lines})
    if not panels:
        raise AiaynError("the metrics hold no loss, BLEU or learning-rate values to draw")
    last_step = max(float(r["step"]) for r in records)
    fig = new_figure(4.6 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, lines) in zip(axes, panels):
        for key, label, points in lines:
            steps, values = zip(*points)
            # Eval-step metrics are sparse: markers show where each measurement is.
            sparse = key in ("val_loss", "bleu")
            ax.plot(steps, values, marker="o" if sparse else None, markersize=4, label=label)
        ax.set_title(panel_title, fontsize=11)
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
        if panel_title.startswith("learning rate"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if panel_title.startswith("BLEU"):
            ax.set_ylim(-2, 102)  # BLEU's whole range (0-100), so progress reads at a glance
        ax.set_xlim(0, last_step)
        if len(lines) > 1:
            ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=12)
    return fig, drawn


def plot_metrics(
    metrics_jsonl_path: str | Path, out_png: str | Path
) -> dict[str, list[tuple[float, float]]]:
    """Draw the curves of a training run's ``metrics.jsonl`` (or its directory) into ``out_png``.

    Returns:
        The ``{key: [(step, value), ...]}`` series drawn.

    Raises:
        DataError: the file is missing or malformed (the message names the line).
    """
    path = Path(metrics_jsonl_path)
    records = read_metrics(path)
    run = path.name if path.is_dir() else path.parent.name
    fig, drawn = metrics_figure(records, title=f"training run {run}" if run else "training")
    save_figure(fig, out_png)
    return drawn
