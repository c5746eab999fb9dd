"""Logit processors: the decoding controls that reshape the next-token scores at every step.

Shapes: N rows (sentences, beams or prompts), t tokens so far, V vocabulary.

A processor is called as ``processor(tokens, logits) -> logits`` with ``tokens (N, t)`` the ids so far
(``<bos>`` and the output for a translation, prompt and continuation for a GPT) and ``logits (N, V)``
the next token's scores, as Hugging Face's ``LogitsProcessor`` and x-transformers' filters are. Each
control below reproduces its Hugging Face class exactly (``tests/test_logit_processors.py`` compares
them on the same random inputs):

* :class:`RepetitionPenalty` — CTRL (Keskar et al., 2019): the score of a token that occurs in
  ``tokens`` is divided by F when positive, multiplied by F when negative
  (``RepetitionPenaltyLogitsProcessor``; CTranslate2's ``repetition_penalty``).
* :class:`NoRepeatNGram` — no n-gram occurs twice (``NoRepeatNGramLogitsProcessor``).
* :class:`NoBadSequences` — these token sequences are never completed (``NoBadWordsLogitsProcessor``).
* :class:`MinLength` — ``<eos>`` is banned until N tokens exist (``MinLengthLogitsProcessor``, or
  with ``prompt_length`` ``MinNewTokensLengthLogitsProcessor``).

:data:`PROCESSORS` is the one registry: every control, in the order Hugging Face applies them.
:func:`build_processors` turns :class:`DecodingControls` into the list, or None when every control
is off, so that the decoders keep their plain path (no per-step work) unless one is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .errors import ConfigError

log = logging.getLogger(__name__)

NEG_INF = float("-inf")


class LogitsProcessor(Protocol):
    """``(tokens (N, t), logits (N, V)) -> logits (N, V)``; the input logits are left unchanged."""

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class DecodingControls:
    """The decoding controls shared by ``translate``, ``generate`` and ``serve``; defaults are off.

    Attributes:
        repetition_penalty: CTRL's F (> 0; 1.0 = off).
        no_repeat_ngram: N, no n-gram of N tokens twice (0 = off).
        min_len: ``<eos>`` banned until this many output tokens (0 = off).
        ban: token-id sequences never produced (one id: that token never; several: never completed).
    """

    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 0
    min_len: int = 0
    ban: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.repetition_penalty > 0:  # NaN included
            raise ConfigError(f"repetition penalty must be > 0, got {self.repetition_penalty}")
        if self.no_repeat_ngram < 0:
            raise ConfigError(f"no-repeat n-gram size must be >= 0, got {self.no_repeat_ngram}")
        if self.min_len < 0:
            raise ConfigError(f"minimum length must be >= 0, got {self.min_len}")
        if any(len(s) == 0 or min(s) < 0 for s in self.ban):
            raise ConfigError("every banned sequence needs at least one token id >= 0")

    @property
    def active(self) -> bool:
        """Whether any control is on."""
        return self != DecodingControls()


@dataclass(frozen=True)
class StepContext:
    """What a processor needs to know besides the controls.

    Attributes:
        eos_id: the end-of-sequence id (None: the model never ends, and ``min_len`` means nothing).
        prompt_length: leading columns of ``tokens`` that are not output (``<bos>``: 1; a GPT's
            left-padded prompts: their common width), for :class:`MinLength`.
    """

    eos_id: int | None
    prompt_length: int = 0


class RepetitionPenalty:
    """CTRL's repetition penalty: every token in ``tokens`` has its score divided by ``penalty`` if
    positive, multiplied by it if negative (so ``penalty > 1`` always makes a repeat less likely).

    Args:
        penalty: F > 0 (1.0 changes nothing).
    """

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor:
        seen = logits.gather(1, tokens)  # (N, t): a repeated id is gathered (and written) twice
        penalised = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return logits.scatter(1, tokens, penalised)

    @classmethod
    def from_controls(cls, c: DecodingControls, ctx: StepContext) -> RepetitionPenalty | None:
        return cls(c.repetition_penalty) if c.repetition_penalty != 1.0 else None


class NoRepeatNGram:
    """Ban every token that would complete an n-gram already present in ``tokens``.

    Vectorised over rows: the last ``n - 1`` tokens are compared with the first ``n - 1`` of every
    window of ``n``; a matching window bans its last token.

    Args:
        n: the n-gram size (1 bans every token already present).
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor:
        t = tokens.shape[1]
        if t < self.n:  # no complete n-gram yet
            return logits
        windows = tokens.unfold(1, self.n, 1)  # (N, t - n + 1, n)
        prefix = tokens[:, t - self.n + 1 :]  # (N, n - 1)
        matches = (windows[..., :-1] == prefix[:, None, :]).all(-1)  # (N, t - n + 1)
        rows, starts = matches.nonzero(as_tuple=True)
        banned = torch.zeros_like(logits, dtype=torch.bool)
        banned[rows, windows[rows, starts, -1]] = True
        return logits.masked_fill(banned, NEG_INF)

    @classmethod
    def from_controls(cls, c: DecodingControls, ctx: StepContext) -> NoRepeatNGram | None:
        return cls(c.no_repeat_ngram) if c.no_repeat_ngram > 0 else None


class NoBadSequences:
    """Never produce the banned sequences: a one-token sequence is banned outright, a longer one by
    banning its last token wherever the tokens so far end with the rest of it.

    As Hugging Face's ``NoBadWordsLogitsProcessor``: a one-token sequence equal to ``<eos>`` is
    dropped (a model must be able to stop), and a sequence whose prefix is longer than the tokens so
    far is not checked yet.

    Args:
        sequences: the banned token-id sequences.
        eos_id: the end-of-sequence id, or None.
    """

    def __init__(self, sequences: Iterable[Sequence[int]], eos_id: int | None = None) -> None:
        unique = dict.fromkeys(tuple(s) for s in sequences if list(s) != [eos_id])
        self.single = sorted({s[0] for s in unique if len(s) == 1})
        # Sequences grouped by prefix length, so each group is one comparison per step.
        by_length: dict[int, list[tuple[int, ...]]] = {}
        for s in unique:
            if len(s) > 1:
                by_length.setdefault(len(s) - 1, []).append(s)
        self.groups = [
            (torch.tensor([s[:-1] for s in group]), torch.tensor([s[-1] for s in group]))
            for group in by_length.values()
        ]

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor:
        banned = torch.zeros_like(logits, dtype=torch.bool)
        if self.single:
            banned[:, self.single] = True
        if self.groups and self.groups[0][0].device != tokens.device:
            self.groups = [(p.to(tokens.device), q.to(tokens.device)) for p, q in self.groups]
        for prefixes, last in self.groups:
            k = prefixes.shape[1]
            if k > tokens.shape[1]:
                continue
            matching = (tokens[:, None, -k:] == prefixes).all(-1)  # (N, sequences)
            rows, which = matching.nonzero(as_tuple=True)
            banned[rows, last[which]] = True
        return logits.masked_fill(banned, NEG_INF)

    @classmethod
    def from_controls(cls, c: DecodingControls, ctx: StepContext) -> NoBadSequences | None:
        return cls(c.ban, ctx.eos_id) if c.ban else None


class MinLength:
    """Ban ``<eos>`` while fewer than ``min_length`` tokens follow the first ``prompt_length``.

    Args:
        min_length: the tokens required before ``<eos>`` may come.
        eos_id: the end-of-sequence id.
        prompt_length: leading columns that do not count (0: every column counts, as Hugging Face's
            ``MinLengthLogitsProcessor``; the prompt's length: ``MinNewTokensLengthLogitsProcessor``).
    """

    def __init__(self, min_length: int, eos_id: int, prompt_length: int = 0) -> None:
        self.min_length, self.eos_id, self.prompt_length = min_length, eos_id, prompt_length

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor:
        if tokens.shape[1] - self.prompt_length >= self.min_length:
            return logits
        return logits.index_fill(1, torch.tensor([self.eos_id], device=logits.device), NEG_INF)

    @classmethod
    def from_controls(cls, c: DecodingControls, ctx: StepContext) -> MinLength | None:
        if c.min_len == 0 or ctx.eos_id is None:
            return None
        return cls(c.min_len, ctx.eos_id, ctx.prompt_length)


#: The registry: control name -> processor class (``from_controls`` builds it, or None when off),
#: in Hugging Face's order of application (penalties on finite scores first, then the bans).
PROCESSORS: dict[str, type] = {
    "repetition_penalty": RepetitionPenalty,
    "no_repeat_ngram": NoRepeatNGram,
    "ban": NoBadSequences,
    "min_len": MinLength,
}


class ProcessorList(list):
    """Processors applied one after the other: itself a :class:`LogitsProcessor`."""

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor:
        for processor in self:
            logits = processor(tokens, logits)
        return logits


def build_processors(controls: DecodingControls | None, ctx: StepContext) -> ProcessorList | None:
    """The processors of the controls that are on, or None when none is (the decoders' plain path)."""
    if controls is None or not controls.active:
        return None
    built = (cls.from_controls(controls, ctx) for cls in PROCESSORS.values())
    return ProcessorList(p for p in built if p is not None) or None


def make_controls(
    encode: Callable[[str], list[int]],
    unk_id: int,
    repetition_penalty: float = 1.0,
    no_repeat_ngram: int = 0,
    min_len: int = 0,
    ban: Iterable[str] = (),
) -> DecodingControls:
    """The controls with each banned text turned into its token ids by ``encode`` (the model's output
    tokenizer). A text that holds a character the vocabulary lacks is skipped with a warning: the
    model can only write that character as ``<unk>``, so it can never write the text."""
    sequences = []
    for text in ban:
        ids = encode(text)
        if ids and unk_id not in ids:
            sequences.append(tuple(ids))
        else:
            log.warning("not banning %r: the model's vocabulary cannot write it", text)
    return DecodingControls(repetition_penalty, no_repeat_ngram, min_len, tuple(sequences))
