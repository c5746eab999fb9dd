"""Vocabulary from the corpus: whether source and target share one, and how large it is.

*Shared or not.* The paper (section 3.4) uses one vocabulary for both languages and one embedding
matrix for the encoder input, the decoder input and the output layer. That helps whenever the two
sides write the same characters (French and English, simplified and traditional Chinese, a date and its
ISO form: a token that is copied is the same token on both sides) and is pointless when they do not
(Chinese and English, Cyrillic and Latin). :func:`shares_alphabet` decides from the text: one
vocabulary when at least half of the target's characters (spaces aside) are characters the source also
writes.

*How large.* A piece the model sees a handful of times is never learned, and a corpus written without
spaces lets BPE build pieces that span most of a sentence, which an unseen sentence never contains. So
BPE merges two pieces only while the pair occurs at least :data:`MIN_PIECE_FREQUENCY` times in the
training text: the vocabulary grows with the corpus (about 2,100 pieces shared by 10,000 French and
English Bible verses, a few dozen for numbers written as words) and stops where pieces turn rare.
Single characters are always kept (the text's alphabet is the floor), so a small corpus gets a
character-level vocabulary. The threshold was measured, 5 CPU minutes each: Cyrillic → Latin
transliteration 90.9% exact at 20, 94.7% at 50; grapheme → phoneme 36.4% at 20, 49.9% at 50. Gowda &
May's stricter rule ("the largest vocabulary whose pieces nearly all occur 100 times") chose 695 pieces
for those Bible verses, and 8 CPU minutes then reached BLEU 3.5 where 3,900 pieces reach 14: with little
compute, longer sequences of smaller pieces cost more than rare pieces do.

*Characters when there are no pieces to find.* In random strings (identifiers, letters to sort or
reverse, codes) every pair of letters is frequent, so the frequency rule alone lets BPE merge
hundreds of meaningless pairs, and a task that works letter by letter then sees the letters only
inside arbitrary pieces. :func:`neighbour_association` measures whether neighbouring characters
belong together (pointwise mutual information, weighted by count); below
:data:`MIN_ASSOCIATION_BITS` on either side, and unless most words recur (:func:`recurring_words`:
random-looking codes used again and again are units worth a piece), the vocabulary is the characters
alone. Measured: prose 1.0-1.2 bits (Bible verses in four languages), dictionary words 0.6, Roman
numerals 0.9, dates 1.8, random letters 0.0-0.2; letters to sort, 3 CPU minutes: 98.6% exact with
characters, 33.5% with the 766 pieces of the frequency rule.

*Runs of punctuation when the text is mostly punctuation.* The tokenizer gives every punctuation
character a piece of its own (``tea?`` and ``tea.`` share ``▁tea``), which is right for prose and
leaves nothing for BPE to merge in text written in punctuation: Morse code (``-.-. .- -``) became
one token per dot and dash, targets of 100 tokens for five words, and 3 CPU minutes gave 0.0% exact.
When at least :data:`MOSTLY_PUNCTUATION` of a side's characters are punctuation
(:func:`mostly_punctuation`), a run of punctuation stays one piece for BPE to merge inside
(``▁-.-.`` becomes one token): 87.5% exact. Every other corpus of the robustness suite keeps the
rule: at most 20% punctuation on any side (ISO dates, ``2056-05-24``), 6-8% in prose.

*Source characters when each one becomes a target word.* Morse code, a spelling alphabet
(``cat`` → ``charlie alfa tango``), character codes: the target has one space-separated word per
source character. Source pieces then hide the characters the target spells out: Morse code of Bible
phrases, 3 CPU minutes, made 87.5% exact with 650 source pieces and 98.2% with 31 characters. When :data:`SPELLED_OUT` of the
pairs have as many target words as source characters (:func:`spells_out_characters`), the source is
characters alone, with a vocabulary of its own (the target keeps its pieces: ``-.-.`` is a word).

*Characters when the task works letter by letter.* A cipher, a change of case, simplified → traditional
Chinese: each target character is a function of the source character at the same relative place.
Pieces then only hide the letters the model must map: a Caesar cipher of Bible phrases, 3 CPU
minutes, made 84.1% exact with 1,327 shared pieces, most errors a letter dropped or doubled inside a
rare word. :func:`aligned_character_information` measures it: the mutual information between each
target character and the source character at the same relative position (spaces removed), as a
fraction of the target characters' entropy. Measured: 1.00 for a Caesar cipher and for simplified →
traditional, 0.86 for words joined in CamelCase, 0.52 Cyrillic → Latin, 0.46 hanzi → pinyin, 0.27
grapheme → phoneme, 0.03-0.20 for translation, numbers, dates, reversal. At
:data:`LETTER_BY_LETTER` or more, both sides get characters alone.

*Characters when the target is built in place from the source's letters.* Vowels dropped, the
letters of each word reversed, Pig Latin, a plural: no target letter is told by the source letter
at the same relative place, yet each comes from the source near that place.
:func:`local_character_overlap` measures it: how much more often a target character is found
within ±15% of its place in its own source than in another pair's source. Measured: 0.99 vowels
dropped, 0.86 plurals, 0.68 reversed words and simplified → traditional, 0.67 CamelCase, 0.59 Pig
Latin; 0.40 or less for the rest of the suite (run-length codes 0.40, Bible es-it 0.34, fr-en 0.19,
word sorting 0.31: whole words move further than their length). At :data:`REWRITES_IN_PLACE` or
more, characters alone. 3 CPU minutes, pieces → characters: vowels dropped 82.1% → 97.6% exact,
reversed words 76.2% → 97.6%, plurals 96.6% → 98.9%, Pig Latin 84.7% → 83.0% (a target 1.5× the
source: 2 passes over the corpus instead of 9).

*Either rule only for short lines* (:data:`LETTER_BY_LETTER_MAX_CHARS`, the average of the longer
side): a character-level model pays in sequence length. (Bible verses → upper case, 77 characters
on average, 3 CPU minutes: 8.4% exact with characters, 7.2% with 2,158 pieces; both too few passes
over 15-word copies.)
"""

from __future__ import annotations

import logging
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

from .tokenizers import SPECIAL_TOKENS, BPETokenizer

log = logging.getLogger(__name__)

#: BPE merges a pair of pieces only while it occurs at least this often in the training text.
MIN_PIECE_FREQUENCY = 50
#: The largest vocabulary the rule may choose.
MAX_VOCAB = 16000
#: Below this association of neighbouring characters (bits), BPE learns no pieces (see above).
MIN_ASSOCIATION_BITS = 0.3
#: Lines read to measure it (enough for a stable figure; a large corpus costs no more).
ASSOCIATION_SAMPLE = 20000
#: One vocabulary when at least this fraction of the target's characters occur in the source.
SHARED_ALPHABET = 0.5
#: The source is characters alone when this fraction of pairs spells each character out as a word.
SPELLED_OUT = 0.9
#: Runs of punctuation are pieces when at least this fraction of a side's characters is punctuation.
MOSTLY_PUNCTUATION = 0.5
#: Characters alone when aligned characters carry at least this fraction of the target's entropy.
LETTER_BY_LETTER = 0.75
#: Characters alone when the target's letters are found near their source place this much more
#: often than against another pair's source (see :func:`local_character_overlap`).
REWRITES_IN_PLACE = 0.5
#: Pairs read to measure it.
OVERLAP_SAMPLE = 5000
#: "Near its place": within this fraction of the source's length either side (at least 2 characters).
NEAR = 0.15
#: ... either way only when the average line (the longer side) is at most this many characters.
LETTER_BY_LETTER_MAX_CHARS = 100


def shares_alphabet(sources: Sequence[str], targets: Sequence[str]) -> bool:
    """Whether the target side writes mostly characters that the source side writes too."""
    source_chars = set().union(*map(set, sources)) if sources else set()
    counts = Counter(c for t in targets for c in t if not c.isspace())
    total = sum(counts.values())
    if total == 0:
        return True
    shared = sum(n for c, n in counts.items() if c in source_chars)
    return shared / total >= SHARED_ALPHABET


_LETTER_RUN = re.compile(r"[^\W\d_]+")


def neighbour_association(
    texts: Sequence[str], min_count: int = MIN_PIECE_FREQUENCY
) -> float | None:
    """How much neighbouring letters inside words belong together, in bits: the mean pointwise
    mutual information ``log2(p(ab) / (p(a) p(b)))`` of adjacent letters, weighted by how often
    each pair occurs, over the pairs seen at least ``min_count`` times (those BPE may merge).
    ~0 for random strings, ~1 for prose. None when no pair is that frequent (nothing to decide).
    Reads at most :data:`ASSOCIATION_SAMPLE` texts."""
    letters, pairs = Counter(), Counter()
    for text in texts[:ASSOCIATION_SAMPLE]:
        for word in _LETTER_RUN.findall(text):
            letters.update(word)
            pairs.update(word[i : i + 2] for i in range(len(word) - 1))
    n_letters, n_pairs = sum(letters.values()), sum(pairs.values())
    frequent = {p: c for p, c in pairs.items() if c >= min_count}
    if not frequent:
        return None
    weighted = sum(
        c * math.log2((c / n_pairs) / (letters[p[0]] / n_letters * letters[p[1]] / n_letters))
        for p, c in frequent.items()
    )
    return weighted / sum(frequent.values())


def recurring_words(texts: Sequence[str], min_count: int = MIN_PIECE_FREQUENCY) -> float:
    """The fraction of words (letter runs) whose word occurs at least ``min_count`` times (in the
    first :data:`ASSOCIATION_SAMPLE` texts)."""
    words = Counter(w for text in texts[:ASSOCIATION_SAMPLE] for w in _LETTER_RUN.findall(text))
    total = sum(words.values())
    return sum(c for c in words.values() if c >= min_count) / total if total else 0.0


def letters_are_unrelated(texts: Sequence[str]) -> bool:
    """True when BPE would find no pieces in ``texts``: neighbouring letters are unrelated and most
    words do not recur (see the module docstring)."""
    association = neighbour_association(texts)
    return (
        association is not None
        and association < MIN_ASSOCIATION_BITS
        and recurring_words(texts) < 0.5
    )


def aligned_character_information(pairs: Sequence[tuple[str, str]]) -> float:
    """How much each target character is told by the source character at the same relative
    position (spaces removed on both sides): their mutual information as a fraction of the target
    characters' entropy, over the first :data:`ASSOCIATION_SAMPLE` pairs. 1.0 when the target is
    the source rewritten character for character; near 0 for translation."""
    joint: Counter[tuple[str, str]] = Counter()
    for source, target in pairs[:ASSOCIATION_SAMPLE]:
        s, t = "".join(source.split()), "".join(target.split())
        if s and t:
            joint.update((s[i * len(s) // len(t)], c) for i, c in enumerate(t))
    n = sum(joint.values())
    if n == 0:
        return 0.0
    src_counts: Counter[str] = Counter()
    tgt_counts: Counter[str] = Counter()
    for (a, b), c in joint.items():
        src_counts[a] += c
        tgt_counts[b] += c
    information = sum(
        c / n * math.log2(c * n / (src_counts[a] * tgt_counts[b])) for (a, b), c in joint.items()
    )
    entropy = -sum(c / n * math.log2(c / n) for c in tgt_counts.values())
    return information / entropy if entropy > 0 else 1.0


def _found_near(pairs: Sequence[tuple[str, str]]) -> float:
    """The fraction of target characters (spaces removed) that the source also has within a window
    around the same relative position (:data:`NEAR`)."""
    found = total = 0
    for source, target in pairs:
        s, t = "".join(source.split()), "".join(target.split())
        if not s or not t:
            continue
        window = max(2, int(len(s) * NEAR))
        for i, c in enumerate(t):
            j = i * len(s) // len(t)
            found += c in s[max(0, j - window) : j + window + 1]
        total += len(t)
    return found / total if total else 0.0


def local_character_overlap(pairs: Sequence[tuple[str, str]]) -> float:
    """How much more often a target character is found near its place in its own source than in
    another pair's source (0 when no more often, 1 when always found): a target built in place from
    its source's own letters (vowels dropped, each word reversed, Pig Latin, a plural) scores high,
    translation and word reordering low, as the letters of one language recur in any sentence of
    it. Over the first :data:`OVERLAP_SAMPLE` pairs, each target also read against the source half
    the sample away."""
    sample = [(s, t) for s, t in pairs[:OVERLAP_SAMPLE] if s.strip() and t.strip()]
    if len(sample) < 2:
        return 0.0
    half = len(sample) // 2
    mismatched = [(sample[(i + half) % len(sample)][0], t) for i, (_, t) in enumerate(sample)]
    own, chance = _found_near(sample), _found_near(mismatched)
    return (own - chance) / (1 - chance) if chance < 1 else 0.0


def maps_letter_by_letter(pairs: Sequence[tuple[str, str]]) -> bool:
    """True when the corpus rewrites its sources character for character, or builds each target
    in place from its source's letters (see the module docstring), in lines short enough for a
    character-level model."""
    sample = pairs[:ASSOCIATION_SAMPLE]
    if not sample:
        return False
    longest = sum(max(len(s), len(t)) for s, t in sample) / len(sample)
    if longest > LETTER_BY_LETTER_MAX_CHARS:
        return False
    return (
        aligned_character_information(sample) >= LETTER_BY_LETTER
        or local_character_overlap(sample) >= REWRITES_IN_PLACE
    )


def spells_out_characters(pairs: Sequence[tuple[str, str]]) -> bool:
    """True when each source character becomes one target word in at least :data:`SPELLED_OUT` of
    the pairs (the first :data:`ASSOCIATION_SAMPLE`): the target's space-separated words are as many
    as the source's characters, spaces counted or not (Morse code, a spelling alphabet, character
    codes), words of two characters or more on average. The source is then best read character by
    character (see the module docstring)."""
    sample = [(s, t) for s, t in pairs[:ASSOCIATION_SAMPLE] if s.strip() and t.strip()]
    if not sample:
        return False
    spelled = sum(
        len(t.split()) in (len(s.strip()), len("".join(s.split()))) and len(s.strip()) > 1
        for s, t in sample
    )
    words = [w for _, t in sample for w in t.split()]
    # Words of one character (a reversal of spaced letters) spell nothing out: both sides are
    # characters already.
    long_words = sum(map(len, words)) / len(words) >= 2
    return long_words and spelled / len(sample) >= SPELLED_OUT


def _is_punctuation(char: str) -> bool:
    """What the tokenizer's punctuation rule counts: ASCII punctuation and Unicode's P categories."""
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def mostly_punctuation(texts: Sequence[str]) -> bool:
    """True when at least :data:`MOSTLY_PUNCTUATION` of the non-space characters (of the first
    :data:`ASSOCIATION_SAMPLE` texts) are punctuation: text such as Morse code, whose units are runs
    of punctuation that BPE may only learn when a run stays one piece (see the module docstring)."""
    counts = Counter(c for text in texts[:ASSOCIATION_SAMPLE] for c in text if not c.isspace())
    total = sum(counts.values())
    punctuation = sum(n for c, n in counts.items() if _is_punctuation(c))
    return total > 0 and punctuation / total >= MOSTLY_PUNCTUATION


def _learned_pieces(tokenizer: BPETokenizer) -> list[int]:
    """Ids of the pieces BPE built by merging (not the special tokens, not single characters)."""
    vocab = tokenizer.hf_tokenizer.get_vocab()
    return [i for t, i in vocab.items() if len(t) > 1 and t not in SPECIAL_TOKENS]


def rare_fraction(tokenizer: BPETokenizer, texts: Sequence[str], min_frequency: int) -> float:
    """The fraction of learned pieces that occur fewer than ``min_frequency`` times in ``texts``."""
    learned = _learned_pieces(tokenizer)
    if not learned:
        return 0.0
    counts = Counter(i for ids in tokenizer.encode_batch(texts) for i in ids)
    return sum(counts[i] < min_frequency for i in learned) / len(learned)


def learn_vocabulary(
    texts: Sequence[str],
    vocab_size: int | None = None,
    min_frequency: int = MIN_PIECE_FREQUENCY,
    max_size: int = MAX_VOCAB,
    sides: Sequence[Sequence[str]] | None = None,
    letter_by_letter: bool = False,
    spelled_out: bool = False,
) -> BPETokenizer:
    """A BPE tokenizer for ``texts`` whose size follows the rules of the module docstring.

    Args:
        texts: the training text (one side, or both sides for a shared vocabulary).
        vocab_size: use exactly this size instead of the rules (``--vocab-size``).
        min_frequency: the frequency rule's threshold.
        max_size: the largest vocabulary the rule may choose.
        sides: the texts of each side when ``texts`` joins them (a shared vocabulary): characters
            alone when either side's letters are unrelated (default: ``texts`` is one side).
        letter_by_letter: the corpus rewrites its sources character for character
            (:func:`maps_letter_by_letter`): characters alone.
        spelled_out: ``texts`` are sources whose every character becomes a target word
            (:func:`spells_out_characters`): characters alone.
    """
    texts = list(texts)
    if vocab_size is not None:
        return BPETokenizer.train(texts, vocab_size)
    reason = None
    if letter_by_letter:
        reason = "the target rewrites the source letter by letter, in place"
    elif spelled_out:
        reason = "each source character becomes one target word"
    elif any(letters_are_unrelated(list(side)) for side in (sides or [texts])):
        reason = (
            f"neighbouring letters are unrelated: under {MIN_ASSOCIATION_BITS:.1f} bits of "
            "association, and few words recur"
        )
    if reason is not None:
        tokenizer = BPETokenizer.train(texts, len(SPECIAL_TOKENS) + 1)  # every character, no merge
        log.info("vocabulary: %d characters, no pieces (%s)", tokenizer.vocab_size, reason)
        return tokenizer
    runs = any(mostly_punctuation(list(side)) for side in (sides or [texts]))
    tokenizer = BPETokenizer.train(
        texts, max_size, min_frequency=min_frequency, punctuation_runs=runs
    )
    log.info(
        "vocabulary: %d pieces (%d merged by BPE, each pair seen >= %d times%s)",
        tokenizer.vocab_size,
        len(_learned_pieces(tokenizer)),
        min_frequency,
        "; text mostly punctuation: its runs are pieces" if runs else "",
    )
    return tokenizer
