"""Language-model data: text in, tokenizer and fixed-length token windows out.

Shapes: B batch (windows), T context (tokens a window predicts), N tokens in the whole text.

* Text: ``builtin:shakespeare`` (split by play, see :mod:`aiayn.data.shakespeare`) or any UTF-8 file or
  folder (:func:`aiayn.data.corpus.read_text`). Without separate validation text, the last tenth is
  held out, cut at a line start, as nanoGPT does: the validation text then comes from later in the
  document than anything trained on.
* Tokenizers: characters (:class:`~aiayn.data.tokenizers.CharTokenizer`) or byte-level BPE. The BPE
  here is GPT-2's kind: every byte is in the vocabulary and whitespace is kept, so decoding gives back
  the text exactly, line breaks included (the translation BPE normalises whitespace, which would turn a
  play into one long line).
* Windows: each epoch cuts the token stream into non-overlapping windows of T + 1 tokens (inputs are
  the first T, targets the last T) at a random offset, and shuffles them, so every token is trained on
  once per epoch and window boundaries move from epoch to epoch. The order depends only on
  ``(seed, epoch)``, which is what exact resume needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from torch import Tensor

from ..errors import AiaynError, ConfigError
from .builtin.specs import BuiltinKind, builtin_names, is_builtin, resolve_builtin
from .corpus import read_text
from .tokenizers import SPECIAL_TOKENS, UNK_TOKEN, BPETokenizer, CharTokenizer, Tokenizer

log = logging.getLogger(__name__)

TOKENIZER_KINDS = ("char", "bpe")
BUILTIN_TEXTS = builtin_names(BuiltinKind.TEXT)
#: Share of a single text held out for validation when no validation text is given.
VALID_FRACTION = 0.1


def load_text(spec: str, split: str = "train") -> str:
    """The text named by ``spec``: ``builtin:NAME`` (its ``split``) or a UTF-8 file or folder.

    Raises:
        AiaynError: an unknown built-in name or one that is not a text, a built-in whose package is
            missing.
        DataError: an unreadable, non-UTF-8 or empty file (with file and line).
    """
    if is_builtin(spec):
        resolve_builtin(spec, BuiltinKind.TEXT)  # Shakespeare is the only built-in text
        from .shakespeare import load_shakespeare

        return load_shakespeare(split)
    return read_text(spec)


def split_text(text: str, fraction: float = VALID_FRACTION) -> tuple[str, str]:
    """Cut ``text`` into (train, valid), valid being the last ``fraction``, starting at a line start.

    Raises:
        AiaynError: the text is too short to hold anything out.
    """
    if len(text) < 2:
        raise AiaynError("the text is too short to hold out validation text; pass --valid")
    cut = int(len(text) * (1 - fraction))
    newline = text.find("\n", cut)
    if newline != -1 and newline + 1 < len(text) and newline - cut < max(1000, len(text) // 100):
        cut = newline + 1
    cut = min(max(cut, 1), len(text) - 1)
    return text[:cut], text[cut:]


def load_train_valid(text_spec: str, valid_spec: str | None = None) -> tuple[str, str]:
    """Training and validation text: ``valid_spec`` if given, a built-in's own split, or the tail."""
    if valid_spec is not None:
        return load_text(text_spec, "train"), load_text(valid_spec, "valid")
    if is_builtin(text_spec):
        return load_text(text_spec, "train"), load_text(text_spec, "valid")
    return split_text(load_text(text_spec))


def train_byte_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
    """Learn a byte-level BPE (GPT-2's scheme) with aiayn's special tokens at ids 0-3.

    Every byte is a token, so no text is ever ``<unk>`` and decoding reproduces the input exactly.

    Args:
        texts: training text (any iterable of strings, e.g. lines).
        vocab_size: target size, special tokens and the 256 byte tokens included.
        min_frequency: a pair must occur this often to be merged.

    Raises:
        ConfigError: ``vocab_size`` is not above 260 (the special and byte tokens).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size <= len(SPECIAL_TOKENS) + len(alphabet):
        raise ConfigError(
            f"byte-level BPE needs vocab_size > {len(SPECIAL_TOKENS) + len(alphabet)}, "
            f"got {vocab_size}"
        )
    hf = HFTokenizer(BPE(unk_token=UNK_TOKEN))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(hf)


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """A ``char`` or byte-level ``bpe`` tokenizer learned from ``text``."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        size = vocab_size or 2048
        return train_byte_bpe(text.splitlines(keepends=True), size)
    raise ConfigError(f"tokenizer must be one of {TOKENIZER_KINDS}, got {kind!r}")


def encode_text(tokenizer: Tokenizer, text: str) -> Tensor:
    """The whole text as one 1-D int64 tensor of token ids.

    Characters: one vectorised lookup. BPE: line by line in parallel (a merge never crosses a line
    break, so this equals encoding the text in one piece).
    """
    if isinstance(tokenizer, CharTokenizer):
        return torch.from_numpy(tokenizer.encode_array(text).astype(np.int64))
    ids = tokenizer.encode_batch(text.splitlines(keepends=True))
    flat = np.fromiter((i for line in ids for i in line), dtype=np.int64)
    return torch.from_numpy(flat)


class TokenWindows:
    """Training batches of ``(B, T + 1)`` windows cut from one token stream, reshuffled each epoch.

    Distributed: every rank computes the same batches and rank ``r`` takes batches ``r, r + W, ...``
    (W = ``world_size``); the last ``len % W`` batches of an epoch are dropped so that every rank runs
    the same number of steps.

    Args:
        tokens: ``(N,)`` token ids.
        context: T, the tokens each window predicts.
        batch_size: B, windows per batch.
        seed: with the epoch, fixes the windows and their order.
        rank: this process's rank.
        world_size: number of processes.

    Raises:
        AiaynError: the text is shorter than one window.
    """

    def __init__(
        self,
        tokens: Tensor,
        context: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if tokens.numel() < context + 1:
            raise AiaynError(
                f"the training text has {tokens.numel()} tokens, fewer than one window of "
                f"context + 1 = {context + 1}; use a shorter context or more text"
            )
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._offsets = torch.arange(context + 1)  # (T + 1,)

    def starts(self, epoch: int) -> Tensor:
        """``(batches, B)`` window start offsets of ``epoch``."""
        N, T, B = self.tokens.numel(), self.context, self.batch_size
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        shift = int(torch.randint(0, T, (1,), generator=g))
        count = (N - 1 - shift) // T  # windows of T + 1 tokens that fit after the shift
        if count < B:
            # Less text than one batch of distinct windows: draw overlapping windows instead.
            return torch.randint(0, N - T, (1, B), generator=g)
        starts = shift + T * torch.randperm(count, generator=g)[: count - count % B]
        return starts.view(-1, B)

    def batches(self, epoch: int) -> Iterator[Tensor]:
        """This rank's ``(B, T + 1)`` windows of ``epoch``, in order."""
        starts = self.starts(epoch)
        if self.world_size > 1:
            usable = len(starts) - len(starts) % self.world_size
            starts = starts[self.rank : usable : self.world_size]
        for row in starts:
            yield self.tokens[row[:, None] + self._offsets]  # (B, T + 1)


def eval_windows(
    num_tokens: int, context: int, max_tokens: int | None = None
) -> list[tuple[int, int]]:
    """Windows that score every token of a text once: ``(start, first target counted)`` pairs.

    A window spans ``start .. start + T`` and predicts positions ``start + 1 .. start + T``; the
    targets before ``start + skip + 1`` were scored by an earlier window (only the last window,
    aligned to the end of the text, overlaps). With ``max_tokens``, an evenly spaced subset of the
    full windows that scores about that many tokens (a cheaper estimate for periodic validation).

    Args:
        num_tokens: N, tokens in the text (N - 1 of them are targets).
        context: T.
        max_tokens: score at most about this many tokens.

    Returns:
        ``(start, skip)`` per window: score the window's targets from index ``skip`` on.
    """
    T = min(context, num_tokens - 1)
    if T < 1:
        return []
    full = (num_tokens - 1) // T
    windows = [(k * T, 0) for k in range(full)]
    rest = (num_tokens - 1) - full * T
    if rest:
        windows.append((num_tokens - 1 - T, T - rest))
    if max_tokens is not None and len(windows) * T > max_tokens:
        m = max(1, max_tokens // T)
        picks = np.linspace(0, full - 1, m).round().astype(int)
        windows = [windows[i] for i in sorted(set(picks.tolist()))]
    return windows
