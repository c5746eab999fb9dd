"""Evaluation metrics: BLEU and chrF through sacreBLEU (the standard, comparable implementation)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def corpus_bleu_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (13a tokenisation) and chrF of detokenised outputs against one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        return {"bleu": 0.0, "chrf": 0.0}
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


def perplexity(mean_nll: float) -> float:
    """exp(mean negative log-likelihood), capped to stay finite."""
    return math.exp(min(mean_nll, 700.0))
