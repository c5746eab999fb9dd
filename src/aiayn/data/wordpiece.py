"""WordPiece tokenization for BERT, on Hugging Face ``tokenizers``.

BERT's text pipeline: normalise (clean control characters, put spaces around CJK characters, optionally
lowercase and strip accents), split on whitespace and punctuation, then cut each word into the longest
pieces found in the vocabulary, continuation pieces spelled with a ``##`` prefix (``"embeddings"`` ->
``em ##bed ##ding ##s``). A sequence is framed as ``[CLS] tokens [SEP]`` (a pair as
``[CLS] A [SEP] B [SEP]``, B in segment 1).

**Special ids are the vocabulary's own**, unlike aiayn's ``<pad>=0 <bos>=1 <eos>=2 <unk>=3``
(:mod:`aiayn.data.tokenizers`): Google's English vocabularies (and so every pretrained BERT and MiniLM)
have ``[PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103``, while a vocabulary trained here puts
``[PAD] [UNK] [CLS] [SEP] [MASK]`` at 0-4. Pretrained weights only work with their own ids, so this
tokenizer never renumbers: ask it for ``pad_id``, ``cls_id``, ``sep_id``, ``mask_id``, ``unk_id``.
``[PAD]`` is 0 in both cases.

Unlike aiayn's BPE and character tokenizers, :meth:`WordPieceTokenizer.encode` adds ``[CLS]``/``[SEP]``
by default (BERT's models always see them), and ``[MASK]`` typed in the text is the mask token, as in
Hugging Face's BERT tokenizers (that is how fill-in-the-blank queries are written).

A tokenizer is saved as one plain Hugging Face ``tokenizer.json``. Files from elsewhere may carry
padding or truncation settings (all-MiniLM-L6-v2's pads every sentence to 128 tokens and cuts at 128);
those are switched off on load, so a sentence encodes to exactly its own tokens, and truncation is
this class's ``max_length`` only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from ..errors import AiaynError, CheckpointError, ConfigError

__all__ = ["SPECIAL_TOKENS", "WordPieceTokenizer", "load_wordpiece"]

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
#: BERT's special tokens; a vocabulary trained here has them at ids 0-4 in this order.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)


class WordPieceTokenizer:
    """BERT's WordPiece tokenizer; see the module docstring for the id conventions.

    Build one with :meth:`train`, :meth:`from_file` (a ``tokenizer.json``) or :meth:`from_vocab`
    (a ``vocab.txt``).

    Args:
        hf_tokenizer: a Hugging Face WordPiece tokenizer holding BERT's five special tokens. Its
            padding and truncation settings are switched off.
        max_length: cut longer encodings to this many tokens, ``[CLS]``/``[SEP]`` included (the
            ``[SEP]`` is kept); None = never cut.

    Raises:
        CheckpointError: a special token is missing from the vocabulary.
    """

    kind = "wordpiece"

    def __init__(self, hf_tokenizer: HFTokenizer, max_length: int | None = None) -> None:
        ids = {tok: hf_tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise CheckpointError(f"not a BERT WordPiece tokenizer: no {', '.join(missing)} token")
        hf_tokenizer.no_padding()  # we pad per batch, to the batch's longest sentence
        hf_tokenizer.no_truncation()
        if max_length is not None:
            if max_length < 3:
                raise ConfigError(f"max_length must be >= 3 ([CLS] x [SEP]), got {max_length}")
            hf_tokenizer.enable_truncation(max_length)
        self._hf = hf_tokenizer
        self.max_length = max_length
        self.pad_id: int = ids[PAD]
        self.unk_id: int = ids[UNK]
        self.cls_id: int = ids[CLS]
        self.sep_id: int = ids[SEP]
        self.mask_id: int = ids[MASK]
        self._vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, max_length: int | None = None) -> WordPieceTokenizer:
        """Load a Hugging Face ``tokenizer.json``.

        Raises:
            CheckpointError: missing or unreadable file, or not a BERT WordPiece tokenizer.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such tokenizer file")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed json
            raise CheckpointError(f"{path}: not a readable tokenizer file ({e})") from None
        try:
            return cls(hf, max_length)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None

    @classmethod
    def from_vocab(
        cls, path: str | Path, lowercase: bool = True, max_length: int | None = None
    ) -> WordPieceTokenizer:
        """Build the tokenizer from a BERT ``vocab.txt`` (one token per line, line number = id).

        Args:
            path: the vocabulary file.
            lowercase: the vocabulary is uncased (lowercase and strip accents, as BERT-uncased).
            max_length: see the class.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such vocabulary file")
        try:
            model = WordPiece.from_file(str(path), unk_token=UNK)
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable WordPiece vocabulary ({e})") from None
        hf = HFTokenizer(model)
        _set_bert_pipeline(hf, lowercase)
        try:
            return cls(hf, max_length)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        lowercase: bool = True,
        min_frequency: int = 2,
        max_length: int | None = None,
    ) -> WordPieceTokenizer:
        """Learn a WordPiece vocabulary; ``[PAD] [UNK] [CLS] [SEP] [MASK]`` get ids 0-4.

        Then come single characters, then longer pieces, each group in code-point order, so the
        same vocabulary always gets the same ids. (The vocabulary itself can differ between runs by
        a piece or two when pieces tie in frequency at the ``vocab_size`` cut: ``tokenizers``
        breaks such ties in hash-map order. Below the cut it is always the same.)

        Args:
            texts: training text (any iterable of strings; read once).
            vocab_size: target size, special tokens included (smaller if the text is small).
            lowercase: lowercase and strip accents first (an "uncased" vocabulary).
            min_frequency: a pair must occur this often to be merged.
            max_length: see the class.

        Raises:
            ConfigError: ``vocab_size`` leaves no room beyond the special tokens.
        """
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
        hf = HFTokenizer(WordPiece(unk_token=UNK))
        _set_bert_pipeline(hf, lowercase, with_post_processor=False)  # ids are not known yet
        trainer = WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix="##",
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        # The trainer numbers pieces of equal frequency in a different order each run (it iterates
        # Rust hash maps). Renumber canonically: the same vocabulary gets the same ids, so the same
        # text and seed train the same model.
        vocab = hf.get_vocab()
        rest = sorted(
            set(vocab) - set(SPECIAL_TOKENS), key=lambda t: (len(t.removeprefix("##")) > 1, t)
        )
        ordered = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *rest])}
        hf = HFTokenizer(WordPiece(ordered, unk_token=UNK, continuing_subword_prefix="##"))
        _set_bert_pipeline(hf, lowercase)
        return cls(hf, max_length)

    def with_max_length(self, max_length: int | None) -> WordPieceTokenizer:
        """A copy that truncates at ``max_length`` tokens (e.g. the model's ``max_len``)."""
        return WordPieceTokenizer(HFTokenizer.from_str(self._hf.to_str()), max_length)

    # ---- properties ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids; ids are ``0 .. vocab_size - 1``."""
        return self._vocab_size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of ``[PAD] [UNK] [CLS] [SEP] [MASK]``."""
        return frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id))

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The underlying Hugging Face tokenizer (for interop; do not change its pipeline)."""
        return self._hf

    # ---- encoding --------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, framed as ``[CLS] ... [SEP]`` unless ``add_special_tokens=False``."""
        return self._hf.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = True
    ) -> list[list[int]]:
        """Token ids of each text (in parallel, in Rust)."""
        # encode_batch_fast (tokenizers >= 0.20) skips offset tracking, which we never use.
        batch_encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
        encodings = batch_encode(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad id lists into ``(input_ids (B, T) long, key_mask (B, T) bool)``.

        The mask comes from the lengths, not the values, so a real token equal to ``pad_id`` stays real.

        Raises:
            ValueError: ``ids`` is empty.
        """
        if len(ids) == 0:
            raise ValueError("pad needs at least one sequence")
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        width = max(int(lengths.max()), 1)
        key_mask = np.arange(width)[None, :] < lengths[:, None]  # (B, T)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        if lengths.sum():
            # Boolean-mask assignment fills rows in order: one copy places every sequence.
            input_ids[key_mask] = np.fromiter(
                (i for seq in ids for i in seq), dtype=np.int64, count=int(lengths.sum())
            )
        return torch.from_numpy(input_ids), torch.from_numpy(key_mask)

    def batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and pad: ``(input_ids (B, T), key_mask (B, T))`` for a BERT forward pass."""
        return self.pad(self.encode_batch(texts))

    # ---- decoding --------------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[int]) -> None:
        for i in ids:
            if not 0 <= i < self._vocab_size:
                raise AiaynError(
                    f"token id {i} is out of range for a vocabulary of {self._vocab_size}"
                )

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens dropped and ``##`` pieces joined.

        Raises:
            AiaynError: an id is outside ``0 .. vocab_size - 1``.
        """
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return self._hf.decode(ids, skip_special_tokens=True)

    def id_to_token(self, i: int) -> str:
        """The token string of id ``i`` (e.g. ``"##ing"``).

        Raises:
            AiaynError: ``i`` is out of range.
        """
        self._check_ids([int(i)])
        return self._hf.id_to_token(int(i))

    def tokens(self, text: str, add_special_tokens: bool = True) -> list[str]:
        """The token strings of ``encode(text)`` (for attention-plot axes)."""
        return self._hf.encode(text, add_special_tokens=add_special_tokens).tokens

    # ---- saving ----------------------------------------------------------------------------------
    def save(self, directory: str | Path, name: str = "tokenizer") -> Path:
        """Write ``directory/name.json`` (a plain Hugging Face file), atomically; return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.json"
        data = json.loads(self._hf.to_str())
        data["truncation"] = None  # max_length belongs to the model directory, not the file
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=2)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _set_bert_pipeline(hf: HFTokenizer, lowercase: bool, with_post_processor: bool = True) -> None:
    """BERT's normaliser, pre-tokenizer, decoder and ``[CLS] A [SEP] (B [SEP])`` framing."""
    hf.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(prefix="##")
    # Registered as special: skipped when decoding, and "[MASK]" typed in text is the mask token.
    hf.add_special_tokens([tok for tok in SPECIAL_TOKENS if hf.token_to_id(tok) is not None])
    if with_post_processor:
        cls_id, sep_id = hf.token_to_id(CLS), hf.token_to_id(SEP)
        if cls_id is None or sep_id is None:
            raise CheckpointError("not a BERT WordPiece vocabulary: no [CLS] or [SEP] token")
        hf.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}",
            pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
            special_tokens=[(CLS, cls_id), (SEP, sep_id)],
        )


def load_wordpiece(path: str | Path, max_length: int | None = None) -> WordPieceTokenizer:
    """Load a ``tokenizer.json`` or, for a path ending in ``.txt``, a BERT ``vocab.txt`` (uncased)."""
    path = Path(path)
    if path.suffix == ".txt":
        return WordPieceTokenizer.from_vocab(path, max_length=max_length)
    return WordPieceTokenizer.from_file(path, max_length)
