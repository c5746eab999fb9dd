"""Machine translation end to end: data -> tokenizers -> Transformer -> training -> decoding -> BLEU.

The notes' running example: the encoder reads 我是一个学生, the decoder writes "I am a student" one token
at a time from ``<bos>`` until ``<eos>``, trained with teacher forcing (the decoder sees the true previous
tokens) and label smoothing, with the paper's Adam settings and warm-up schedule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer as HFTokenizer
from torch import nn

from . import config as cfg
from .data.batching import Seq2SeqBatch, TokenBatchSampler, collate_seq2seq
from .data.tokenizers import BPETokenizer, Tokenizer, load_tokenizer
from .decoding import beam_search, greedy_search
from .errors import AiaynError
from .metrics import corpus_bleu_chrf
from .modeldir import LoadedModel, load_model_dir, write_model_info
from .models.seq2seq import PRESETS, Transformer, TransformerConfig
from .training import distributed
from .training.losses import label_smoothed_cross_entropy
from .training.scheduled_sampling import ScheduledSampling, seq2seq_loss
from .training.schedules import noam
from .training.trainer import TrainConfig, Trainer, seed_everything

log = logging.getLogger(__name__)

SOURCE_TOKENIZER = "source_tokenizer.json"
TARGET_TOKENIZER = "target_tokenizer.json"


def load_pairs(spec: str, split: str = "train", swap: bool = False) -> list[tuple[str, str]]:
    """Sentence pairs from ``builtin:NAME`` (a split of a built-in corpus) or a TSV file."""
    if spec.startswith("builtin:"):
        from .data.builtin import load_builtin_corpus

        pairs = load_builtin_corpus(spec.split(":", 1)[1], split)
    else:
        from .data.corpus import read_parallel_tsv

        pairs = read_parallel_tsv(spec)
    return [(t, s) for s, t in pairs] if swap else list(pairs)


def split_off_validation(
    pairs: list[tuple[str, str]], fraction: float = 0.05, max_size: int = 1000, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Hold out a random part of the training pairs for validation (no source in both parts)."""
    import random

    sources = sorted({s for s, _ in pairs})
    rng = random.Random(seed)
    rng.shuffle(sources)
    n_valid = max(1, min(max_size, int(len(sources) * fraction)))
    held = set(sources[:n_valid])
    train = [p for p in pairs if p[0] not in held]
    valid = [p for p in pairs if p[0] in held]
    if not train:
        raise AiaynError("too few sentence pairs to hold out a validation set; pass --valid")
    return train, valid


@dataclass(frozen=True)
class TrainPlan:
    """Everything chosen before training: model config, schedule, batch size, budget."""

    model: TransformerConfig
    batch_tokens: int
    warmup: int
    peak_lr: float
    max_steps: int
    max_minutes: float | None
    eval_every: int
    label_smoothing: float = 0.1
    vocab_size: int = 8000


#: auto_plan picks a model that can pass over the corpus at least this many times in the budget.
MIN_EPOCHS = 10


def _tokens_per_second(config: TransformerConfig) -> float:
    """Training target tokens/s on a 2-core CPU for d_model=128 with 2+2 layers, scaled by d_model²
    and depth. 15k was measured on the zh-en phrasebook (short sentences, small vocabularies); on
    builtin:bible-fr-en (~30-piece verses, 2k-piece vocabularies) it is 7.8k. When the estimate is
    high, the time budget stops training before ``max_steps``: the schedule is still sound (Noam
    needs no end point) and evaluations, a tenth of the planned steps apart, are fewer."""
    layers = config.num_encoder_layers + config.num_decoder_layers
    return 1.5e4 * (128 / config.d_model) ** 2 * 4 / max(layers, 1)


def _estimate_pieces(text: str) -> float:
    """Roughly how many subword pieces ``text`` becomes: ~1.3 per space-separated word, one per
    CJK character (which aiayn's tokenizers keep as single pieces)."""
    cjk = sum(1 for c in text if ord(c) >= 0x2E80)
    return 1.3 * len(text.split()) + cjk + 1


def auto_plan(
    pairs: Sequence[tuple[str, str]],
    max_minutes: float | None,
    max_steps: int | None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    batch_tokens: int | None = None,
) -> TrainPlan:
    """Pick a model size, batch, vocabulary and schedule that fit the corpus and the time budget.

    The model is the largest of tiny / small / base that both suits the corpus size (small corpora
    overfit big models) and can pass over the corpus at least :data:`MIN_EPOCHS` times in the budget
    (a model too big for the budget sees each sentence only a few times and ends undertrained: on a
    10k-pair corpus with 8 CPU minutes, tiny reaches a far higher BLEU than small). The warm-up is a
    tenth of the steps the budget allows, and the peak learning rate is set directly (the Noam
    factor is derived from it).
    """
    n = len(pairs)
    if batch_tokens is None:
        batch_tokens = 2048 if n < 20_000 else 4096
    minutes = max_minutes if max_minutes is not None else 10.0
    if preset is not None:
        base = cfg.get_preset("transformer", preset)
    else:
        by_size = "tiny" if n < 5_000 else "small" if n < 200_000 else "base"
        corpus_tokens = sum(_estimate_pieces(t) for _, t in pairs)
        names = ("tiny", "small", "base")
        name = names[0]
        for candidate in names[: names.index(by_size) + 1]:
            seen = (
                max_steps * batch_tokens
                if max_steps is not None and max_minutes is None
                else minutes * 60 * _tokens_per_second(PRESETS[candidate])
            )
            if seen >= MIN_EPOCHS * corpus_tokens:
                name = candidate
        base = PRESETS[name]
        if name != "base":
            base = replace(base, dropout=0.1 if n > 50_000 else 0.2)
    base = cfg.apply_overrides(base, overrides)
    # Vocabulary: large enough for the corpus's words, small enough that rare pieces still get trained.
    vocab = int(min(16000, max(1000, 2 * math.sqrt(n) * 10)))
    if max_steps is None:
        max_steps = max(100, int(minutes * 60 * _tokens_per_second(base) / batch_tokens))
    warmup = max(50, min(4000, max_steps // 10))
    peak_lr = 2e-3 if base.d_model <= 256 else 1e-3 if base.d_model <= 512 else 5e-4
    eval_every = max(50, min(1000, max_steps // 10))
    return TrainPlan(
        model=base,
        batch_tokens=batch_tokens,
        warmup=warmup,
        peak_lr=peak_lr,
        max_steps=max_steps,
        max_minutes=max_minutes,
        eval_every=eval_every,
        vocab_size=vocab,
    )


class TranslationTask:
    """The :class:`~aiayn.training.trainer.Task` of translation: token-budget batches, label-smoothed
    cross-entropy, validation loss and BLEU, and the files of a translation model directory."""

    best_metric = "bleu"
    higher_is_better = True

    def __init__(
        self,
        model: Transformer,
        src_tok: Tokenizer,
        tgt_tok: Tokenizer,
        train_pairs: Sequence[tuple[str, str]],
        valid_pairs: Sequence[tuple[str, str]],
        batch_tokens: int,
        label_smoothing: float,
        seed: int,
        device: torch.device,
        max_len: int,
        bleu_sentences: int = 500,
        rank: int = 0,
        world_size: int = 1,
        scheduled_sampling: ScheduledSampling | None = None,
        guided_attention: float = 0.0,
    ) -> None:
        self.model, self.src_tok, self.tgt_tok = model, src_tok, tgt_tok
        # The notes' training variants (see aiayn.training.scheduled_sampling.seq2seq_loss).
        self.scheduled_sampling, self.guided_attention = scheduled_sampling, guided_attention
        self.device, self.label_smoothing = device, label_smoothing
        self.train_ids = encode_pairs(train_pairs, src_tok, tgt_tok, max_len)
        self.valid_pairs = list(valid_pairs)
        self.valid_ids = encode_pairs(valid_pairs, src_tok, tgt_tok, max_len)
        self.bleu_sentences = bleu_sentences
        lengths = [max(len(s), len(t)) + 1 for s, t in self.train_ids]
        self.sampler = TokenBatchSampler(
            lengths, batch_tokens, shuffle=True, seed=seed, rank=rank, world_size=world_size
        )
        self.batch_tokens = batch_tokens

    def batches(self, epoch: int) -> Iterator[Seq2SeqBatch]:
        self.sampler.set_epoch(epoch)
        for indices in self.sampler:
            yield collate_seq2seq([self.train_ids[i] for i in indices]).to(self.device)

    def tokens(self, batch: Seq2SeqBatch) -> int:
        return batch.num_tgt_tokens

    def loss(self, model: nn.Module, batch: Seq2SeqBatch, step: int) -> tuple[torch.Tensor, int]:
        return seq2seq_loss(
            model,
            batch.src,
            batch.tgt_in,
            batch.tgt_out,
            batch.src_key_mask,
            batch.tgt_key_mask,
            step,
            self.label_smoothing,
            self.scheduled_sampling,
            self.guided_attention,
        )

    @torch.inference_mode()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        total, tokens = 0.0, 0
        lengths = [max(len(s), len(t)) + 1 for s, t in self.valid_ids]
        sampler = TokenBatchSampler(lengths, self.batch_tokens, shuffle=False, seed=0)
        for indices in sampler:
            batch = collate_seq2seq([self.valid_ids[i] for i in indices]).to(self.device)
            logits = model(batch.src, batch.tgt_in, batch.src_key_mask)
            loss, n = label_smoothed_cross_entropy(logits, batch.tgt_out, 0.0)
            total, tokens = total + float(loss), tokens + n
        pairs = self.valid_pairs[: self.bleu_sentences]
        hyps = translate_ids(model, [self.src_tok.encode(s) for s, _ in pairs], beam=1)
        scores = corpus_bleu_chrf([self.tgt_tok.decode(h) for h in hyps], [t for _, t in pairs])
        return {"val_loss": total / max(tokens, 1), "bleu": scores["bleu"]}

    def write_model_files(self, directory: Path) -> None:
        write_model_info(
            directory,
            "transformer",
            self.model.config,
            task="translate",
            tokenizers={"source": SOURCE_TOKENIZER, "target": TARGET_TOKENIZER},
        )
        self.src_tok.save(directory, SOURCE_TOKENIZER.removesuffix(".json"))
        self.tgt_tok.save(directory, TARGET_TOKENIZER.removesuffix(".json"))


def _shared_tokenizer(
    dist: distributed.DistContext, texts: list[str], vocab_size: int
) -> Tokenizer:
    """Train a BPE tokenizer on rank 0 and hand the very same one to every rank."""
    text = None
    if dist.is_main:
        text = BPETokenizer.train(texts, vocab_size).hf_tokenizer.to_str()
    text = dist.broadcast_object(text)
    return BPETokenizer(HFTokenizer.from_str(text))


def encode_pairs(
    pairs: Sequence[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int
) -> list[tuple[list[int], list[int]]]:
    """Tokenise once, up front (never per step); cut pairs that exceed the model's positions."""
    src_ids = src_tok.encode_batch([s for s, _ in pairs])
    tgt_ids = tgt_tok.encode_batch([t for _, t in pairs])
    out = [(s, t) for s, t in zip(src_ids, tgt_ids) if len(s) < max_len and len(t) < max_len]
    if len(out) < len(pairs):
        log.warning(
            "skipped %d pairs longer than max_len=%d tokens", len(pairs) - len(out), max_len
        )
    return out


def train_translation(
    train_spec: str,
    out_dir: str | Path,
    valid_spec: str | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    batch_tokens: int | None = None,
    swap: bool = False,
    resume: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    eval_every: int | None = None,
    log_every: int | None = None,
    accumulate: int = 1,
    clip_norm: float = 1.0,
    compile: bool = False,
    fsdp: bool = False,
    scheduled_sampling: str | ScheduledSampling | None = None,
    guided_attention: float = 0.0,
) -> dict[str, Any]:
    """Train a translation model into ``out_dir``; returns a summary (steps, time, best BLEU).

    Args mirror ``aiayn train translate`` (see CLI.md); ``eval_every``/``log_every`` override the
    planned validation and logging intervals (in optimizer steps). ``scheduled_sampling`` is a
    schedule name (``linear``, ``exponential``, ``inverse-sigmoid``) or a
    :class:`~aiayn.training.scheduled_sampling.ScheduledSampling`; ``guided_attention`` is the
    weight of the guided-attention penalty (0 = off).
    """
    if isinstance(scheduled_sampling, str):
        scheduled_sampling = ScheduledSampling(scheduled_sampling)
    out_dir = Path(out_dir)
    dist = distributed.setup(torch.device(device))
    device = distributed.device_for(dist, torch.device(device))
    seed_everything(seed)
    train_pairs = load_pairs(train_spec, "train", swap)
    if valid_spec is not None:
        valid_pairs = load_pairs(valid_spec, "valid", swap)
    elif train_spec.startswith("builtin:"):
        valid_pairs = load_pairs(train_spec, "valid", swap)
    else:
        train_pairs, valid_pairs = split_off_validation(train_pairs, seed=seed)

    resuming = resume and (out_dir / "last").exists()
    if resume and not resuming:
        log.info("no saved state in %s: starting fresh", out_dir)
    if resuming:
        saved = load_model_dir(out_dir / "last", device, expect="transformer")
        src_tok = load_tokenizer(saved.tokenizer_path("source"))
        tgt_tok = load_tokenizer(saved.tokenizer_path("target"))
        model_config = saved.config
        plan = auto_plan(train_pairs, max_minutes, max_steps, preset, overrides, batch_tokens)
        plan = replace(plan, model=model_config)
    else:
        plan = auto_plan(train_pairs, max_minutes, max_steps, preset, overrides, batch_tokens)
        src_tok = _shared_tokenizer(dist, [s for s, _ in train_pairs], plan.vocab_size)
        tgt_tok = _shared_tokenizer(dist, [t for _, t in train_pairs], plan.vocab_size)
        model_config = replace(
            plan.model, src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size
        )
    model = Transformer(model_config).to(device)
    log.info(
        "model: %s parameters, d_model=%d, layers=%d+%d; %d training pairs; %d steps max",
        f"{sum(p.numel() for p in model.parameters()):,}",
        model_config.d_model,
        model_config.num_encoder_layers,
        model_config.num_decoder_layers,
        len(train_pairs),
        plan.max_steps,
    )
    task = TranslationTask(
        model,
        src_tok,
        tgt_tok,
        train_pairs,
        valid_pairs,
        plan.batch_tokens,
        plan.label_smoothing,
        seed,
        device,
        model_config.max_len,
        rank=dist.rank,
        world_size=dist.world_size,
        scheduled_sampling=scheduled_sampling,
        guided_attention=guided_attention,
    )
    # Adam(0.9, 0.98, 1e-9) and the Noam schedule, as in the paper (section 5.3).
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.peak_lr, betas=(0.9, 0.98), eps=1e-9)
    factor = plan.peak_lr * math.sqrt(model_config.d_model) * math.sqrt(plan.warmup)

    def lr_at(step: int) -> float:
        return noam(step, model_config.d_model, plan.warmup, factor)

    trainer = Trainer(
        model,
        optimizer,
        lr_at,
        task,
        out_dir,
        TrainConfig(
            max_steps=plan.max_steps,
            max_minutes=plan.max_minutes,
            eval_every=eval_every or plan.eval_every,
            log_every=log_every or max(10, plan.eval_every // 5),
            seed=seed,
            progress=progress,
            accumulate=accumulate,
            clip_norm=clip_norm,
            compile=compile,
            fsdp=fsdp,
        ),
        dist=dist,
    )
    run = trainer.fit(resume=resuming)
    return {
        "steps": run["steps"],
        "train_seconds": run["train_seconds"],
        "best_bleu": run["best"],
        "parameters": sum(p.numel() for p in model.parameters()),
    }


@torch.inference_mode()
def translate_ids(
    model: Transformer,
    sources: Sequence[Sequence[int]],
    beam: int = 4,
    alpha: float = 0.6,
    max_len: int | None = None,
    batch_size: int = 64,
) -> list[list[int]]:
    """Translate tokenised sources (no EOS), batching sentences of similar length together."""
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate_seq2seq([(sources[i], []) for i in chunk]).to(device)
        if beam == 1:
            outs = greedy_search(model, batch.src, batch.src_key_mask, max_len=max_len)
        else:
            hyps = beam_search(
                model, batch.src, batch.src_key_mask, beam_size=beam, alpha=alpha, max_len=max_len
            )
            outs = [h[0].tokens if h else [] for h in hyps]
        for i, out in zip(chunk, outs):
            results[i] = out
    return results


class Translator:
    """A trained translation model with its tokenizers: text in, text out.

    Args:
        loaded: a model directory read by :func:`aiayn.modeldir.load_model_dir`.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        if loaded.kind != "transformer":
            raise AiaynError(f"{loaded.directory}: not a translation model ({loaded.kind})")
        self.model: Transformer = loaded.model
        self.src_tok = load_tokenizer(loaded.tokenizer_path("source"))
        self.tgt_tok = load_tokenizer(loaded.tokenizer_path("target"))

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> Translator:
        return cls(load_model_dir(directory, device, expect="transformer"))

    def encode(self, text: str, max_tokens: int | None = None, truncate: bool = False) -> list[int]:
        ids = self.src_tok.encode(text)
        limit = max_tokens or self.model.config.max_len - 1
        if len(ids) > limit:
            if not truncate:
                raise AiaynError(
                    f"input has {len(ids)} tokens; the model takes at most {limit} "
                    "(pass --truncate to cut it)"
                )
            log.warning("input of %d tokens truncated to %d", len(ids), limit)
            ids = ids[:limit]
        return ids

    def translate(
        self,
        texts: Sequence[str],
        beam: int = 4,
        alpha: float = 0.6,
        max_len: int | None = None,
        truncate: bool = False,
    ) -> list[str]:
        """Translate each text; empty input gives empty output."""
        ids = [self.encode(t, truncate=truncate) for t in texts]
        outs = translate_ids(self.model, ids, beam=beam, alpha=alpha, max_len=max_len)
        return [self.tgt_tok.decode(o) if t.strip() else "" for o, t in zip(outs, texts)]

    def tokens_of(self, src: str, tgt: str) -> tuple[list[str], list[str]]:
        """Source tokens (+ <eos>) and target tokens (<bos> + ...) as strings, for attention axes."""
        s = [self.src_tok.id_to_token(i) for i in self.src_tok.encode(src)] + ["<eos>"]
        t = ["<bos>"] + [self.tgt_tok.id_to_token(i) for i in self.tgt_tok.encode(tgt)]
        return s, t

    @torch.inference_mode()
    def attention(self, src: str, tgt: str):
        """All attention maps of the teacher-forced pass of ``src`` -> ``tgt`` (batch of one)."""
        device = next(self.model.parameters()).device
        batch = collate_seq2seq([(self.src_tok.encode(src), self.tgt_tok.encode(tgt))]).to(device)
        return self.model.attention_maps(batch.src, batch.tgt_in, batch.src_key_mask)


def evaluate_translation(
    model_dir: str | Path,
    test_spec: str,
    beam: int = 4,
    alpha: float = 0.6,
    swap: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """BLEU and chrF (sacreBLEU) of a model on a test set."""
    translator = Translator.load(model_dir, device)
    pairs = load_pairs(test_spec, "test", swap)
    hyps = translator.translate([s for s, _ in pairs], beam=beam, alpha=alpha, truncate=True)
    scores = corpus_bleu_chrf(hyps, [t for _, t in pairs])
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "n": len(pairs)}
