"""Decoding: turn a model's next-token distribution into sequences.

Shapes: B batch (sentences), K beams, S source length, V vocabulary.

* :func:`greedy_search` — take the most probable token at every step.
* :func:`beam_search` — keep the K best partial translations; GNMT length penalty (Wu et al., 2016)
  ``lp(Y) = ((5 + |Y|) / 6) ** alpha``; a hypothesis ends at ``<eos>``; a sentence stops when no living
  hypothesis can still beat its K finished ones (an exact bound, not a heuristic).
* :func:`sample_search` — translation by sampling: one draw per step, n samples per sentence.
* :func:`search` — the three behind one :class:`SearchOptions` (what ``aiayn translate`` calls).
* :func:`align` — the source position each output token attends to most (fairseq's
  ``--print-alignment``).
* Logit filters for sampling: temperature, top-k, top-p (nucleus).
* :func:`generate` / :func:`stream_generate` — decoder-only (GPT) generation: greedy or sampled,
  batched prompts of different lengths (left-padded), KV cache, stop on ``<eos>`` or a caller's test.

Both searches decode one token at a time with the decoder's KV cache; the encoder runs once, and the
cross-attention keys/values are computed once per source. Sentences leave the batch as soon as they are
finished, so a long sentence doesn't make the short ones pay. The maximum output length is the source
length + 50, as in the paper (section 6.1).

Every search also takes: several models (an ensemble: the mean of their next-token log-probabilities,
as Marian combines its scorers; models that share both vocabularies), the decoding controls of
:mod:`aiayn.logits` (built only when one is on, so the plain path does no extra work per step), and a
forced target ``prefix`` (the output starts with these tokens, with their log-probabilities, and the
search continues after them; the controls apply from the first free token).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .data.batching import collate_seq2seq
from .data.tokenizers import UNK_ID, Tokenizer
from .errors import AiaynError, ConfigError, ModelDivergedError
from .logits import NEG_INF, DecodingControls, LogitsProcessor, StepContext, build_processors
from .models.gpt import GPT, positions_from_mask
from .models.seq2seq import Transformer

#: The largest beam accepted (``--beam``, ``serve``): past a few dozen, a wider beam only costs time
#: and memory (K hypotheses per sentence, each with its cache) and finds shorter, worse outputs.
MAX_BEAM = 64
#: Paper section 6.1: "maximum output length to input length + 50".
EXTRA_OUTPUT_LEN = 50

#: One model, or several decoded as an ensemble.
Models = Transformer | Sequence[Transformer]


@dataclass
class Hypothesis:
    """A finished output: token ids (no BOS/EOS), summed log-probability, length-normalised score.

    ``token_logprobs`` (one per token) and ``eos_logprob`` (None when the output ran out of length
    budget instead of ending) are filled when the search was asked for them; ``logprob`` is their
    sum. Greedy search without them leaves ``logprob`` and ``score`` NaN (not computed).
    """

    tokens: list[int]
    logprob: float
    score: float
    token_logprobs: list[float] | None = None
    eos_logprob: float | None = None

    @property
    def mean_logprob(self) -> float:
        """The mean log-probability per decoding step (the tokens, and ``<eos>`` when it ended)."""
        steps = len(self.tokens) + (self.eos_logprob is not None)
        return self.logprob / max(steps, 1)


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (alpha = 0: no normalisation)."""
    return ((5.0 + length) / 6.0) ** alpha


def _hypothesis(
    output: list[int], eos_id: int, alpha: float, logprob: float, step_logprobs: list[float] | None
) -> Hypothesis:
    """A hypothesis from its decoded tokens (``<eos>`` last when it ended) and per-step scores."""
    ended = bool(output) and output[-1] == eos_id
    tokens = output[:-1] if ended else output
    length = len(tokens) + 1  # the EOS counts, as in GNMT/fairseq
    if step_logprobs is None:
        return Hypothesis(tokens, logprob, logprob / length_penalty(length, alpha))
    return Hypothesis(
        tokens,
        logprob,
        logprob / length_penalty(length, alpha),
        token_logprobs=step_logprobs[: len(tokens)],
        eos_logprob=step_logprobs[-1] if ended else None,
    )


def _max_lengths(
    src_key_mask: Tensor, max_len: int | None, length_ratio: float | None = None
) -> Tensor:
    """Per-sentence output budget: source length + 50, or ``length_ratio`` times the source length
    + 10 when that is longer (a model whose targets are many times longer than its sources: digits
    to words, a date to a sentence), capped by ``max_len`` when given."""
    lengths = src_key_mask.sum(-1)
    budget = lengths + EXTRA_OUTPUT_LEN
    if length_ratio is not None:
        budget = torch.maximum(budget, (lengths * length_ratio).ceil().long() + 10)
    if max_len is not None:
        budget = budget.clamp(max=max_len)
    return budget


class _Stepper:
    """Feeds tokens to the decoder, with the KV cache or (for tests) by full recomputation.

    ``memory``/``mask`` hold one row per source; decoding rows are K = ``copies`` consecutive rows
    per source. With ``share`` (beam search: a sentence's K rows stay together until it finishes)
    and the cache, the K rows share their source's cross-attention keys and values: computed once,
    never copied K times nor reordered with the beams. Otherwise (rows that leave one by one, as
    samples do, or no cache) the memory is repeated K times.
    """

    def __init__(
        self,
        model: Transformer,
        memory: Tensor,
        mask: Tensor,
        use_cache: bool,
        copies: int = 1,
        share: bool = False,
    ) -> None:
        self.model, self.use_cache = model, use_cache
        self.shared = share and use_cache and copies > 1
        if copies > 1 and not self.shared:
            memory, mask = memory.repeat_interleave(copies, 0), mask.repeat_interleave(copies, 0)
        self.memory: Tensor | None = memory
        # No source padding (always so at batch 1): no mask to apply at every step and layer.
        self.mask: Tensor | None = None if bool(mask.all()) else mask
        self.cache = model.new_cache() if use_cache else None
        self.first = True

    def logits(self, tokens: Tensor, processors: LogitsProcessor | None = None) -> Tensor:
        """``tokens (N, t)`` so far -> scores of the next token ``(N, V)``, after ``processors``."""
        if self.use_cache:
            memory = self.memory if self.first else None  # cross-attn keys/values already cached
            logits = self.model.decode(tokens[:, -1:], memory, self.mask, self.cache)
            self.memory = None  # in the cache now: no need to carry it through select()
        else:
            logits = self.model.decode(tokens, self.memory, self.mask)
        self.first = False
        logits = logits[:, -1]
        return logits if processors is None else processors(tokens, logits)

    def normalise(self, logits: Tensor) -> Tensor:
        """Scores from :meth:`logits` -> log-probabilities."""
        return torch.log_softmax(logits.float(), dim=-1)

    def logprobs(self, tokens: Tensor, processors: LogitsProcessor | None = None) -> Tensor:
        """``tokens (N, t)`` so far -> log-probabilities of the next token ``(N, V)``."""
        return self.normalise(self.logits(tokens, processors))

    def select(self, index: Tensor, sentences: Tensor | None = None) -> None:
        """Keep rows ``index`` (beam parents, or the sentences still decoding). With shared sources,
        ``sentences``: the sources that stay when some finished (None: a beam reorder within each
        sentence, which leaves the sources as they are)."""
        sources = sentences if self.shared else index
        if sources is not None:
            if self.mask is not None:
                self.mask = self.mask.index_select(0, sources)
            if self.memory is not None:
                self.memory = self.memory.index_select(0, sources)
        if self.cache is not None:
            self.cache.reorder(index, sources)


class _Ensemble:
    """Several steppers as one: the next-token scores are the mean of the members' log-probabilities
    (each after the processors). The mean is not renormalised, so a sequence's score is the mean of
    its log-probabilities under each model (Marian's rule; fairseq averages probabilities instead)."""

    def __init__(self, members: list[_Stepper]) -> None:
        self.members = members

    def logits(self, tokens: Tensor, processors: LogitsProcessor | None = None) -> Tensor:
        total = self.members[0].logprobs(tokens, processors)
        for member in self.members[1:]:
            total = total + member.logprobs(tokens, processors)
        return total / len(self.members)

    def normalise(self, logits: Tensor) -> Tensor:
        return logits  # already (mean) log-probabilities

    def logprobs(self, tokens: Tensor, processors: LogitsProcessor | None = None) -> Tensor:
        return self.logits(tokens, processors)

    def select(self, index: Tensor, sentences: Tensor | None = None) -> None:
        for member in self.members:
            member.select(index, sentences)


def _members(model: Models) -> list[Transformer]:
    return list(model) if isinstance(model, (list, tuple)) else [model]


def _stepper(
    models: list[Transformer],
    src: Tensor,
    mask: Tensor,
    copies: int,
    share: bool,
    use_cache: bool,
) -> _Stepper | _Ensemble:
    """One stepper per model (each encodes the source once), ``copies`` rows per source."""
    steppers = [
        _Stepper(model, model.encode(src, mask), mask, use_cache, copies, share) for model in models
    ]
    return steppers[0] if len(steppers) == 1 else _Ensemble(steppers)


def _translation_processors(
    controls: DecodingControls | None, eos_id: int
) -> LogitsProcessor | None:
    # The decoder's tokens start with <bos>, which is no output token (for --min-len).
    return build_processors(controls, StepContext(eos_id, prompt_length=1))


def _force(logprobs: Tensor, token: int) -> Tensor:
    """Only ``token`` stays possible, with its own log-probability (fairseq's prefix forcing)."""
    forced = torch.full_like(logprobs, NEG_INF)
    forced[:, token] = logprobs[:, token]
    return forced


#: ``pick(logits (N, V)) -> next tokens (N,)``: argmax, or a draw.
PickFn = Callable[[Tensor], Tensor]


def _argmax(logits: Tensor) -> Tensor:
    return logits.argmax(-1)  # softmax keeps the order


def _one_choice_search(
    stepper: _Stepper | _Ensemble,
    tokens: Tensor,
    budget: Tensor,
    eos_id: int,
    alpha: float,
    pick: PickFn = _argmax,
    processors: LogitsProcessor | None = None,
    prefix: Sequence[int] = (),
    scores: bool = False,
) -> list[Hypothesis]:
    """Greedy or sampled decoding: one token chosen per row and step, rows leaving when finished.

    Args:
        stepper: the model(s), positioned on the rows of ``tokens``.
        tokens: ``(N, 1)`` the start tokens.
        budget: ``(N,)`` each row's length budget.
        pick: chooses the next tokens from the scores.
        processors: the decoding controls (None: off).
        prefix: tokens forced first.
        scores: track per-token log-probabilities (else the hypotheses' scores are NaN).
    """
    N = tokens.shape[0]
    results: list[Hypothesis | None] = [None] * N
    alive = list(range(N))  # which row each live row is
    budgets = budget.tolist()
    step_logprobs = tokens.new_zeros((N, 0), dtype=torch.float) if scores else None
    step = 0
    while alive:
        forced = step < len(prefix)
        logits = stepper.logits(tokens, None if forced else processors)
        next_tok = tokens.new_full((tokens.shape[0],), prefix[step]) if forced else pick(logits)
        if step_logprobs is not None:
            chosen = stepper.normalise(logits).gather(1, next_tok[:, None])
            step_logprobs = torch.cat([step_logprobs, chosen], 1)
        step += 1
        tokens = torch.cat([tokens, next_tok[:, None]], 1)
        # The finished check on plain lists: one host copy of the new tokens per step instead of
        # four small tensor ops (at batch 1 each costs more than its arithmetic).
        done = [
            row
            for row, (token, b) in enumerate(zip(next_tok.tolist(), alive))
            if token == eos_id or budgets[b] <= step
        ]
        if done:
            for row in done:
                lps = None if step_logprobs is None else step_logprobs[row].tolist()
                logprob = math.nan if lps is None else sum(lps)
                out = tokens[row, 1:].tolist()
                results[alive[row]] = _hypothesis(out, eos_id, alpha, logprob, lps)
            finished = set(done)
            staying = [row for row in range(len(alive)) if row not in finished]
            alive = [alive[row] for row in staying]
            if alive:
                keep = torch.tensor(staying, device=tokens.device)
                tokens = tokens[keep]
                if step_logprobs is not None:
                    step_logprobs = step_logprobs[keep]
                stepper.select(keep)
    return results  # type: ignore[return-value]  # every row finished


def _start(
    models: list[Transformer],
    src: Tensor,
    src_key_mask: Tensor | None,
    copies: int,
    bos_id: int,
    max_len: int | None,
    length_ratio: float | None,
    use_cache: bool,
    share: bool = False,
) -> tuple[_Stepper | _Ensemble, Tensor, Tensor]:
    """The stepper on ``copies`` rows per sentence (sharing their source: see :class:`_Stepper`),
    their start tokens, and each sentence's length budget."""
    src_key_mask = models[0].source_mask(src, src_key_mask)
    B = src.shape[0]
    budget = _max_lengths(src_key_mask, max_len, length_ratio)
    stepper = _stepper(models, src, src_key_mask, copies, share, use_cache)
    tokens = torch.full((B * copies, 1), bos_id, dtype=torch.long, device=src.device)
    return stepper, tokens, budget


@torch.inference_mode()
def greedy_search(
    model: Models,
    src: Tensor,
    src_key_mask: Tensor | None = None,
    bos_id: int = 1,
    eos_id: int = 2,
    max_len: int | None = None,
    use_cache: bool = True,
    length_ratio: float | None = None,
    *,
    controls: DecodingControls | None = None,
    prefix: Sequence[int] = (),
) -> list[list[int]]:
    """Most probable token at each step, for a batch of sources.

    Args:
        model: an encoder-decoder Transformer (put in eval mode by the caller), or several (an
            ensemble).
        src: ``(B, S)`` source ids (``tokens + <eos>``, right-padded).
        src_key_mask: ``(B, S)`` True for real source tokens (from ``pad_id`` when omitted).
        bos_id, eos_id: special token ids.
        max_len: cap on output length (default: source length + 50).
        use_cache: decode with the KV cache (False recomputes everything; for tests).
        length_ratio: allow up to this many output tokens per source token (the longest ratio the
            model saw in training; see :func:`_max_lengths`).
        controls: repetition penalty, n-gram and length limits, bans (:mod:`aiayn.logits`).
        prefix: target tokens the output is forced to start with.

    Returns:
        One token list per sentence, without BOS and EOS.
    """
    hyps = _greedy(
        model,
        src,
        src_key_mask,
        bos_id=bos_id,
        eos_id=eos_id,
        max_len=max_len,
        use_cache=use_cache,
        length_ratio=length_ratio,
        controls=controls,
        prefix=prefix,
    )
    return [h.tokens for h in hyps]


@torch.inference_mode()
def _greedy(
    model: Models,
    src: Tensor,
    src_key_mask: Tensor | None,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int | None,
    length_ratio: float | None,
    controls: DecodingControls | None,
    prefix: Sequence[int],
    use_cache: bool = True,
    scores: bool = False,
    alpha: float = 0.0,
) -> list[Hypothesis]:
    """:func:`greedy_search`'s hypotheses; with ``scores``, their log-probabilities and scores
    (length penalty ``alpha``)."""
    stepper, tokens, budget = _start(
        _members(model), src, src_key_mask, 1, bos_id, max_len, length_ratio, use_cache
    )
    processors = _translation_processors(controls, eos_id)
    return _one_choice_search(
        stepper, tokens, budget, eos_id, alpha, _argmax, processors, prefix, scores
    )


@torch.inference_mode()
def sample_search(
    model: Models,
    src: Tensor,
    src_key_mask: Tensor | None = None,
    samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    alpha: float = 0.6,
    bos_id: int = 1,
    eos_id: int = 2,
    max_len: int | None = None,
    use_cache: bool = True,
    length_ratio: float | None = None,
    *,
    controls: DecodingControls | None = None,
    prefix: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """Translate by sampling: each step draws the next token (as :func:`sample_next`).

    Args:
        samples: independent samples per sentence.
        temperature, top_k, top_p: as :func:`sample_next` (temperature 0 = greedy).
        generator: the random generator (seed it for repeatable samples; the draws depend on the
            batch, so the same sentences in the same batches give the same samples).
        alpha: the length-penalty exponent of the samples' scores (their order).
        Others as :func:`greedy_search`.

    Returns:
        Per sentence, its samples, best score first, each with per-token log-probabilities (of the
        model's distribution after the controls, before temperature and filtering).
    """
    _check_sampling(temperature, top_k, top_p)
    stepper, tokens, budget = _start(
        _members(model), src, src_key_mask, samples, bos_id, max_len, length_ratio, use_cache
    )

    def pick(logits: Tensor) -> Tensor:
        return sample_next(logits, temperature, top_k, top_p, generator)

    processors = _translation_processors(controls, eos_id)
    budget = budget.repeat_interleave(samples)
    hyps = _one_choice_search(
        stepper, tokens, budget, eos_id, alpha, pick, processors, prefix, True
    )
    groups = [hyps[b : b + samples] for b in range(0, len(hyps), samples)]
    return [sorted(g, key=lambda h: h.score, reverse=True) for g in groups]


@torch.inference_mode()
def beam_search(
    model: Models,
    src: Tensor,
    src_key_mask: Tensor | None = None,
    beam_size: int = 4,
    alpha: float = 0.6,
    bos_id: int = 1,
    eos_id: int = 2,
    max_len: int | None = None,
    use_cache: bool = True,
    length_ratio: float | None = None,
    *,
    controls: DecodingControls | None = None,
    prefix: Sequence[int] = (),
    scores: bool = False,
) -> list[list[Hypothesis]]:
    """Batched beam search with the GNMT length penalty.

    Args:
        model: an encoder-decoder Transformer in eval mode, or several (an ensemble).
        src: ``(B, S)`` source ids, right-padded.
        src_key_mask: ``(B, S)`` True for real tokens.
        beam_size: K, hypotheses kept per sentence (1 = greedy).
        alpha: length-penalty exponent (0.6 in the paper; 0 = raw log-probability).
        bos_id, eos_id: special ids.
        max_len: cap on output length (default: source length + 50).
        use_cache: decode with the KV cache.
        length_ratio: allow up to this many output tokens per source token (see greedy_search).
        controls, prefix: as :func:`greedy_search`.
        scores: also return each hypothesis's per-token log-probabilities.

    Returns:
        Per sentence, its finished hypotheses, best first (at most ``beam_size``).
    """
    if not 1 <= beam_size <= MAX_BEAM:
        raise ValueError(f"beam_size must be in 1..{MAX_BEAM}, got {beam_size}")
    K = beam_size
    B = src.shape[0]
    device = src.device
    stepper, tokens, budget = _start(
        _members(model), src, src_key_mask, K, bos_id, max_len, length_ratio, use_cache, share=True
    )
    processors = _translation_processors(controls, eos_id)
    # Only beam 0 is live at the start, so the K copies of <bos> don't fill the beam with duplicates.
    beam_scores = torch.full((B, K), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    # (N * K, t) the log-probability of each token of each beam, when asked for.
    step_logprobs = torch.zeros((B * K, 0), device=device) if scores else None
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    alive = torch.arange(B, device=device)  # sentences still decoding, in row-block order
    step = 0
    while alive.numel():
        N = alive.numel()
        if step < len(prefix):
            logprobs = _force(stepper.logprobs(tokens), prefix[step])
        else:
            logprobs = stepper.logprobs(tokens, processors)  # (N*K, V)
        V = logprobs.shape[-1]
        step += 1
        candidates = (beam_scores.view(N * K, 1) + logprobs).view(N, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=-1)  # (N, 2K)
        parent = top_index // V  # beam each candidate extends
        token = top_index % V
        top_lps = None if step_logprobs is None else logprobs.view(N, K * V).gather(1, top_index)
        last_step = budget[alive] <= step  # (N,)
        is_eos = (token == eos_id) | last_step[:, None]

        # Record finished hypotheses (EOS, or out of length budget), then pick the K best live ones.
        this_step = _Candidates(
            top_scores,
            parent,
            token,
            is_eos,
            last_step,
            budget[alive],
            tokens,
            step_logprobs,
            top_lps,
        )
        sentence_done = _record_finished(finished, alive.tolist(), K, this_step, eos_id, alpha)

        live_scores = top_scores.masked_fill(is_eos, float("-inf"))
        best_live, order = live_scores.topk(K, dim=-1)  # (N, K)
        new_parent = parent.gather(1, order)  # (N, K)
        new_token = token.gather(1, order)
        rows_index = (torch.arange(N, device=device)[:, None] * K + new_parent).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows_index), new_token.view(-1, 1)], 1)
        if step_logprobs is not None:
            chosen = top_lps.gather(1, order).view(-1, 1)
            step_logprobs = torch.cat([step_logprobs.index_select(0, rows_index), chosen], 1)
        beam_scores = best_live
        stepper.select(rows_index)

        if any(sentence_done):
            done = torch.tensor(sentence_done, device=device)
            keep = (~done).nonzero().flatten()
            alive = alive[keep]
            keep_rows = (keep[:, None] * K + torch.arange(K, device=device)).view(-1)
            tokens = tokens.index_select(0, keep_rows)
            beam_scores = beam_scores.index_select(0, keep)
            if step_logprobs is not None:
                step_logprobs = step_logprobs.index_select(0, keep_rows)
            if alive.numel():
                stepper.select(keep_rows, sentences=keep)
    return finished


class _Candidates:
    """One beam step's candidates, per live sentence, as plain lists: they are read per sentence per
    step, where tensor indexing would cost more than the arithmetic. The beams' tokens (and
    log-probabilities) become lists only when a hypothesis finishes: most steps finish none."""

    def __init__(
        self,
        scores: Tensor,
        parent: Tensor,
        token: Tensor,
        is_eos: Tensor,
        last_step: Tensor,
        budget: Tensor,
        tokens: Tensor,
        step_logprobs: Tensor | None,
        token_logprobs: Tensor | None,
    ) -> None:
        self.scores, self.parent, self.token = scores.tolist(), parent.tolist(), token.tolist()
        self.is_eos, self.last_step, self.budget = (
            is_eos.tolist(),
            last_step.tolist(),
            budget.tolist(),
        )
        self._tensors = (tokens, step_logprobs, token_logprobs)
        self._lists: list[list | None] | None = None

    def output(self, n: int, j: int, K: int) -> tuple[list[int], list[float] | None]:
        """Candidate ``j`` of sentence ``n``: its tokens after ``<bos>`` (its own last), and their
        log-probabilities when tracked."""
        if self._lists is None:
            self._lists = [None if t is None else t.tolist() for t in self._tensors]
        tokens, step_logprobs, token_logprobs = self._lists
        row = n * K + self.parent[n][j]
        output = tokens[row][1:] + [self.token[n][j]]
        if step_logprobs is None:
            return output, None
        return output, step_logprobs[row] + [token_logprobs[n][j]]


def _record_finished(
    finished: list[list[Hypothesis]],
    alive: list[int],
    K: int,
    c: _Candidates,
    eos_id: int,
    alpha: float,
) -> list[bool]:
    """Add each sentence's finished candidates to ``finished`` (best K kept); per sentence, whether
    it is done."""
    sentence_done = []
    for n, b in enumerate(alive):
        for j, score in enumerate(c.scores[n]):
            if not c.is_eos[n][j] or score == float("-inf"):
                continue
            if j >= K and not c.last_step[n]:
                break  # only EOS among the top K candidates may end (standard beam rule)
            output, lps = c.output(n, j, K)
            finished[b].append(_hypothesis(output, eos_id, alpha, score, lps))
        finished[b].sort(key=lambda h: h.score, reverse=True)
        del finished[b][K:]
        sentence_done.append(
            c.last_step[n]
            or _cannot_improve(finished[b], K, c.scores[n], c.is_eos[n], c.budget[n], alpha)
        )
    return sentence_done


def _cannot_improve(
    finished: list[Hypothesis],
    K: int,
    top_scores: list[float],
    is_eos: list[bool],
    budget: int,
    alpha: float,
) -> bool:
    """True when a sentence has K finished hypotheses that no live one can overtake.

    ``top_scores``/``is_eos``: the sentence's candidates this step (plain lists: this runs per
    sentence per step, where tensor indexing would cost more than the arithmetic).

    Log-probabilities only fall as a hypothesis grows, and the length penalty is largest at the
    longest allowed length, so a live hypothesis with score s can reach at most s / lp(budget + 1).
    """
    if len(finished) < K:
        return False
    live = max((s for s, eos in zip(top_scores, is_eos) if not eos), default=float("-inf"))
    if live == float("-inf"):
        return True
    bound = live / length_penalty(budget + 1, alpha) if alpha > 0 else live
    return finished[-1].score >= bound


# ---- One entry point for translation -----------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Sampling instead of search: temperature (0 = greedy), top-k (0 = off), top-p (1.0 = off)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _check_sampling(self.temperature, self.top_k, self.top_p)


@dataclass(frozen=True)
class SearchOptions:
    """How :func:`search` decodes.

    Attributes:
        beam: beam size (1 = greedy; unused when sampling).
        alpha: GNMT length-penalty exponent (the order of the n-best and of samples).
        nbest: hypotheses returned per sentence (at most ``beam``; with sampling, the samples drawn).
        max_len: cap on output length.
        sampling: sample instead of searching (None: search).
        controls: the decoding controls (None or all off: none).
        prefix: target tokens forced first.
        scores: per-token log-probabilities (``logprob`` and ``score`` of greedy outputs need them).
    """

    beam: int = 4
    alpha: float = 0.6
    nbest: int = 1
    max_len: int | None = None
    sampling: Sampling | None = None
    controls: DecodingControls | None = None
    prefix: tuple[int, ...] = ()
    scores: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.beam <= MAX_BEAM:
            raise ConfigError(f"beam size must be 1 to {MAX_BEAM}, got {self.beam}")
        if not 1 <= self.nbest <= MAX_BEAM:
            raise ConfigError(f"n-best must be 1 to {MAX_BEAM}, got {self.nbest}")
        if self.sampling is None and self.nbest > self.beam:
            raise ConfigError(
                f"n-best {self.nbest} is more than the beam of {self.beam}: a beam search keeps "
                f"only {self.beam} hypotheses (widen the beam)"
            )


def search(
    model: Models,
    src: Tensor,
    src_key_mask: Tensor | None,
    options: SearchOptions,
    length_ratio: float | None = None,
    generator: torch.Generator | None = None,
    bos_id: int = 1,
    eos_id: int = 2,
) -> list[list[Hypothesis]]:
    """Greedy, beam or sampled decoding of a batch as ``options`` say; per sentence, its
    ``options.nbest`` best hypotheses, best first."""
    o = options
    common = dict(
        bos_id=bos_id,
        eos_id=eos_id,
        max_len=o.max_len,
        length_ratio=length_ratio,
        controls=o.controls,
        prefix=o.prefix,
    )
    if o.sampling is not None:
        sampling = asdict(o.sampling)  # temperature, top_k, top_p
        return sample_search(
            model,
            src,
            src_key_mask,
            o.nbest,
            generator=generator,
            alpha=o.alpha,
            **sampling,
            **common,
        )
    if o.beam == 1:
        hyps = _greedy(model, src, src_key_mask, scores=o.scores, alpha=o.alpha, **common)
        return [[h] for h in hyps]
    found = beam_search(model, src, src_key_mask, o.beam, o.alpha, scores=o.scores, **common)
    return [hyps[: o.nbest] for hyps in found]


def search_batched(
    model: Models,
    sources: Sequence[Sequence[int]],
    options: SearchOptions,
    batch_size: int = 64,
    length_ratio: float | None = None,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """:func:`search` over tokenised sources (no EOS), batching sentences of similar length
    together; per source, in order, its hypotheses."""
    device = next(_members(model)[0].parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[list[Hypothesis]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate_seq2seq([(list(sources[i]), []) for i in chunk]).to(device)
        found = search(model, batch.src, batch.src_key_mask, options, length_ratio, generator)
        for i, hyps in zip(chunk, found):
            results[i] = hyps
    return results


# ---- What the output attends to, and what the input lacks -------------------------------------------


@torch.inference_mode()
def align(
    model: Models,
    source: Sequence[int],
    outputs: Sequence[Sequence[int]],
    layer: int = -1,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
) -> list[list[int]]:
    """For each token of each output, the source position its prediction attended to most.

    The cross-attention of decoder layer ``layer`` is averaged over its heads (and over the models
    of an ensemble), from one teacher-forced pass, which gives the same weights as the search's
    incremental steps. The source ``<eos>`` is left out, as fairseq's ``--print-alignment`` does.

    Args:
        model: the model, or the models of an ensemble.
        source: source token ids (no ``<eos>``; at least one).
        outputs: output token ids (no ``<bos>``/``<eos>``).
        layer: decoder layer, 0-based; negative counts from the last.

    Returns:
        Per output, one 0-based source position per token.
    """
    models = _members(model)
    device = next(models[0].parameters()).device
    src = torch.tensor([list(source) + [eos_id]] * len(outputs), device=device)
    width = 1 + max((len(o) for o in outputs), default=0)
    # Right padding: the causal decoder never lets a real position see it.
    tgt = torch.full((len(outputs), width), pad_id, dtype=torch.long, device=device)
    tgt[:, 0] = bos_id
    for i, out in enumerate(outputs):
        tgt[i, 1 : 1 + len(out)] = torch.tensor(list(out), dtype=torch.long)
    weights = sum(m.attention_maps(src, tgt).cross[layer].float().mean(1) for m in models)
    # Query t reads token t (<bos> first) and predicts output token t; the source <eos> is no word.
    best = weights[:, :, : len(source)].argmax(-1)  # type: ignore[union-attr]  # (K, width)
    return [best[i, : len(out)].tolist() for i, out in enumerate(outputs)]


def unknown_pieces(tokenizer: Tokenizer, text: str, ids: Sequence[int] | None = None) -> list[str]:
    """The parts of ``text`` that ``tokenizer`` reads as ``<unk>`` (characters its vocabulary never
    saw in training), each once, in order of appearance.

    ``ids``: ``tokenizer.encode(text)`` when already known (the check is then one scan of them,
    unless an ``<unk>`` is present).
    """
    ids = tokenizer.encode(text) if ids is None else ids
    # The tokenizer's own <unk> (an imported GPT-2's vocabulary has none: -1 or None, never 3).
    unk = getattr(tokenizer, "unk_id", UNK_ID)
    if unk is None or unk < 0 or unk not in ids:
        return []
    own = getattr(tokenizer, "unknown_spans", None)
    if own is not None:  # a tokenizer that knows its own offsets (Marian's SentencePiece)
        return own(text)
    hf = getattr(tokenizer, "hf_tokenizer", None)
    if hf is not None:  # BPE: the offsets of each <unk> in the original text
        encoding = hf.encode(text, add_special_tokens=False)
        spans = [text[a:b] for i, (a, b) in zip(encoding.ids, encoding.offsets) if i == unk]
    else:  # one id per character
        spans = [c for c, i in zip(text, ids) if i == unk]
    return list(dict.fromkeys(spans))


def check_layer(layer: int, layers: int) -> int:
    """``layer`` (negative: from the last) as a 0-based index of ``layers`` decoder layers."""
    if not -layers <= layer < layers:
        raise AiaynError(
            f"layer {layer}: the model has {layers} decoder layers (0 to {layers - 1})"
        )
    return layer % layers


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide logits by ``temperature`` (> 0); 1.0 leaves them unchanged."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits per row (ties at the k-th value are kept); the rest -> -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most-probable tokens whose probability reaches ``p``.

    The most probable token is always kept, so the result is never empty.
    """
    if p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # A token is dropped when the tokens before it already reach p.
    before = probs.cumsum(-1) - probs
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


# ---- Decoder-only generation (GPT) -------------------------------------------------------------------

#: ``stop(prompt_index, new_tokens)`` -> True when that prompt's continuation is complete (e.g. it now
#: ends with a stop string). ``new_tokens`` holds the tokens generated so far, the latest included.
StopFn = Callable[[int, list[int]], bool]


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose one next token per row from ``(N, V)`` logits.

    ``temperature == 0`` is greedy (argmax). Otherwise temperature, then top-k, then top-p (the order
    Hugging Face applies them), then one draw from the softmax with ``generator``.
    """
    if bool(torch.isnan(logits).any()):  # -inf is a banned token; NaN means the weights diverged
        raise ModelDivergedError(
            "the model's outputs are not numbers (NaN): its weights diverged in training"
        )
    if temperature == 0:
        return logits.argmax(-1)
    logits = apply_temperature(logits.float(), temperature)
    if top_k > 0:
        logits = top_k_filter(logits, top_k)
    if top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)


def _check_generation_args(
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    vocab_size: int,
) -> None:
    if not prompts:
        raise ValueError("no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(
                f"prompt {i} is empty: a decoder-only model needs a token to start from"
            )
        if min(p) < 0 or max(p) >= vocab_size:
            raise ValueError(f"prompt {i} has a token id outside 0..{vocab_size - 1}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    _check_sampling(temperature, top_k, top_p)


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if not (math.isfinite(temperature) and temperature >= 0):  # nan compares False: refused
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}"
        )
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:  # nan included
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.inference_mode()
def stream_generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    stop: StopFn | None = None,
    use_cache: bool = True,
    pad_id: int = 0,
    suppress: Sequence[int] = (),
    controls: DecodingControls | None = None,
) -> Iterator[list[int | None]]:
    """Continue each prompt, yielding one token per prompt per step as soon as it is chosen.

    Prompts of different lengths are padded on the left, so every row's next token is in the same
    column; the padding is masked out and positions count from each row's first real token, so a row
    gets the same tokens as its prompt would alone. A prompt leaves the batch when it finishes
    (``<eos>``, or ``stop`` says so), and the others stop paying for it.

    Contexts longer than the model's ``max_len`` positions slide: when the next token would not fit,
    the window restarts on the last ``max_len // 2`` tokens (the cache is rebuilt from them), so long
    generations cost a re-read every ``max_len // 2`` tokens instead of a full recomputation per token.
    A prompt longer than ``max_len`` keeps its last ``max_len`` tokens. The uncached path uses the same
    windows, so both paths give the same tokens.

    Args:
        model: a :class:`~aiayn.models.gpt.GPT` (put in eval mode by the caller).
        prompts: token ids of each prompt (at least one token each).
        max_new_tokens: tokens to generate per prompt at most.
        temperature: 0 = greedy (argmax); otherwise the softmax temperature of sampling.
        top_k: sample among the k most probable tokens (0 = no limit).
        top_p: sample from the smallest set of tokens whose probability reaches p (1.0 = no limit).
        generator: the random generator of sampling (seed it for repeatable samples).
        eos_id: a prompt finishes when it produces this token (not yielded; None = never).
        stop: called after each new token; True finishes that prompt (the token is kept).
        use_cache: decode with the KV cache (False recomputes the window every step; for tests).
        pad_id: the id written into padding (any valid id; it is masked out).
        suppress: token ids never generated (e.g. ``<pad>``, ``<bos>``, ``<unk>``).
        controls: repetition penalty, n-gram and length limits, bans (:mod:`aiayn.logits`); they
            see the prompt and the continuation, and ``min_len`` counts new tokens.

    Yields:
        Per step, a list with one entry per prompt: its new token, or None when it has finished.
    """
    c = model.config
    _check_generation_args(prompts, max_new_tokens, temperature, top_k, top_p, c.vocab_size)
    device = next(model.parameters()).device
    B = len(prompts)
    lengths = [len(p) for p in prompts]
    P = max(lengths)
    total = P + max_new_tokens
    # One buffer for prompt + continuation: each step writes its column. It starts small and
    # doubles when full, so a huge max_new_tokens costs nothing until tokens are actually made.
    ids = torch.full((B, min(total, P + max(64, c.max_len))), pad_id, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, P - len(p) : P] = torch.as_tensor(p, dtype=torch.long)
    ids = ids.to(device)
    # Each row's window starts at its first real token (left padding before it is masked out), or,
    # for a prompt longer than the context, at its last max_len tokens.
    starts = [max(P - n_b, P - c.max_len) for n_b in lengths]
    rows = list(range(B))  # the prompt each live row belongs to
    outputs: list[list[int]] = [[] for _ in range(B)]
    n = P  # columns filled so far
    w = 0  # first column fed to the model (the cache holds columns w .. n - 1)
    keep = max(1, c.max_len // 2)
    key_mask: Tensor | None = None  # (N, columns) True inside each row's window; None: all equal
    cache = None
    next_pos: Tensor | None = None  # (N, 1) position of each row's next token (cached path)
    refill = True  # (re)build the window: at the start and whenever a row's window slides
    banned = torch.tensor(sorted(set(suppress)), dtype=torch.long, device=device)
    # The common prompt width P: every row's new tokens start there (--min-len counts from it).
    processors = build_processors(controls, StepContext(eos_id, prompt_length=P))

    for _ in range(max_new_tokens):
        if n == ids.shape[1]:
            extra = min(ids.shape[1], total - n)
            ids = torch.cat([ids, ids.new_full((ids.shape[0], extra), pad_id)], dim=1)
            if key_mask is not None:  # the new columns lie after every row's window start
                key_mask = torch.cat([key_mask, key_mask.new_ones(key_mask.shape[0], extra)], 1)
        if n - min(starts) > c.max_len:
            # A row's window is full: it restarts on its last `keep` tokens. Positions are relative
            # to the window, so every cached key/value is recomputed.
            starts = [n - keep if n - s > c.max_len else s for s in starts]
            refill = True
        if refill:
            w = min(starts)
            key_mask = None
            if any(s != w for s in starts):
                key_mask = (
                    torch.arange(ids.shape[1], device=device)[None, :]
                    >= torch.tensor(starts, device=device)[:, None]
                )
        mask = None if key_mask is None else key_mask[:, w:n]  # (N, S)
        if use_cache and not refill:
            # One new token per row; its position follows the row's last one.
            logits = model(ids[:, n - 1 : n], key_mask=mask, positions=next_pos, cache=cache)
            next_pos += 1
        else:
            positions = (
                torch.arange(n - w, device=device) if mask is None else positions_from_mask(mask)
            )  # (S,) or (N, S)
            cache = model.new_cache() if use_cache else None
            logits = model(
                ids[:, w:n], key_mask=mask, positions=positions, cache=cache, last_only=True
            )
            if use_cache:
                next_pos = (positions[..., -1:] + 1).expand(len(rows), 1).clone()  # (N, 1)
            refill = False
        logits = logits[:, -1]  # (N, V)
        if banned.numel():
            logits = logits.index_fill(-1, banned, float("-inf"))
        if processors is not None:
            logits = processors(ids[:, :n], logits)
        token = sample_next(logits, temperature, top_k, top_p, generator)  # (N,)
        ids[:, n] = token
        n += 1

        step: list[int | None] = [None] * B
        finished: list[int] = []
        for row, (b, t) in enumerate(zip(rows, token.tolist())):
            if t == eos_id:
                finished.append(row)
                continue
            outputs[b].append(t)
            step[b] = t
            if stop is not None and stop(b, outputs[b]):
                finished.append(row)
        yield step
        if finished:
            done = set(finished)
            live = [r for r in range(len(rows)) if r not in done]
            if not live:
                return
            index = torch.tensor(live, device=device)
            rows = [rows[r] for r in live]
            starts = [starts[r] for r in live]
            ids = ids.index_select(0, index)
            if key_mask is not None:
                key_mask = key_mask.index_select(0, index)
            if next_pos is not None:
                next_pos = next_pos.index_select(0, index)
            if cache is not None:
                cache.reorder(index)


def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    stop: StopFn | None = None,
    use_cache: bool = True,
    pad_id: int = 0,
    suppress: Sequence[int] = (),
    controls: DecodingControls | None = None,
) -> list[list[int]]:
    """Continue each prompt; returns the new tokens of each (without ``<eos>``).

    Same arguments as :func:`stream_generate`, which this collects.
    """
    outputs: list[list[int]] = [[] for _ in prompts]
    for step in stream_generate(
        model,
        prompts,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
        eos_id=eos_id,
        stop=stop,
        use_cache=use_cache,
        pad_id=pad_id,
        suppress=suppress,
        controls=controls,
    ):
        for b, t in enumerate(step):
            if t is not None:
                outputs[b].append(t)
    return outputs
