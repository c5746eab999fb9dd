"""Tokenizers: subword BPE (built on Hugging Face ``tokenizers``) and a character tokenizer.

Every tokenizer shares four special tokens with fixed ids, so models, collate functions and decoders can
rely on them without asking the tokenizer::

    <pad>=0  <bos>=1  <eos>=2  <unk>=3

``encode`` never adds ``<bos>``/``<eos>``: the collate step adds them where the convention needs them
(see :func:`aiayn.data.batching.collate_seq2seq`). ``decode`` drops special tokens and does not stop at
``<eos>``; callers cut at ``<eos>`` first.

A tokenizer is saved as ONE json file; :func:`load_tokenizer` reads either kind back and tells them apart
from the file's content, not its name.

BPE pre-tokenization (how text is cut before BPE sees it):

1. Normalize: Unicode NFC, every run of whitespace becomes one space, leading/trailing space is removed.
2. Metaspace: spaces become ``▁`` (U+2581) and start a new piece, and one ``▁`` is prepended to the
   text, so ``"hello"`` at the start of a sentence is the same token as ``" hello"`` inside it.
3. Every CJK character (ideographs, kana, CJK and full-width punctuation) becomes its own piece.
4. Every punctuation character becomes its own piece, so ``tea?``, ``tea.`` and ``tea,`` share ``▁tea``
   (text written mostly in punctuation, such as Morse code, keeps its runs of punctuation as pieces
   instead: see :func:`aiayn.data.vocab.mostly_punctuation`).
5. Every digit becomes its own piece.

BPE merges only inside a piece, so a Chinese character is always exactly one token: BPE never learns
merges that straddle unsegmented Chinese word boundaries (which would make tokenization of the same word
depend on its neighbours), the vocabulary spends no room on character pairs, and the model learns word
structure itself, as BERT's Chinese models do. The price is somewhat longer Chinese sequences.

Decoding concatenates tokens and turns ``▁`` back into a space, which reproduces the normalized input
exactly: ``"Do you like tea?"``, ``"I didn't."`` and ``"我是一个学生"`` (no spaces between characters)
all round-trip. Characters never seen in training become ``<unk>`` rather than byte-fallback tokens: byte
tokens would make token strings unreadable on attention-plot axes and cost 256 vocabulary entries, while a
translation corpus's own alphabet covers almost everything it will be asked to translate.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tokenizers import Regex, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from aiayn.errors import AiaynError, CheckpointError, ConfigError

__all__ = [
    "BOS_ID",
    "BOS_TOKEN",
    "EOS_ID",
    "EOS_TOKEN",
    "PAD_ID",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "UNK_TOKEN",
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "load_tokenizer",
]

logger = logging.getLogger(__name__)

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
#: The special tokens in id order: ``SPECIAL_TOKENS[i]`` has id ``i``.
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

_METASPACE = "\u2581"  # ▁, as in SentencePiece
# CJK and Japanese scripts have no spaces between words; each of these characters is its own piece.
# U+3000 (ideographic space) is left out on purpose: it is whitespace and the normalizer turns it into
# a space. Ranges: CJK symbols and punctuation, hiragana + katakana, CJK extension A, unified
# ideographs, compatibility ideographs, half/full-width forms (full-width ？，！), extensions B-H.
#: What ``pre_tokenizers.Punctuation`` isolates (ASCII punctuation and Unicode's P categories), as
#: runs, each with the word-start mark before it.
_PUNCTUATION_RUN = "\u2581?[\\p{P}!-/:-@\\[-`{-~]+"
_CJK_PATTERN = (
    "[\u3001-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0003134f]"
)
_CHAR_KIND = "aiayn-char"
_CHAR_FORMAT_VERSION = 1


class Tokenizer(abc.ABC):
    """What every aiayn tokenizer offers. Special ids are the module constants for every tokenizer.

    Subclasses implement ``vocab_size``, ``encode``, ``decode``, ``id_to_token``, ``tokens`` and
    ``_to_json``; ``encode_batch`` has a plain loop fallback.
    """

    #: File-format tag written into the saved json (BPE files are plain Hugging Face json instead).
    kind: ClassVar[str]

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>`` (always 0)."""
        return PAD_ID

    @property
    def bos_id(self) -> int:
        """Id of ``<bos>`` (always 1)."""
        return BOS_ID

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>`` (always 2)."""
        return EOS_ID

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>`` (always 3)."""
        return UNK_ID

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included; ids are ``0 .. vocab_size - 1``."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without ``<bos>``/``<eos>``."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text; subclasses override this with a faster batch path."""
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens dropped. Does not stop at ``<eos>``: cut there first.

        Raises:
            AiaynError: an id is outside ``0 .. vocab_size - 1``.
        """

    @abc.abstractmethod
    def id_to_token(self, i: int) -> str:
        """The token string of id ``i``.

        Raises:
            AiaynError: ``i`` is outside ``0 .. vocab_size - 1``.
        """

    @abc.abstractmethod
    def tokens(self, text: str) -> list[str]:
        """The token strings ``encode(text)`` produces (e.g. for attention-plot axes)."""

    @abc.abstractmethod
    def _to_json(self) -> str:
        """The complete content of the saved file."""

    def save(self, directory: str | Path, name: str = "tokenizer") -> Path:
        """Write the tokenizer as one json file, ``directory/name.json``, and return its path.

        The file is written under a temporary name and renamed, so a crash never leaves half a file.
        ``directory`` is created if needed.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.json"
        content = self._to_json()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def _check_ids(self, ids: Sequence[int]) -> None:
        if len(ids) == 0:
            return
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise AiaynError(
                f"token id {bad} is out of range for a vocabulary of {self.vocab_size}"
            )


class BPETokenizer(Tokenizer):
    """Byte-pair-encoding subword tokenizer on Hugging Face ``tokenizers``; see the module docstring.

    Build one with :meth:`train` or :func:`load_tokenizer`; the constructor wraps an existing
    Hugging Face tokenizer whose first four ids are the aiayn special tokens.

    Args:
        hf_tokenizer: a ``tokenizers.Tokenizer`` with ``<pad> <bos> <eos> <unk>`` at ids 0-3.

    Raises:
        CheckpointError: the special tokens are missing or at other ids.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: HFTokenizer) -> None:
        for i, tok in enumerate(SPECIAL_TOKENS):
            if hf_tokenizer.token_to_id(tok) != i:
                raise CheckpointError(
                    f"tokenizer does not have the special token {tok!r} at id {i}; "
                    "it was not made by aiayn"
                )
        # Text is data, never control: "<eos>" typed in a corpus is spelled out, not made id 2. The flag
        # is not stored in the json, so it is set on every construction (train and load).
        hf_tokenizer.encode_special_tokens = True
        self._hf = hf_tokenizer
        self._vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        min_frequency: int = 2,
        punctuation_runs: bool = False,
    ) -> BPETokenizer:
        """Learn a BPE vocabulary from ``texts``.

        Args:
            texts: training sentences (any iterable; read once).
            vocab_size: target vocabulary size, special tokens included. The result can be smaller
                (too little text to learn that many merges) or larger (more distinct characters than
                ``vocab_size``: every character seen is kept, so none of the training text is ``<unk>``).
            min_frequency: a pair must occur this often to be merged.
            punctuation_runs: keep a run of punctuation (with the ``▁`` before it) as one piece
                for BPE to merge inside, instead of one piece per punctuation character (step 4 of
                the module docstring): for text written mostly in punctuation, such as Morse
                code, whose units are runs like ``-.-.``.

        Raises:
            ConfigError: ``vocab_size`` leaves no room beyond the special tokens, or
                ``min_frequency`` < 1.
        """
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
        if min_frequency < 1:
            raise ConfigError(f"min_frequency must be >= 1, got {min_frequency}")
        hf = HFTokenizer(BPE(unk_token=UNK_TOKEN, fuse_unk=True))
        hf.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
        )
        # Metaspace must come first: with the whole text still one piece, "always" prepends exactly one
        # "▁" at the start. (Its "first" scheme keys on the original offset, which normalization's
        # Strip moves, so it would miss sentences that had leading spaces.)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Metaspace(
                    replacement=_METASPACE, prepend_scheme="always", split=True
                ),
                pre_tokenizers.Split(Regex(_CJK_PATTERN), behavior="isolated"),
                pre_tokenizers.Split(Regex(_PUNCTUATION_RUN), behavior="isolated")
                if punctuation_runs
                else pre_tokenizers.Punctuation(behavior="isolated"),
                # One piece per digit (as LLaMA and PaLM do): "1907" and "1970" share their
                # digits, and numbers are read and written digit by digit.
                pre_tokenizers.Digits(individual_digits=True),
            ]
        )
        hf.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
        trainer = BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=[_METASPACE],
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        tok = cls(hf)
        logger.info("trained BPE tokenizer: %d tokens (asked for %d)", tok.vocab_size, vocab_size)
        return tok

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The underlying Hugging Face tokenizer (for interop; do not change its pipeline)."""
        return self._hf

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        # encode_batch_fast (tokenizers >= 0.20) skips offset tracking, which we never use.
        batch_encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
        return [e.ids for e in batch_encode(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        ids = _as_int_list(ids)
        # HF silently drops unknown ids; an out-of-range id is a bug upstream and must be loud.
        self._check_ids(ids)
        return self._hf.decode(ids, skip_special_tokens=True)

    def id_to_token(self, i: int) -> str:
        self._check_ids([i])
        return self._hf.id_to_token(i)

    def tokens(self, text: str) -> list[str]:
        return self._hf.encode(text, add_special_tokens=False).tokens

    def _to_json(self) -> str:
        # Plain Hugging Face json, so `tokenizers.Tokenizer.from_file` can read it too.
        return self._hf.to_str(pretty=True)


class CharTokenizer(Tokenizer):
    """Character-level tokenizer (for language modelling): one id per Unicode code point.

    Ids 0-3 are the special tokens, then ``chars`` in the given order. Characters not in ``chars``
    become ``<unk>``. No normalization: decoding known text gives it back exactly.

    Args:
        chars: the vocabulary characters, each a single code point, no repeats.

    Raises:
        ConfigError: an entry is not a single character, or is repeated.
    """

    kind = _CHAR_KIND

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ConfigError(
                    f"CharTokenizer vocabulary entries must be single characters: {c!r}"
                )
        if len(set(chars)) != len(chars):
            raise ConfigError("CharTokenizer vocabulary has repeated characters")
        n = len(SPECIAL_TOKENS)
        self._chars = chars
        self._id_to_token = list(SPECIAL_TOKENS) + chars
        # decode() maps special ids to "" so that joining skips them with no per-id branch.
        self._decode_table = [""] * n + chars
        # A code point -> id lookup table makes encoding a vectorized gather. It is sized by the
        # largest code point (at most 0x10FFFF int32 = 4.4 MB; ~0.5 KB for ASCII text).
        cps = np.array([ord(c) for c in chars], dtype=np.int64)
        self._lut = np.full(int(cps.max()) + 1 if len(cps) else 1, UNK_ID, dtype=np.int32)
        self._lut[cps] = np.arange(n, n + len(chars), dtype=np.int32)

    @classmethod
    def train(cls, text: str | Iterable[str]) -> CharTokenizer:
        """Vocabulary = the sorted (by code point) set of characters in ``text``.

        Args:
            text: one string, or an iterable of strings (e.g. one per file).
        """
        seen: set[str] = set()
        if isinstance(text, str):
            seen.update(text)
        else:
            for part in text:
                seen.update(part)
        return cls(sorted(seen))

    @property
    def chars(self) -> list[str]:
        """The vocabulary characters in id order (ids 4, 5, ...)."""
        return list(self._chars)

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as a 1-D int32 array: the fast path for whole corpora.

        About 0.2 s for 5 MB of text on one CPU core; ``encode`` is this plus ``tolist``.
        """
        # UTF-32 gives one fixed-width code point per character; surrogatepass keeps lone surrogates
        # (which Python strings can hold) from raising.
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        known = cps < len(self._lut)
        if known.all():
            return self._lut[cps]
        out = np.full(cps.shape, UNK_ID, dtype=np.int32)
        out[known] = self._lut[cps[known]]
        return out

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        ids = _as_int_list(ids)
        self._check_ids(ids)
        table = self._decode_table
        return "".join([table[i] for i in ids])

    def id_to_token(self, i: int) -> str:
        self._check_ids([i])
        return self._id_to_token[i]

    def tokens(self, text: str) -> list[str]:
        table = self._id_to_token
        return [table[i] for i in self.encode(text)]

    def _to_json(self) -> str:
        return json.dumps(
            {
                "kind": _CHAR_KIND,
                "version": _CHAR_FORMAT_VERSION,
                "special_tokens": list(SPECIAL_TOKENS),
                "chars": self._chars,
            },
            ensure_ascii=False,
            indent=1,
        )


def _as_int_list(ids: Sequence[int]) -> list[int]:
    # Accept lists, numpy arrays and torch tensors alike; tolist() is one C call for the arrays.
    if hasattr(ids, "tolist"):
        return ids.tolist()
    return [int(i) for i in ids]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved by :meth:`Tokenizer.save`; the kind is detected from the content.

    Args:
        path: the ``.json`` file.

    Raises:
        CheckpointError: the file is missing, unreadable, not json, or not an aiayn tokenizer. The
            message names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; expected a tokenizer .json file")
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: tokenizer file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read tokenizer file: {e}") from None
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: tokenizer file is not valid json (corrupt?): {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a tokenizer file (top level is not a json object)")
    try:
        if data.get("kind") == _CHAR_KIND:
            return _char_from_dict(data)
        from .pretrained_tokenizer import PRETRAINED_KIND, PretrainedTokenizer

        if data.get("kind") == PRETRAINED_KIND:  # a pretrained model's own (imported) tokenizer
            return PretrainedTokenizer.from_dict(data)
        model = data.get("model")
        if isinstance(model, dict) and model.get("type") == "BPE":
            return BPETokenizer(HFTokenizer.from_str(raw))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # HF raises a bare Exception for malformed json content
        raise CheckpointError(f"{path}: corrupt tokenizer file: {e}") from None
    raise CheckpointError(f"{path}: not an aiayn tokenizer file (unknown kind)")


def _char_from_dict(data: dict[str, Any]) -> CharTokenizer:
    version = data.get("version")
    if version != _CHAR_FORMAT_VERSION:
        raise CheckpointError(f"unsupported character-tokenizer format version {version!r}")
    if data.get("special_tokens") != list(SPECIAL_TOKENS):
        raise CheckpointError(f"special tokens are not {list(SPECIAL_TOKENS)}")
    chars = data.get("chars")
    if not isinstance(chars, list):
        raise CheckpointError("character list is missing")
    try:
        return CharTokenizer(chars)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
