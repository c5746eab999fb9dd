"""Decoding: turn a model's next-token distribution into sequences.

Shapes: B batch (sentences), K beams, S source length, V vocabulary.

* :func:`greedy_search` — take the most probable token at every step.
* :func:`beam_search` — keep the K best partial translations; GNMT length penalty (Wu et al., 2016)
  ``lp(Y) = ((5 + |Y|) / 6) ** alpha``; a hypothesis ends at ``<eos>``; a sentence stops when no living
  hypothesis can still beat its K finished ones (an exact bound, not a heuristic).
* Logit filters for sampling: temperature, top-k, top-p (nucleus).
* :func:`generate` / :func:`stream_generate` — decoder-only (GPT) generation: greedy or sampled,
  batched prompts of different lengths (left-padded), KV cache, stop on ``<eos>`` or a caller's test.

Both searches decode one token at a time with the decoder's KV cache; the encoder runs once, and the
cross-attention keys/values are computed once per source. Sentences leave the batch as soon as they are
finished, so a long sentence doesn't make the short ones pay. The maximum output length is the source
length + 50, as in the paper (section 6.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ModelDivergedError
from .models.gpt import GPT, positions_from_mask
from .models.seq2seq import Transformer

#: The largest beam accepted (``--beam``, ``serve``): past a few dozen, a wider beam only costs time
#: and memory (K hypotheses per sentence, each with its cache) and finds shorter, worse outputs.
MAX_BEAM = 64
#: Paper section 6.1: "maximum output length to input length + 50".
EXTRA_OUTPUT_LEN = 50


@dataclass
class Hypothesis:
    """A finished output: token ids (no BOS/EOS), summed log-probability, length-normalised score."""

    tokens: list[int]
    logprob: float
    score: float


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (alpha = 0: no normalisation)."""
    return ((5.0 + length) / 6.0) ** alpha


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
    """Feeds tokens to the decoder, with the KV cache or (for tests) by full recomputation."""

    def __init__(self, model: Transformer, memory: Tensor, mask: Tensor, use_cache: bool) -> None:
        self.model, self.use_cache = model, use_cache
        self.memory: Tensor | None = memory
        # No source padding (always so at batch 1): no mask to apply at every step and layer.
        self.mask: Tensor | None = None if bool(mask.all()) else mask
        self.cache = model.new_cache() if use_cache else None
        self.first = True

    def logits(self, tokens: Tensor) -> Tensor:
        """``tokens (N, t)`` so far -> scores of the next token ``(N, V)``."""
        if self.use_cache:
            memory = self.memory if self.first else None  # cross-attn keys/values already cached
            logits = self.model.decode(tokens[:, -1:], memory, self.mask, self.cache)
            self.memory = None  # in the cache now: no need to carry it through select()
        else:
            logits = self.model.decode(tokens, self.memory, self.mask)
        self.first = False
        return logits[:, -1]

    def logprobs(self, tokens: Tensor) -> Tensor:
        """``tokens (N, t)`` so far -> log-probabilities of the next token ``(N, V)``."""
        return torch.log_softmax(self.logits(tokens).float(), dim=-1)

    def select(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam parents, or the sentences still decoding)."""
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)
        if self.cache is not None:
            for layer_cache in self.cache:
                layer_cache.reorder(index)


@torch.inference_mode()
def greedy_search(
    model: Transformer,
    src: Tensor,
    src_key_mask: Tensor | None = None,
    bos_id: int = 1,
    eos_id: int = 2,
    max_len: int | None = None,
    use_cache: bool = True,
    length_ratio: float | None = None,
) -> list[list[int]]:
    """Most probable token at each step, for a batch of sources.

    Args:
        model: an encoder-decoder Transformer (put in eval mode by the caller).
        src: ``(B, S)`` source ids (``tokens + <eos>``, right-padded).
        src_key_mask: ``(B, S)`` True for real source tokens (from ``pad_id`` when omitted).
        bos_id, eos_id: special token ids.
        max_len: cap on output length (default: source length + 50).
        use_cache: decode with the KV cache (False recomputes everything; for tests).
        length_ratio: allow up to this many output tokens per source token (the longest ratio the
            model saw in training; see :func:`_max_lengths`).

    Returns:
        One token list per sentence, without BOS and EOS.
    """
    src_key_mask = model.source_mask(src, src_key_mask)
    budget = _max_lengths(src_key_mask, max_len, length_ratio)
    stepper = _Stepper(model, model.encode(src, src_key_mask), src_key_mask, use_cache)
    B = src.shape[0]
    results: list[list[int]] = [[] for _ in range(B)]
    alive = torch.arange(B, device=src.device)  # which sentence each row is
    tokens = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)
    step = 0
    while alive.numel():
        next_tok = stepper.logits(tokens).argmax(-1)  # (N,); softmax keeps the order
        step += 1
        tokens = torch.cat([tokens, next_tok[:, None]], 1)
        done = (next_tok == eos_id) | (budget[alive] <= step)
        if done.any():
            for row in done.nonzero().flatten().tolist():
                out = tokens[row, 1:].tolist()
                results[int(alive[row])] = out[:-1] if out[-1] == eos_id else out
            keep = (~done).nonzero().flatten()
            alive, tokens = alive[keep], tokens[keep]
            if alive.numel():
                stepper.select(keep)
    return results


@torch.inference_mode()
def beam_search(
    model: Transformer,
    src: Tensor,
    src_key_mask: Tensor | None = None,
    beam_size: int = 4,
    alpha: float = 0.6,
    bos_id: int = 1,
    eos_id: int = 2,
    max_len: int | None = None,
    use_cache: bool = True,
    length_ratio: float | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search with the GNMT length penalty.

    Args:
        model: an encoder-decoder Transformer in eval mode.
        src: ``(B, S)`` source ids, right-padded.
        src_key_mask: ``(B, S)`` True for real tokens.
        beam_size: K, hypotheses kept per sentence (1 = greedy).
        alpha: length-penalty exponent (0.6 in the paper; 0 = raw log-probability).
        bos_id, eos_id: special ids.
        max_len: cap on output length (default: source length + 50).
        use_cache: decode with the KV cache.
        length_ratio: allow up to this many output tokens per source token (see greedy_search).

    Returns:
        Per sentence, its finished hypotheses, best first (at most ``beam_size``).
    """
    if not 1 <= beam_size <= MAX_BEAM:
        raise ValueError(f"beam_size must be in 1..{MAX_BEAM}, got {beam_size}")
    K = beam_size
    src_key_mask = model.source_mask(src, src_key_mask)
    B = src.shape[0]
    device = src.device
    budget = _max_lengths(src_key_mask, max_len, length_ratio)
    memory = model.encode(src, src_key_mask)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,) sentence of each beam row
    stepper = _Stepper(
        model, memory.index_select(0, rows), src_key_mask.index_select(0, rows), use_cache
    )
    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)
    # Only beam 0 is live at the start, so the K copies of <bos> don't fill the beam with duplicates.
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    alive = torch.arange(B, device=device)  # sentences still decoding, in row-block order
    step = 0
    while alive.numel():
        N = alive.numel()
        logprobs = stepper.logprobs(tokens)  # (N*K, V)
        V = logprobs.shape[-1]
        step += 1
        candidates = (scores.view(N * K, 1) + logprobs).view(N, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=-1)  # (N, 2K)
        parent = top_index // V  # beam each candidate extends
        token = top_index % V
        last_step = budget[alive] <= step  # (N,)
        is_eos = (token == eos_id) | last_step[:, None]

        # Record finished hypotheses (EOS, or out of length budget), then pick the K best live ones.
        top_scores_l, parent_l, token_l = top_scores.tolist(), parent.tolist(), token.tolist()
        is_eos_l, last_step_l, tokens_l = is_eos.tolist(), last_step.tolist(), None
        alive_l, budget_l = alive.tolist(), budget[alive].tolist()
        sentence_done = []
        for n in range(N):
            b = alive_l[n]
            for j in range(top_scores.shape[1]):
                if not is_eos_l[n][j] or top_scores_l[n][j] == float("-inf"):
                    continue
                if j >= K and not last_step_l[n]:
                    break  # only EOS among the top K candidates may end (standard beam rule)
                if tokens_l is None:
                    tokens_l = tokens.tolist()
                prefix = tokens_l[n * K + parent_l[n][j]][1:]
                if token_l[n][j] != eos_id:
                    prefix = prefix + [token_l[n][j]]
                length = len(prefix) + 1  # the EOS counts, as in GNMT/fairseq
                finished[b].append(
                    Hypothesis(
                        prefix,
                        top_scores_l[n][j],
                        top_scores_l[n][j] / length_penalty(length, alpha),
                    )
                )
            finished[b].sort(key=lambda h: h.score, reverse=True)
            del finished[b][K:]
            sentence_done.append(
                last_step_l[n]
                or _cannot_improve(finished[b], K, top_scores_l[n], is_eos_l[n], budget_l[n], alpha)
            )

        live_scores = top_scores.masked_fill(is_eos, float("-inf"))
        best_live, order = live_scores.topk(K, dim=-1)  # (N, K)
        new_parent = parent.gather(1, order)  # (N, K)
        new_token = token.gather(1, order)
        rows_index = (torch.arange(N, device=device)[:, None] * K + new_parent).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows_index), new_token.view(-1, 1)], 1)
        scores = best_live
        stepper.select(rows_index)

        if any(sentence_done):
            done = torch.tensor(sentence_done, device=device)
            keep = (~done).nonzero().flatten()
            alive = alive[keep]
            keep_rows = (keep[:, None] * K + torch.arange(K, device=device)).view(-1)
            tokens, scores = tokens.index_select(0, keep_rows), scores.index_select(0, keep)
            if alive.numel():
                stepper.select(keep_rows)
    return finished


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
                for layer_cache in cache:
                    layer_cache.reorder(index)


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
    ):
        for b, t in enumerate(step):
            if t is not None:
                outputs[b].append(t)
    return outputs
