"""Machine translation end to end: data -> tokenizers -> Transformer -> training -> decoding -> BLEU.

The notes' running example: the encoder reads 我是一个学生, the decoder writes "I am a student" one token
at a time from ``<bos>`` until ``<eos>``, trained with teacher forcing (the decoder sees the true previous
tokens) and label smoothing, with the paper's Adam settings and warm-up schedule.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer as HFTokenizer
from torch import nn

from .. import config as cfg
from ..data.batching import Seq2SeqBatch, TokenBatchSampler, collate_seq2seq
from ..data.builtin import BuiltinKind, is_builtin, load_builtin_corpus, resolve_builtin
from ..data.tokenizers import BOS_ID, PAD_ID, BPETokenizer, Tokenizer, load_tokenizer
from ..decoding import (
    Hypothesis,
    SearchOptions,
    align,
    check_layer,
    search_batched,
    unknown_pieces,
)
from ..errors import AiaynError
from ..logits import DecodingControls
from ..metrics import corpus_bleu_chrf
from ..modeldir import LoadedModel, load_model_dir, write_model_info
from ..models.seq2seq import Transformer, TransformerConfig
from ..quantize import quantize_model
from ..training import distributed
from ..training.budget import TARGET_STEPS, Budget, choose_batch, preserved_rng, seconds_per_step
from ..training.losses import label_smoothed_cross_entropy
from ..training.optim import paper_adam
from ..training.run import RunOptions
from ..training.scheduled_sampling import ScheduledSampling, seq2seq_loss
from ..training.schedules import BudgetSchedule, NoamSchedule

log = logging.getLogger(__name__)

SOURCE_TOKENIZER = "source_tokenizer.json"
TARGET_TOKENIZER = "target_tokenizer.json"


def load_pairs(spec: str, split: str = "train", swap: bool = False) -> list[tuple[str, str]]:
    """Sentence pairs from ``builtin:NAME`` (a split of a built-in corpus) or a TSV file."""
    if is_builtin(spec):
        pairs = load_builtin_corpus(resolve_builtin(spec, BuiltinKind.TRANSLATION), split)
    else:
        from ..data.corpus import read_parallel_tsv

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


# ---- planning ------------------------------------------------------------------------------------

#: The models the planner chooses from, smallest first (presets of aiayn.models.seq2seq).
LADDER = ("tiny", "small", "base")
#: Batch sizes (``len(batch) * longest side``, padding included) the planner chooses from. Not below
#: 1,024 tokens even when that leaves fewer than TARGET_STEPS steps: smaller batches are too noisy
#: (measured, Bible verses: fr-en 8 min BLEU 10.2 at 512 tokens (4,867 steps) against 14.9 at 1,024
#: (2,782); es-it 5 min 2.5 at 512 (2,431 steps) against 6.7 at 1,024 (1,923)).
BATCH_CHOICES = (1024, 2048, 4096, 8192, 16384)
#: ... and should pass over its corpus at least this many times; a larger model is chosen only
#: when it can do both in the budget.
MIN_EPOCHS = 10
#: Validations (BLEU on the validation set) per run: each costs decoding time out of the budget.
EVALS_PER_RUN = 5
#: Validation BLEU decodes at most this many sentences, and at most as many as hold this many
#: reference target tokens: decoding is most of a validation's cost, and on long sentences 300 of
#: them (greedy, by a model that does not stop yet) took a quarter of a 1.5-minute budget.
BLEU_SENTENCES = 300
BLEU_TARGET_TOKENS = 4000
#: Snapshots of the weights averaged at the end of a run (the paper averaged the last 5).
AVERAGE_LAST = 5


@dataclass(frozen=True)
class TrainPlan:
    """Everything chosen before training, and why (written to the log and to ``config.json``).

    Attributes:
        model: the model config (vocabulary sizes filled in).
        model_name: its ladder/preset name.
        batch_tokens: batch size in tokens (``len(batch) * longest side``, padding included).
        peak_lr: the learning rate after warm-up.
        warmup_steps: the longest warm-up in steps.
        warmup_fraction: the longest warm-up as a fraction of the budget.
        max_steps: the step budget (None: time only).
        budget_seconds: the time budget, planning included (None: steps only).
        eval_every: steps between validations (None: by time).
        eval_every_seconds: seconds between validations (None: by steps).
        label_smoothing: epsilon of the loss.
        joint_vocab: one vocabulary (and embedding matrix) for source and target.
        measured: per candidate model: measured seconds per step at each calibrated batch size, and
            the steps and passes over the corpus the chosen batch gives in the budget.
    """

    model: TransformerConfig
    model_name: str
    batch_tokens: int
    peak_lr: float
    warmup_steps: int | None
    warmup_fraction: float
    max_steps: int | None
    budget_seconds: float | None
    eval_every: int | None
    eval_every_seconds: float | None
    label_smoothing: float = 0.1
    joint_vocab: bool = False
    measured: dict[str, Any] = field(default_factory=dict)

    def schedule(self) -> BudgetSchedule | NoamSchedule:
        """Warm-up and cosine decay over the budget; with steps alone, the paper's schedule (it has
        no end point, so extending ``--max-steps`` on resume changes nothing already trained)."""
        if self.budget_seconds is None:
            return NoamSchedule(self.peak_lr, self.warmup_steps or 4000)
        return BudgetSchedule(
            self.peak_lr, warmup_steps=self.warmup_steps, warmup_fraction=self.warmup_fraction
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("model")  # stored as the model directory's own config
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], model: TransformerConfig) -> TrainPlan:
        known = {f.name for f in fields(cls)} - {"model"}
        return cls(model=model, **{k: v for k, v in data.items() if k in known})


def peak_lr_for(d_model: int) -> float:
    """Adam's peak rate by width: wider models need smaller steps. Near the paper's
    ``d^-0.5 · 4000^-0.5`` (7e-4 at 512) for the wide models; twice it for the narrow CPU ones,
    whose short runs warm up in a few hundred steps (measured: d 128 learns well at 2e-3, while
    a post-norm d 256 model at 2e-3 stays at the unigram loss)."""
    return 2e-3 if d_model <= 128 else 1e-3 if d_model <= 256 else 7e-4 if d_model <= 512 else 5e-4


def _units(ids: Sequence[tuple[list[int], list[int]]]) -> list[int]:
    """What each pair costs in a batch: its longer side + the added EOS/BOS (TokenBatchSampler's unit)."""
    return [max(len(s), len(t)) + 1 for s, t in ids]


def measure_step_seconds(
    config: TransformerConfig,
    train_ids: Sequence[tuple[list[int], list[int]]],
    batch_tokens: int,
    device: torch.device,
    label_smoothing: float = 0.1,
    seed: int = 0,
) -> float:
    """Seconds one optimizer step of ``config`` takes on real batches of ``batch_tokens``: forward,
    label-smoothed loss, backward, clipping and Adam, on a fresh model (random generators untouched)."""
    with preserved_rng():
        model = Transformer(config).to(device).train()
        optimizer = paper_adam(model, 1e-4)
        sampler = TokenBatchSampler(_units(train_ids), batch_tokens, shuffle=True, seed=seed)
        batches = iter(sampler)
        # Batches as the epoch mixes them: a step's cost is what the epoch's batches cost.
        chosen = [next(batches, None) for _ in range(4)]
        chosen = [c for c in chosen if c is not None] or [list(range(len(train_ids)))]

        calls = [0]

        def step() -> None:
            batch = collate_seq2seq([train_ids[i] for i in chosen[calls[0] % len(chosen)]])
            calls[0] += 1
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss, n = seq2seq_loss(
                model,
                batch.src,
                batch.tgt_in,
                batch.tgt_out,
                batch.src_key_mask,
                batch.tgt_key_mask,
                0,
                label_smoothing,
            )
            (loss / max(n, 1)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        return seconds_per_step(step, steps=len(chosen), device=device)


def plan_translation(
    train_ids: Sequence[tuple[list[int], list[int]]],
    budget: Budget,
    src_vocab: int,
    tgt_vocab: int,
    joint_vocab: bool,
    device: torch.device,
    preset: str | None = None,
    overrides: list[str] | None = None,
    batch_tokens: int | None = None,
    seconds_left: float | None = None,
    seed: int = 0,
    fixed_model: TransformerConfig | None = None,
) -> TrainPlan:
    """Choose the model, batch and schedule for this corpus and budget, from measured step costs.

    For each model of :data:`LADDER` (or the ``preset``), a few real optimizer steps are timed at two
    batch sizes, which gives the step's cost as ``fixed + per_token * batch``. The batch is then the
    largest of :data:`BATCH_CHOICES` that still leaves :data:`TARGET_STEPS` steps in the budget (a
    small corpus wants many small steps, not a few huge ones), and the model is the largest that gets
    both those steps and :data:`MIN_EPOCHS` passes over the corpus (a model too big for the budget
    ends undertrained). With a step budget and no time budget nothing needs measuring: the preset
    (default ``tiny``) and 4,096-token batches are used as they are. With ``fixed_model``
    (fine-tuning pretrained weights) that model is the only candidate: only the batch and schedule are planned.
    """
    n_units = sum(_units(train_ids))
    measured: dict[str, Any] = {}

    def configured(name: str) -> TransformerConfig:
        if fixed_model is not None:
            return fixed_model
        base = cfg.get_preset("transformer", name)
        base = replace(
            base, src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, share_embeddings=joint_vocab
        )
        return cfg.apply_overrides(base, overrides)

    names = [preset] if preset is not None else list(LADDER)
    if fixed_model is not None:
        names = ["pretrained"]
    if not budget.by_time:
        name = names[0]
        chosen, model = batch_tokens or 4096, configured(name)
    else:
        seconds = seconds_left if seconds_left is not None else budget.seconds
        train_seconds = seconds * (1 - 0.1)  # validations, the final evaluation and averaging
        best = None
        for name in names:
            model = configured(name)

            def measure(b: int, model: TransformerConfig = model) -> float:
                return measure_step_seconds(model, train_ids, b, device, seed=seed)

            options = [batch_tokens] if batch_tokens else list(BATCH_CHOICES)
            probes = (batch_tokens,) if batch_tokens else (1024, 4096)
            choice = choose_batch(measure, options, train_seconds, TARGET_STEPS, probes)
            epochs = choice.steps * choice.size / max(n_units, 1)
            measured[name] = {**choice.to_json(), "epochs": round(epochs, 1)}
            fits = choice.steps >= TARGET_STEPS and epochs >= MIN_EPOCHS
            if best is None or fits:
                best = (name, model, choice.size)
            if not fits:
                break  # larger models are slower still
        # Dropout stays the presets' 0.1 (the paper's). More dropout for many passes over a small
        # corpus (Sennrich & Zhang 2019) is for runs trained to convergence; a budget of CPU minutes
        # leaves the model underfitted, and 0.2 then costs dearly (measured, Bible fr-en, 8 minutes,
        # same plan otherwise: BLEU 14.9 at 0.1, 7.8 at 0.2).
        name, model, chosen = best
    warmup_steps = 4000  # the paper's; a short budget warms up over a fraction of it instead
    if budget.max_steps is not None:
        warmup_steps = max(50, min(warmup_steps, budget.max_steps // 10))
    evals = EVALS_PER_RUN
    return TrainPlan(
        model=model,
        model_name=name,
        batch_tokens=chosen,
        peak_lr=peak_lr_for(model.d_model),
        warmup_steps=warmup_steps,
        warmup_fraction=0.1,
        max_steps=budget.max_steps,
        budget_seconds=budget.seconds,
        eval_every=None if budget.by_time else max(1, (budget.max_steps or evals) // evals),
        eval_every_seconds=budget.seconds / evals if budget.by_time else None,
        joint_vocab=joint_vocab,
        measured=measured,
    )


def describe_plan(
    plan: TrainPlan, n_pairs: int, parameters: int, src_vocab: int, tgt_vocab: int
) -> str:
    """The planner's decisions as one readable block for the log."""
    m = plan.model
    vocab = (
        f"one shared vocabulary of {src_vocab:,} pieces (shared embeddings, tied output)"
        if plan.joint_vocab
        else f"source {src_vocab:,} pieces, target {tgt_vocab:,} pieces (separate scripts)"
    )
    lines = [
        "plan:",
        f"  corpus      {n_pairs:,} training pairs; {vocab}",
        f"  model       {plan.model_name}: {m.num_encoder_layers}+{m.num_decoder_layers} layers "
        f"× d_model {m.d_model}, {parameters:,} parameters, dropout {m.dropout:g}",
        f"  batch       {plan.batch_tokens:,} tokens",
        f"  budget      {Budget(plan.max_steps, plan.budget_seconds).describe()}; Adam peak lr "
        + (
            f"{plan.peak_lr:g}, warm-up {plan.warmup_fraction:.0%} of the budget (at most "
            f"{plan.warmup_steps} steps), cosine decay to the end"
            if plan.budget_seconds is not None
            else f"{plan.peak_lr:g} at step {plan.warmup_steps}, then 1/sqrt(step) (the paper's)"
        ),
    ]
    for name, row in plan.measured.items():
        costs = ", ".join(
            f"{float(v) * 1e3:.0f} ms at {k}" for k, v in row["seconds_per_step"].items()
        )
        mark = "→" if name == plan.model_name else " "
        lines.append(
            f"  {mark} measured {name}: {costs} tokens/step; batch {row['batch']:,} gives "
            f"{row['steps']:,} steps, {row['epochs']:g} passes over the corpus"
        )
    return "\n".join(lines)


class TranslationTask:
    """The :class:`~aiayn.training.trainer.Task` of translation: token-budget batches, label-smoothed
    cross-entropy, validation loss and BLEU, and the files of a translation model directory."""

    # chrF rather than BLEU picks the best weights: BLEU is 0 for every output of fewer than four
    # words (a Roman numeral, a transliterated name), chrF scores characters and never degenerates.
    best_metric = "chrf"
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
        bleu_sentences: int = BLEU_SENTENCES,
        rank: int = 0,
        world_size: int = 1,
        scheduled_sampling: ScheduledSampling | None = None,
        guided_attention: float = 0.0,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.src_tok, self.tgt_tok = model, src_tok, tgt_tok
        self.info = info or {}
        # The notes' training variants (see aiayn.training.scheduled_sampling.seq2seq_loss).
        self.scheduled_sampling, self.guided_attention = scheduled_sampling, guided_attention
        self.device, self.label_smoothing = device, label_smoothing
        self.train_ids = encode_pairs(train_pairs, src_tok, tgt_tok, max_len)
        self.length_ratio = length_ratio(self.train_ids)
        self.shortest_target = shortest_target(self.train_ids)
        self.valid_pairs = list(valid_pairs)
        self.valid_ids = encode_pairs(valid_pairs, src_tok, tgt_tok, max_len)
        self.bleu_pairs = _bleu_subset(self.valid_pairs, tgt_tok, bleu_sentences)
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
        pairs = self.bleu_pairs
        sources = [self.src_tok.encode(s) for s, _ in pairs]
        hyps = translate_ids(
            model,
            sources,
            beam=1,
            length_ratio=self.length_ratio,
            shortest_target=self.shortest_target,
        )
        scores = corpus_bleu_chrf([self.tgt_tok.decode(h) for h in hyps], [t for _, t in pairs])
        return {"val_loss": total / max(tokens, 1), "bleu": scores["bleu"], "chrf": scores["chrf"]}

    def write_model_files(self, directory: Path) -> None:
        # One shared vocabulary is one file, listed for both roles.
        joint = self.src_tok is self.tgt_tok
        target = SOURCE_TOKENIZER if joint else TARGET_TOKENIZER
        training = {
            **self.info.get("training", {}),
            "length_ratio": self.length_ratio,
            "shortest_target": self.shortest_target,
        }
        write_model_info(
            directory,
            "transformer",
            self.model.config,
            task="translate",
            tokenizers={"source": SOURCE_TOKENIZER, "target": target},
            **{**self.info, "training": training},
        )
        self.src_tok.save(directory, SOURCE_TOKENIZER.removesuffix(".json"))
        if not joint:
            self.tgt_tok.save(directory, TARGET_TOKENIZER.removesuffix(".json"))


def _bleu_subset(
    pairs: Sequence[tuple[str, str]], tgt_tok: Tokenizer, limit: int
) -> list[tuple[str, str]]:
    """The first validation pairs, at most ``limit`` of them and :data:`BLEU_TARGET_TOKENS`
    reference tokens (always at least one pair)."""
    chosen, tokens = [], 0
    for pair in pairs[:limit]:
        tokens += len(tgt_tok.encode(pair[1])) + 1
        if chosen and tokens > BLEU_TARGET_TOKENS:
            break
        chosen.append(pair)
    return chosen


def learn_tokenizers(
    dist: distributed.DistContext,
    pairs: Sequence[tuple[str, str]],
    joint: bool,
    vocab_size: int | None = None,
) -> tuple[Tokenizer, Tokenizer]:
    """Source and target tokenizers from the training pairs (the same one when ``joint``), learned
    on rank 0 and handed, identical, to every rank. Sizes follow :mod:`aiayn.data.vocab`'s rule."""
    from ..data.vocab import learn_vocabulary, maps_letter_by_letter, spells_out_characters

    texts = None
    if dist.is_main:
        sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
        letters = vocab_size is None and maps_letter_by_letter(pairs)
        spelled = vocab_size is None and not joint and spells_out_characters(pairs)
        if joint:
            joined = learn_vocabulary(
                sources + targets, vocab_size, sides=(sources, targets), letter_by_letter=letters
            )
            texts = [joined.hf_tokenizer.to_str()] * 2
        else:
            texts = [
                learn_vocabulary(
                    side, vocab_size, letter_by_letter=letters, spelled_out=spelled and i == 0
                ).hf_tokenizer.to_str()
                for i, side in enumerate((sources, targets))
            ]
    texts = dist.broadcast_object(texts)
    src, tgt = (BPETokenizer(HFTokenizer.from_str(t)) for t in texts)
    return src, (src if joint else tgt)


def load_translation_tokenizers(loaded: LoadedModel) -> tuple[Tokenizer, Tokenizer]:
    """A translation model's source and target tokenizers (one object when they share a file)."""
    src_tok = loaded.tokenizer("source", load_tokenizer)
    if loaded.tokenizer_path("source") == loaded.tokenizer_path("target"):
        return src_tok, src_tok  # one shared vocabulary: one object (and one read), as trained
    return src_tok, loaded.tokenizer("target", load_tokenizer)


def length_ratio(ids: Sequence[tuple[list[int], list[int]]]) -> float:
    """The longest target-to-source length ratio of the training pairs, with a quarter to spare:
    the decoding budget a model of these pairs needs (source and target each + EOS)."""
    if not ids:
        return 1.0
    return round(1.25 * max((len(t) + 1) / (len(s) + 1) for s, t in ids), 3)


def shortest_target(ids: Sequence[tuple[list[int], list[int]]]) -> int:
    """The fewest target tokens of any training pair (0: some target is empty)."""
    return min((len(t) for _, t in ids), default=0)


#: Ids no target ever holds, so no output may hold them (fairseq bans ``<pad>`` the same way): an
#: undertrained model barred from ending at once picked ``<bos>``, an output that reads as empty.
NEVER_OUTPUT = ((PAD_ID,), (BOS_ID,))


def output_rules(options: SearchOptions, shortest_target: int | None) -> SearchOptions:
    """``options`` with the rules every translation follows: ``<pad>`` and ``<bos>`` never
    written, and, when the model was trained on no empty target, ``<eos>`` banned as the first
    output token (fairseq's ``min_len`` of 1) unless a minimum length is asked for already.

    Why: an undertrained model (few minutes, long targets: Morse code, spelled-out numbers) gives
    ``<eos>`` a modest probability at every step; one step of ``<eos>`` then scores higher than
    any full hypothesis, whose log-probabilities add up, and beam search chose the empty output
    (seen on a Morse-code corpus, where beam search wrote empty outputs).
    """
    controls = options.controls or DecodingControls()
    ban = controls.ban + tuple(b for b in NEVER_OUTPUT if b not in controls.ban)
    min_len = 1 if shortest_target and controls.min_len == 0 else controls.min_len
    return replace(options, controls=replace(controls, ban=ban, min_len=min_len))


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
    batch_tokens: int | None = None,
    swap: bool = False,
    scheduled_sampling: str | ScheduledSampling | None = None,
    guided_attention: float = 0.0,
    vocab_size: int | None = None,
    joint_vocab: bool | None = None,
    average_last: int = AVERAGE_LAST,
    init_from: str | Path | None = None,
    **run: Any,
) -> dict[str, Any]:
    """Train a translation model into ``out_dir``; returns a summary (steps, time, best BLEU).

    Args mirror ``aiayn train translate`` (see CLI.md); ``run``: the shared run settings
    (:class:`~aiayn.training.run.RunOptions`), whose ``eval_every``/``log_every`` override the
    planned validation and logging intervals (in optimizer steps). ``scheduled_sampling`` is a
    schedule name (``linear``, ``exponential``, ``inverse-sigmoid``) or a
    :class:`~aiayn.training.scheduled_sampling.ScheduledSampling`; ``guided_attention`` is the
    weight of the guided-attention penalty (0 = off). ``vocab_size`` fixes the vocabulary size
    (default: the frequency rule of :mod:`aiayn.data.vocab`); ``joint_vocab`` forces one shared
    vocabulary or two (default: shared when the two sides write the same characters).
    ``init_from``: fine-tune the Transformer of an aiayn or Hugging Face (Marian) folder, with its
    tokenizers (``preset``, ``vocab_size`` and ``joint_vocab`` are then unused; the planner only
    chooses the batch) and a tenth of the default peak learning rate.
    """
    from ..data.vocab import shares_alphabet, spells_out_characters

    if isinstance(scheduled_sampling, str):
        scheduled_sampling = ScheduledSampling(scheduled_sampling)
    opts = RunOptions.of(run)
    start = opts.prepare(out_dir)
    started, out_dir, device = start.started, start.out_dir, start.device
    dist, found = start.dist, start.found
    overrides, seed, max_steps, max_minutes = (
        opts.overrides,
        opts.seed,
        opts.max_steps,
        opts.max_minutes,
    )
    fsdp, eval_every = opts.fsdp, opts.eval_every
    train_pairs = load_pairs(train_spec, "train", swap)
    if valid_spec is not None:
        valid_pairs = load_pairs(valid_spec, "valid", swap)
    elif is_builtin(train_spec):
        valid_pairs = load_pairs(train_spec, "valid", swap)
    else:
        train_pairs, valid_pairs = split_off_validation(train_pairs, seed=seed)

    budget = Budget.from_args(max_steps, max_minutes)
    initial = None
    if found is not None:
        saved = load_model_dir(found, device, expect="transformer")
        src_tok, tgt_tok = load_translation_tokenizers(saved)
        saved_plan = saved.info.get("training", {}).get("plan")
        if saved_plan is None:
            raise AiaynError(f"{found}: no training plan stored; cannot resume")
        plan = TrainPlan.from_json(saved_plan, saved.config)
        if max_steps is not None or max_minutes is not None:
            plan = replace(plan, max_steps=budget.max_steps)  # the new budget's step limit
    else:
        if init_from is not None:  # fine-tuning: the pretrained model's own tokenizers
            from ..interop.pretrained import load_initial

            initial = load_initial("transformer", init_from, out_dir)
            src_tok, tgt_tok = initial.tokenizers["source"], initial.tokenizers["target"]
            joint = src_tok is tgt_tok
        elif fsdp:  # see below; DDP and one process share vocabularies as usual
            joint = False
        else:
            # A source spelled out word by word wants characters, its target pieces: two vocabularies.
            joint = (
                shares_alphabet(*zip(*train_pairs)) and not spells_out_characters(train_pairs)
                if joint_vocab is None
                else joint_vocab
            )
        if fsdp and (joint_vocab or joint):
            raise AiaynError(
                "--fsdp with --joint-vocab is not supported: resuming a sharded run whose source, "
                "target and output embeddings are one matrix is not verified; use separate "
                "vocabularies (the default under --fsdp)"
            )
        if initial is None:
            src_tok, tgt_tok = learn_tokenizers(dist, train_pairs, joint, vocab_size)
        train_ids = encode_pairs(train_pairs, src_tok, tgt_tok, 1024)
        plan = plan_translation(
            train_ids,
            budget,
            src_tok.vocab_size,
            tgt_tok.vocab_size,
            joint,
            device,
            preset,
            overrides,
            batch_tokens,
            seconds_left=None
            if budget.seconds is None
            else budget.seconds - (time.monotonic() - started),
            seed=seed,
            fixed_model=None if initial is None else cfg.apply_overrides(initial.config, overrides),
        )
        if initial is not None:
            from ..interop.pretrained import FINE_TUNE_LR_SCALE

            plan = replace(plan, peak_lr=plan.peak_lr * FINE_TUNE_LR_SCALE)
        plan = dist.broadcast_object(plan)  # every rank trains the plan rank 0 measured
    model_config = plan.model
    model = Transformer(model_config).to(device)
    if initial is not None:
        initial.load_into(model)
    parameters = sum(p.numel() for p in model.parameters())
    if dist.is_main:
        log.info(
            "%s",
            describe_plan(
                plan, len(train_pairs), parameters, src_tok.vocab_size, tgt_tok.vocab_size
            ),
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
        info={
            "training": {
                "train": train_spec,
                "seed": seed,
                "plan": plan.to_json(),
                **({} if init_from is None else {"init_from": str(init_from)}),
            }
        },
    )
    run = opts.fit(
        start,
        model,
        paper_adam(model, plan.peak_lr),
        plan.schedule(),
        task,
        max_steps=plan.max_steps,
        budget_seconds=plan.budget_seconds,
        eval_every=eval_every or plan.eval_every,
        eval_every_seconds=None if eval_every else plan.eval_every_seconds,
        average_last=average_last,
    )
    return {
        "steps": run["steps"],
        "train_seconds": run["train_seconds"],
        "best_chrf": run["best"],
        "parameters": parameters,
        "model": plan.model_name,
        "batch_tokens": plan.batch_tokens,
    }


@torch.inference_mode()
def translate_ids(
    model: Transformer,
    sources: Sequence[Sequence[int]],
    beam: int = 4,
    alpha: float = 0.6,
    max_len: int | None = None,
    batch_size: int = 64,
    length_ratio: float | None = None,
    shortest_target: int | None = None,
) -> list[list[int]]:
    """Translate tokenised sources (no EOS), batching sentences of similar length together.
    ``length_ratio``: the most target tokens per source token to allow (see
    :func:`aiayn.decoding.greedy_search`); ``shortest_target``: see :func:`output_rules`."""
    options = output_rules(SearchOptions(beam=beam, alpha=alpha, max_len=max_len), shortest_target)
    found = search_batched(model, sources, options, batch_size, length_ratio)
    return [hyps[0].tokens if hyps else [] for hyps in found]


@dataclass
class TranslatedHypothesis:
    """One output of :meth:`Translator.decode`: the search's hypothesis, its text and pieces, and
    (when asked for) the source position each token attends to most."""

    hypothesis: Hypothesis
    text: str
    pieces: list[str]
    alignment: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        h = self.hypothesis
        out: dict[str, Any] = {
            "text": self.text,
            "tokens": self.pieces,
            "logprob": h.logprob,
            "token_logprobs": h.token_logprobs,
            "eos_logprob": h.eos_logprob,
            "score": h.score,
        }
        if self.alignment is not None:
            out["alignment"] = self.alignment
        return out


@dataclass
class Translation:
    """Everything :meth:`Translator.decode` found for one input.

    Attributes:
        source: the input text.
        hypotheses: best first (none for a blank input).
        unknown: the parts of the input the source vocabulary reads as ``<unk>``.
        source_tokens: the source pieces alignments point into (with alignments only).
    """

    source: str
    hypotheses: list[TranslatedHypothesis]
    unknown: list[str]
    source_tokens: list[str] | None = None

    @property
    def text(self) -> str:
        """The best translation ("" for a blank input)."""
        return self.hypotheses[0].text if self.hypotheses else ""

    def to_json(self) -> dict[str, Any]:
        best = self.hypotheses[0].hypothesis if self.hypotheses else None
        out: dict[str, Any] = {
            "source": self.source,
            "hypotheses": [h.to_json() for h in self.hypotheses],
            "mean_logprob": None if best is None else best.mean_logprob,
            "unknown": self.unknown,
        }
        if self.source_tokens is not None:
            out["source_tokens"] = self.source_tokens
        return out


class Translator:
    """A trained translation model with its tokenizers: text in, text out.

    Args:
        loaded: a model directory read by :func:`aiayn.modeldir.load_model_dir`.
        ensemble: more model directories decoded together with it (the mean of their next-token
            log-probabilities); they must share its source and target vocabularies.
    """

    def __init__(self, loaded: LoadedModel, ensemble: Sequence[LoadedModel] = ()) -> None:
        if loaded.kind != "transformer":
            raise AiaynError(f"{loaded.directory}: not a translation model ({loaded.kind})")
        self.loaded = loaded
        self.model: Transformer = loaded.model
        self.src_tok, self.tgt_tok = load_translation_tokenizers(loaded)
        # Targets many times longer than their sources need a longer decoding budget than +50.
        training = loaded.info.get("training", {})
        self.length_ratio = training.get("length_ratio")
        # None for models written before it was recorded: no first-token rule (see output_rules).
        self.shortest_target = training.get("shortest_target")
        self.models: list[Transformer] = [self.model] + [self._member(m) for m in ensemble]

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: torch.device | str = "cpu",
        ensemble: Sequence[str | Path] = (),
        quantize: str | None = None,
    ) -> Translator:
        """Read ``directory`` (and the ``ensemble`` members); ``quantize="int8"``: each model's
        Linear layers in int8 (:func:`aiayn.quantize.quantize_model`, CPU only)."""

        def read(d: str | Path) -> LoadedModel:
            loaded = load_model_dir(d, device, expect="transformer")
            loaded.model = quantize_model(loaded.model, quantize)
            return loaded

        return cls(read(directory), [read(d) for d in ensemble])

    def _member(self, other: LoadedModel) -> Transformer:
        """An ensemble member's model, once its vocabularies are checked to be this model's."""
        for role in ("source", "target"):
            if _tokenizer_content(other, role) != _tokenizer_content(self.loaded, role):
                raise AiaynError(
                    f"{other.directory}: its {role} vocabulary differs from that of "
                    f"{self.loaded.directory}; the models of an ensemble must share their "
                    "vocabularies"
                )
        return other.model

    @property
    def max_source_tokens(self) -> int:
        """The longest source (without ``<eos>``) every model of the ensemble can read."""
        return min(m.config.max_len for m in self.models) - 1

    def encode(self, text: str, truncate: bool = False) -> list[int]:
        ids = self.src_tok.encode(text)
        limit = self.max_source_tokens
        if len(ids) > limit:
            if not truncate:
                raise AiaynError(
                    f"input has {len(ids)} tokens; the model takes at most {limit} "
                    "(pass --truncate to cut it)"
                )
            log.warning("input of %d tokens truncated to %d", len(ids), limit)
            ids = ids[:limit]
        return ids

    def encode_prefix(self, text: str) -> tuple[int, ...]:
        """Target token ids of a forced prefix.

        Raises:
            AiaynError: the target vocabulary cannot write part of it.
        """
        ids = self.tgt_tok.encode(text)
        unknown = unknown_pieces(self.tgt_tok, text, ids)
        if unknown:
            raise AiaynError(
                f"prefix {text!r}: the target vocabulary cannot write {', '.join(map(repr, unknown))}"
            )
        return tuple(ids)

    def translate(
        self,
        texts: Sequence[str],
        beam: int = 4,
        alpha: float = 0.6,
        max_len: int | None = None,
        truncate: bool = False,
        controls: DecodingControls | None = None,
    ) -> list[str]:
        """Translate each text; empty input gives empty output. ``controls``: repetition penalty,
        n-gram and length limits, bans (:mod:`aiayn.logits`)."""
        options = SearchOptions(beam=beam, alpha=alpha, max_len=max_len, controls=controls)
        return [t.text for t in self.decode(texts, options, truncate=truncate)]

    def decode(
        self,
        texts: Sequence[str],
        options: SearchOptions | None = None,
        batch_size: int = 64,
        align_layer: int | None = None,
        seed: int = 0,
        truncate: bool = False,
        warn_unknown: bool = False,
    ) -> list[Translation]:
        """Translate each text as ``options`` say, with everything the search found.

        Args:
            texts: the inputs (a blank one gets no hypotheses and translates to "").
            options: beam, n-best, sampling, controls, forced prefix (default: beam 4).
            batch_size: sentences per decoding batch.
            align_layer: align each output token to a source position by this decoder layer's
                cross-attention (negative: from the last); None: no alignment.
            seed: the seed of sampling (the same texts and batch size give the same samples).
            truncate: cut over-long inputs instead of refusing them.
            warn_unknown: log one warning per input that holds characters the vocabulary lacks.
        """
        options = output_rules(options or SearchOptions(), self.shortest_target)
        layers = self.model.config.num_decoder_layers
        layer = None if align_layer is None else check_layer(align_layer, layers)
        sources = [self.encode(t, truncate=truncate) for t in texts]
        unknown = [unknown_pieces(self.src_tok, t, ids) for t, ids in zip(texts, sources)]
        if warn_unknown:
            _warn_unknown(unknown)
        todo = [i for i, t in enumerate(texts) if t.strip()]  # blank lines stay blank
        generator = None
        if options.sampling is not None:
            device = next(self.model.parameters()).device
            generator = torch.Generator(device).manual_seed(seed)
        todo_ids = [sources[i] for i in todo]
        found = search_batched(
            self.models, todo_ids, options, batch_size, self.length_ratio, generator
        )
        hypotheses: dict[int, list[Hypothesis]] = dict(zip(todo, found))
        return [
            self._translation(text, ids, hypotheses.get(i, []), unknown[i], layer)
            for i, (text, ids) in enumerate(zip(texts, sources))
        ]

    def _translation(
        self,
        text: str,
        source: list[int],
        hyps: list[Hypothesis],
        unknown: list[str],
        layer: int | None,
    ) -> Translation:
        tok = self.tgt_tok
        results = [
            TranslatedHypothesis(h, tok.decode(h.tokens), [tok.id_to_token(i) for i in h.tokens])
            for h in hyps
        ]
        if layer is None:
            return Translation(text, results, unknown)
        if hyps and source:
            alignments = align(self.models, source, [h.tokens for h in hyps], layer)
            for result, alignment in zip(results, alignments):
                result.alignment = alignment
        source_tokens = [self.src_tok.id_to_token(i) for i in source]
        return Translation(text, results, unknown, source_tokens)

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


def _warn_unknown(unknown: list[list[str]]) -> None:
    """One warning per input that holds characters the source vocabulary lacks."""
    for number, pieces in enumerate(unknown, start=1):
        if pieces:
            log.warning(
                "input %d: %s not in the model's vocabulary (read as <unk>)",
                number,
                ", ".join(map(repr, pieces)),
            )


def _tokenizer_content(loaded: LoadedModel, role: str) -> Any:
    """A model directory's tokenizer file as parsed JSON (equal content, equal vocabulary)."""
    return json.loads(loaded.tokenizer_path(role).read_text(encoding="utf-8"))


def evaluate_translation(
    model_dir: str | Path,
    test_spec: str,
    beam: int = 4,
    alpha: float = 0.6,
    swap: bool = False,
    device: torch.device | str = "cpu",
    quantize: str | None = None,
) -> dict[str, float]:
    """BLEU and chrF (sacreBLEU) of a model on a test set (``quantize``: as :meth:`Translator.load`)."""
    translator = Translator.load(model_dir, device, quantize=quantize)
    pairs = load_pairs(test_spec, "test", swap)
    hyps = translator.translate([s for s, _ in pairs], beam=beam, alpha=alpha, truncate=True)
    scores = corpus_bleu_chrf(hyps, [t for _, t in pairs])
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "n": len(pairs)}
