"""English helpers of the zh-en grammar: articles, agreement, capitals, counted phrases."""

from __future__ import annotations


def _article(phrase: str) -> str:
    # The nouns and phrases in this lexicon have no "university"/"hour" style exceptions.
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _be(agr: str, past: bool = False) -> str:
    if past:
        return "were" if agr == "pl" else "was"
    return {"1s": "am", "3s": "is"}.get(agr, "are")


def _do(agr: str) -> str:
    return "does" if agr == "3s" else "do"


def _have(agr: str) -> str:
    return "has" if agr == "3s" else "have"


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _count_phrase(n: int, word: str, sg: str, pl: str) -> str:
    return _article(sg) if n == 1 else f"{word} {pl}"
