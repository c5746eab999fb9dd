"""The one reader of ``builtin:NAME`` specs: which built-ins exist, of which kind, and what to say
when a name is unknown or names a built-in of another kind.

Every flag that takes data or a model (``--train``, ``--text``, ``--dataset``, ``--init``,
``--tokenizer``, ``--model``, ``--test``) accepts ``builtin:NAME`` besides a path. The readers of
those flags ask :func:`resolve_builtin` for the name, so the catalogue below is the only list of
built-ins, and a wrong name gets the same kind of message whichever flag it came through::

    builtin:zh-en is a translation corpus, not a text; texts: builtin:shakespeare

The spec carries only the name: the split a reader wants (train, valid or test) is the reader's
argument, not part of the spec. Resolving does not load anything (the loaders live beside their
data: this package, :mod:`aiayn.data.shakespeare`, :mod:`aiayn.data.images`, ``interop.bert``), so
it is cheap and needs none of the optional packages a built-in reads from.
"""

from __future__ import annotations

import os
from enum import Enum

from aiayn.errors import AiaynError

__all__ = [
    "BIBLE_PREFIX",
    "BUILTIN_PREFIX",
    "COPY",
    "DIGITS",
    "MINILM",
    "REVERSE",
    "SHAKESPEARE",
    "ZH_EN",
    "BuiltinKind",
    "builtin_names",
    "is_builtin",
    "known_builtins",
    "kinds_of",
    "resolve_builtin",
]

#: What marks a spec as a built-in rather than a path.
BUILTIN_PREFIX = "builtin:"

# ---- the names ---------------------------------------------------------------------------------------
#: The generated Chinese-to-English phrasebook (:mod:`aiayn.data.builtin`).
ZH_EN = "zh-en"
#: Random letter sequences whose target is the source.
COPY = "copy"
#: Random letter sequences whose target is the source reversed.
REVERSE = "reverse"
#: ``bible-SRC-TGT`` (e.g. ``bible-fr-en``): a family of names, one per language pair. Only the
#: family is recognised here; :func:`aiayn.data.bible.parse_name` checks the languages when loading.
BIBLE_PREFIX = "bible-"
#: Shakespeare's works, split by play (:mod:`aiayn.data.shakespeare`).
SHAKESPEARE = "shakespeare"
#: scikit-learn's 8x8 handwritten digits (:mod:`aiayn.data.images`).
DIGITS = "digits"
#: all-MiniLM-L6-v2, a sentence-embedding BERT, and its WordPiece vocabulary (``interop.bert``).
MINILM = "minilm"


class BuiltinKind(Enum):
    """What a reader wants; each value is ``(noun, plural)``, the words its messages use."""

    TRANSLATION = ("translation corpus", "translation corpora")
    TEXT = ("text", "texts")
    IMAGES = ("image set", "image sets")
    TEXT_MODEL = ("text model", "text models")
    TOKENIZER = ("tokenizer", "tokenizers")

    @property
    def noun(self) -> str:
        return self.value[0]

    @property
    def plural(self) -> str:
        return self.value[1]

    @property
    def singular(self) -> str:
        """``"an image set"``: the noun with its article, as a message names one of it."""
        article = "an" if self.noun[0] in "aeiou" else "a"
        return f"{article} {self.noun}"


#: Every built-in name, by kind. A name may be of several kinds: MiniLM is a model and, for
#: ``--tokenizer``, the vocabulary it ships with.
_NAMES: dict[BuiltinKind, tuple[str, ...]] = {
    BuiltinKind.TRANSLATION: (ZH_EN, COPY, REVERSE),
    BuiltinKind.TEXT: (SHAKESPEARE,),
    BuiltinKind.IMAGES: (DIGITS,),
    BuiltinKind.TEXT_MODEL: (MINILM,),
    BuiltinKind.TOKENIZER: (MINILM,),
}

#: Families of names, by kind: ``(prefix, pattern, example)``, the last two for messages.
_FAMILIES: dict[BuiltinKind, tuple[tuple[str, str, str], ...]] = {
    BuiltinKind.TRANSLATION: ((BIBLE_PREFIX, "bible-SRC-TGT", "bible-fr-en"),),
}


def is_builtin(spec: str | os.PathLike[str]) -> bool:
    """Whether ``spec`` names a built-in (``builtin:NAME``) rather than a file or folder."""
    return os.fspath(spec).startswith(BUILTIN_PREFIX)


def builtin_names(kind: BuiltinKind) -> tuple[str, ...]:
    """The fixed names of ``kind``, without the prefix (families such as ``bible-SRC-TGT`` aside)."""
    return _NAMES[kind]


def kinds_of(name: str) -> list[BuiltinKind]:
    """The kinds a bare built-in name (no prefix) belongs to; empty when it names nothing."""
    return [kind for kind in BuiltinKind if _belongs(name, kind)]


def _belongs(name: str, kind: BuiltinKind) -> bool:
    families = _FAMILIES.get(kind, ())
    return name in _NAMES[kind] or any(name.startswith(prefix) for prefix, _, _ in families)


def known_builtins(kind: BuiltinKind, prefixed: bool = True) -> str:
    """The names of ``kind`` for a message: ``"builtin:zh-en, builtin:copy, ..."``.

    ``prefixed=False`` lists bare names, for the loaders that take a name rather than a spec.
    """
    p = BUILTIN_PREFIX if prefixed else ""
    names = [f"{p}{name}" for name in _NAMES[kind]]
    families = [
        f"{p}{pattern} (e.g. {p}{example})" for _, pattern, example in _FAMILIES.get(kind, ())
    ]
    return ", ".join(names + families)


def resolve_builtin(
    spec: str | os.PathLike[str], kind: BuiltinKind, flag: str | None = None
) -> str:
    """The bare name of the built-in ``spec`` (``"builtin:zh-en"`` -> ``"zh-en"``), checked to be of
    ``kind``.

    Args:
        spec: a ``builtin:NAME`` spec (callers test :func:`is_builtin` first: a path is not a spec).
        kind: what the caller can read.
        flag: the option the spec came from (``"--tokenizer"``), to start the message with it.

    Raises:
        AiaynError: the name is unknown, or is a built-in of another kind; the message lists the
            built-ins of ``kind``.
        ValueError: ``spec`` is not a ``builtin:`` spec at all (a bug in the caller).
    """
    spec = os.fspath(spec)
    if not is_builtin(spec):
        raise ValueError(f"{spec!r} is not a {BUILTIN_PREFIX}NAME spec")
    name = spec.removeprefix(BUILTIN_PREFIX)
    kinds = kinds_of(name)
    if kind in kinds:
        return name
    where = f"{flag} {spec}" if flag else spec
    known = f"{kind.plural}: {known_builtins(kind)}"
    if kinds:  # a real built-in, just not one this reader can use
        raise AiaynError(f"{where} is {kinds[0].singular}, not {kind.singular}; {known}")
    raise AiaynError(f"{where}: unknown built-in {kind.noun}; known {known}")
