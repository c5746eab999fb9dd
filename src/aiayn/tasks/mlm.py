"""BERT as a text model: masked-LM training (``aiayn train mlm``) and sentence embeddings (``aiayn embed``).

Masked-LM pre-training (Devlin et al., 2019, section 3.1): hide 15% of the tokens and train the encoder to
recover them from both sides of context. Of the chosen positions, 80% become ``[MASK]``, 10% a random
token and 10% stay as they are, so the model cannot rely on ``[MASK]`` being present (it never is when
the model is used) and must keep a good representation of every token. Only chosen positions are scored.

Text is packed the way RoBERTa's "full sentences" are: every line is tokenized, the tokens are
concatenated, cut into blocks of ``seq_len - 2`` and framed as ``[CLS] block [SEP]``. There is no
next-sentence objective (RoBERTa showed it does not help), so every token is in segment 0.

Sentence embeddings are sentence-transformers' recipe: mean of the last layer's vectors over the real
tokens, then L2-normalised, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.builtin import BuiltinKind, is_builtin, resolve_builtin
from ..errors import AiaynError
from ..quantize import quantize_model
from ..training.forward import logits_at

if TYPE_CHECKING:
    from ..data.wordpiece import WordPieceTokenizer
    from ..training import distributed

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
#: Blocks per batch; with a time budget the planner takes fewer when this many leave too few steps.
DEFAULT_BATCH = 32
BATCH_CHOICES = (4, 8, 16, 32)


# ---- sentence embeddings ---------------------------------------------------------------------------
class SentenceEncoder:
    """Text -> sentence vectors with a BERT encoder: mean pooling, then L2 normalisation.

    Args:
        model: the encoder (a ``BertModel``; a ``BertForMaskedLM`` is unwrapped to ``.bert``).
        tokenizer: its WordPiece tokenizer (with the model's ``max_length``).
        pooling: ``mean`` (sentence-transformers' default) or ``cls`` (the ``[CLS]`` vector).
        normalize: L2-normalise each vector.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: WordPieceTokenizer,
        pooling: str = "mean",
        normalize: bool = True,
    ) -> None:
        from ..models.bert import BertForMaskedLM

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be mean or cls, got {pooling!r}")
        self.model = model.bert if isinstance(model, BertForMaskedLM) else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize

    @classmethod
    def load(
        cls, spec: str, device: torch.device | str = "cpu", quantize: str | None = None
    ) -> SentenceEncoder:
        """``builtin:minilm``, an aiayn BERT model directory, or a Hugging Face BERT folder;
        ``quantize="int8"``: the encoder's Linear layers in int8 (:func:`aiayn.quantize.quantize_model`,
        CPU only).

        Raises:
            AiaynError: unknown builtin name, missing package, or an unusable directory.
        """
        model, tokenizer, pooling = load_text_model(spec, device)
        encoder = cls(model, tokenizer, pooling, normalize=True)
        # After unwrapping: a masked-LM head the embedder never runs is not worth packing.
        encoder.model = quantize_model(encoder.model, quantize)
        return encoder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def embed_ids(self, ids: Sequence[Sequence[int]]) -> Tensor:
        """Vectors ``(B, D)`` of tokenised sentences (one padded batch)."""
        from ..models.bert import mean_pool

        input_ids, key_mask = self.tokenizer.pad(ids)
        input_ids, key_mask = input_ids.to(self.device), key_mask.to(self.device)
        hidden = self.model(input_ids, key_mask)  # (B, T, D)
        vectors = mean_pool(hidden, key_mask) if self.pooling == "mean" else hidden[:, 0]
        return F.normalize(vectors, p=2, dim=-1) if self.normalize else vectors

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> Tensor:
        """Sentence vectors ``(N, D)`` (float32, on the model's device), in the order of ``texts``.

        Sentences are batched by length (longest first, as sentence-transformers does), so a batch
        carries little padding; padding never changes a vector.
        """
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.model.config.d_model, device=self.device)
        ids = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = torch.empty(len(ids), self.model.config.d_model, device=self.device)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.embed_ids([ids[i] for i in chunk])
        return out


def load_text_model(
    spec: str, device: torch.device | str = "cpu"
) -> tuple[nn.Module, WordPieceTokenizer, str]:
    """The BERT behind a text-model spec, as stored: ``(model, tokenizer, pooling)``.

    ``spec``: ``builtin:minilm``, an aiayn BERT model directory, or a Hugging Face BERT folder. The
    model is a ``BertForMaskedLM`` when the weights have the masked-LM head (aiayn's directories,
    a Hugging Face ``BertForMaskedLM``), else a ``BertModel`` (all-MiniLM-L6-v2 has no head); the
    embedder unwraps it, ``aiayn fill-mask`` needs the head. ``pooling``: ``mean`` or ``cls``.

    Raises:
        AiaynError: unknown builtin name, missing package, or an unusable directory.
    """
    from ..interop.bert import load_hf_dir, load_minilm

    if is_builtin(spec):
        resolve_builtin(spec, BuiltinKind.TEXT_MODEL)  # MiniLM is the only built-in text model
        pre = load_minilm(device)
        return pre.model, pre.tokenizer, pre.pooling
    directory = Path(spec)
    config_file = directory / "config.json"
    if config_file.is_file() and _is_hf_config(config_file):
        pre = load_hf_dir(directory, device)
        return pre.model, pre.tokenizer, pre.pooling
    from ..data.wordpiece import WordPieceTokenizer
    from ..modeldir import load_model_dir

    loaded = load_model_dir(directory, device, expect="bert")
    tokenizer = loaded.tokenizer(
        "text",
        lambda path: WordPieceTokenizer.from_file(path, max_length=loaded.config.max_len),
    )
    return loaded.model, tokenizer, "mean"


def _is_hf_config(path: Path) -> bool:
    """A Hugging Face ``config.json`` (``model_type``) rather than an aiayn one (``format: aiayn``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") != "aiayn" and "model_type" in data


# ---- masked-LM data ---------------------------------------------------------------------------------
def pack_blocks(ids: Sequence[Sequence[int]], seq_len: int, cls_id: int, sep_id: int) -> Tensor:
    """Concatenate token lists and cut them into ``[CLS] block [SEP]`` rows of ``seq_len`` tokens.

    Returns:
        ``(N, seq_len)`` long; the last, shorter block is right-padded with ``-1`` (callers turn it
        into ``[PAD]`` and a key mask). Empty when there are no tokens.
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3, got {seq_len}")
    stream = torch.tensor([i for seq in ids for i in seq], dtype=torch.long)
    body = seq_len - 2
    n = math.ceil(len(stream) / body)
    blocks = torch.full((n, seq_len), -1, dtype=torch.long)
    for b in range(n):
        piece = stream[b * body : (b + 1) * body]
        blocks[b, 0] = cls_id
        blocks[b, 1 : 1 + len(piece)] = piece
        blocks[b, 1 + len(piece)] = sep_id
    return blocks


@dataclass(frozen=True)
class MaskedBatch:
    """One masked-LM batch.

    Attributes:
        input_ids: ``(B, T)`` ids with the chosen positions replaced (80/10/10).
        key_mask: ``(B, T)`` True at real tokens.
        selected: ``(B, T)`` True at the positions to predict.
        targets: ``(N,)`` the original ids at the selected positions (row-major order).
    """

    input_ids: Tensor
    key_mask: Tensor
    selected: Tensor
    targets: Tensor

    def to(self, device: torch.device | str) -> MaskedBatch:
        return MaskedBatch(
            *(t.to(device) for t in (self.input_ids, self.key_mask, self.selected, self.targets))
        )


def mask_tokens(
    blocks: Tensor,
    pad_id: int,
    mask_id: int,
    special_ids: Tensor,
    random_pool: Tensor,
    generator: torch.Generator,
    mask_prob: float = 0.15,
) -> MaskedBatch:
    """BERT's masking recipe on packed blocks (``-1`` = padding, as :func:`pack_blocks` leaves it).

    Each ordinary (non-special) token is chosen with probability ``mask_prob``; a chosen token becomes
    ``[MASK]`` (80%), a token drawn from ``random_pool`` (10%) or stays itself (10%). A batch with no
    chosen token gets one, so every batch has a loss.

    Args:
        blocks: ``(B, T)`` ids, ``-1`` at padding.
        pad_id: id written at padding.
        mask_id: the ``[MASK]`` id.
        special_ids: ``(K,)`` ids never chosen (``[CLS]``, ``[SEP]``, ...).
        random_pool: ``(M,)`` ids to draw random replacements from (the ordinary vocabulary).
        generator: the random source (seeded by the caller for reproducible masks).
        mask_prob: share of ordinary tokens chosen.
    """
    key_mask = blocks >= 0  # (B, T)
    input_ids = blocks.clamp(min=0).masked_fill(~key_mask, pad_id)
    ordinary = key_mask & ~torch.isin(input_ids, special_ids)
    draw = torch.rand(blocks.shape, generator=generator)
    selected = ordinary & (draw < mask_prob)
    if not selected.any():
        scores = torch.rand(blocks.shape, generator=generator).masked_fill(~ordinary, -1.0)
        if bool(ordinary.any()):
            selected.view(-1)[scores.view(-1).argmax()] = True
    targets = input_ids[selected]  # (N,)
    # One draw decides the fate of each chosen token: [0, .8) mask, [.8, .9) random, [.9, 1) keep.
    fate = torch.rand(blocks.shape, generator=generator)
    random_ids = random_pool[torch.randint(len(random_pool), blocks.shape, generator=generator)]
    corrupted = input_ids.clone()
    corrupted[selected & (fate < 0.8)] = mask_id
    swap = selected & (fate >= 0.8) & (fate < 0.9)
    corrupted[swap] = random_ids[swap]
    return MaskedBatch(corrupted, key_mask, selected, targets)


class MaskedLMTask:
    """The :class:`~aiayn.training.trainer.Task` of masked-LM training.

    Args:
        model: the ``BertForMaskedLM``.
        tokenizer: its WordPiece tokenizer.
        train_blocks: ``(N, T)`` packed training blocks (see :func:`pack_blocks`).
        valid_blocks: ``(M, T)`` packed validation blocks.
        batch_size: blocks per batch.
        seed: masks and order depend only on ``(seed, epoch)``, so a resumed run sees the same batches.
        device: where batches go.
        rank, world_size: this process's place in a distributed run (it trains on every
            ``world_size``-th batch, see :func:`~aiayn.training.run.rank_batches`).
    """

    best_metric = "val_loss"
    higher_is_better = False

    def __init__(
        self,
        model: nn.Module,
        tokenizer: WordPieceTokenizer,
        train_blocks: Tensor,
        valid_blocks: Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.rank, self.world_size = rank, world_size
        self.train_blocks, self.valid_blocks = train_blocks, valid_blocks
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.special = torch.tensor(sorted(tokenizer.special_ids), dtype=torch.long)
        ordinary = torch.ones(model.config.vocab_size, dtype=torch.bool)
        ordinary[self.special] = False
        self.random_pool = ordinary.nonzero().squeeze(1)  # random replacements: ordinary tokens

    def _mask(self, blocks: Tensor, generator: torch.Generator) -> MaskedBatch:
        tok = self.tokenizer
        return mask_tokens(
            blocks, tok.pad_id, tok.mask_id, self.special, self.random_pool, generator
        )

    def batches(self, epoch: int) -> Iterator[MaskedBatch]:
        from ..training.run import rank_batches

        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_blocks), generator=gen)
        starts = range(0, len(order), self.batch_size)
        mine = rank_batches(len(starts), self.rank, self.world_size)
        for i, start in enumerate(starts):
            # Every rank draws every batch's masks, so the generator (and a batch's masks) is the
            # same whichever batches this rank keeps.
            batch = self._mask(self.train_blocks[order[start : start + self.batch_size]], gen)
            if i in mine:
                yield batch.to(self.device)

    def loss(self, model: nn.Module, batch: MaskedBatch, step: int) -> tuple[Tensor, int]:
        logits = logits_at(model, batch.input_ids, batch.key_mask, where=batch.selected)  # (N, V)
        loss = F.cross_entropy(logits.float(), batch.targets, reduction="sum")
        return loss, int(batch.targets.numel())

    @torch.inference_mode()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        # Fixed masks: the same positions are hidden at every evaluation, so losses compare.
        gen = torch.Generator().manual_seed(12345)
        total, correct, count = 0.0, 0, 0
        for start in range(0, len(self.valid_blocks), self.batch_size):
            batch = self._mask(self.valid_blocks[start : start + self.batch_size], gen)
            batch = batch.to(self.device)
            logits = logits_at(model, batch.input_ids, batch.key_mask, where=batch.selected)
            total += float(F.cross_entropy(logits.float(), batch.targets, reduction="sum"))
            correct += int((logits.argmax(-1) == batch.targets).sum())
            count += int(batch.targets.numel())
        return {"val_loss": total / max(count, 1), "val_accuracy": correct / max(count, 1)}

    def write_model_files(self, directory: Path) -> None:
        from ..modeldir import write_model_info

        write_model_info(
            directory,
            "bert",
            self.model.config,
            task="mlm",
            tokenizers={"text": TOKENIZER_FILE},
            special_ids={
                "pad": self.tokenizer.pad_id,
                "unk": self.tokenizer.unk_id,
                "cls": self.tokenizer.cls_id,
                "sep": self.tokenizer.sep_id,
                "mask": self.tokenizer.mask_id,
            },
        )
        self.tokenizer.save(directory, TOKENIZER_FILE.removesuffix(".json"))


def _lines(text: str) -> list[str]:
    return [line for line in (raw.strip() for raw in text.splitlines()) if line]


def _resolve_tokenizer(
    spec: str | Path | WordPieceTokenizer | None,
    lines: list[str],
    vocab_size: int,
    dist: distributed.DistContext,
) -> WordPieceTokenizer:
    from ..data.wordpiece import WordPieceTokenizer, load_wordpiece

    if spec is None:
        return _shared_wordpiece(dist, lines, vocab_size)
    if isinstance(spec, WordPieceTokenizer):
        return spec.with_max_length(None)
    if is_builtin(spec):
        resolve_builtin(spec, BuiltinKind.TOKENIZER, flag="--tokenizer")  # only MiniLM's vocabulary
        from ..interop.bert import load_minilm_tokenizer

        return load_minilm_tokenizer()
    return load_wordpiece(spec)


def _shared_wordpiece(
    dist: distributed.DistContext, lines: list[str], vocab_size: int
) -> WordPieceTokenizer:
    """A vocabulary learned on rank 0 and loaded from that very file by every rank (learning
    breaks ties between equally frequent merges in hash-map order: ranks could disagree)."""
    from ..data.wordpiece import WordPieceTokenizer

    if not dist.enabled:
        return WordPieceTokenizer.train(lines, vocab_size)
    content = None
    if dist.is_main:
        with tempfile.TemporaryDirectory() as tmp:
            path = WordPieceTokenizer.train(lines, vocab_size).save(tmp)
            content = path.read_text(encoding="utf-8")
    content = dist.broadcast_object(content)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TOKENIZER_FILE
        path.write_text(content, encoding="utf-8")
        return WordPieceTokenizer.from_file(path)


def _freeze_pooler(model: nn.Module) -> None:
    """The masked-LM loss never reaches the ``[CLS]`` pooler (it serves ``train classify``), so it
    gets no gradient and was never updated; frozen, so that DDP does not wait for one every step."""
    pooler = model.bert.pooler
    if pooler is not None:
        pooler.requires_grad_(False)


def train_mlm(
    text_path: str | Path,
    out_dir: str | Path,
    valid_path: str | Path | None = None,
    preset: str = "tiny",
    vocab_size: int = 8000,
    tokenizer: str | Path | WordPieceTokenizer | None = None,
    seq_len: int = 128,
    batch_size: int | None = None,
    lr: float | None = None,
    init_from: str | Path | None = None,
    **run: Any,
) -> dict[str, Any]:
    """Train a BERT with the masked-LM objective on a text file or folder.

    Args mirror ``aiayn train mlm``. Without ``valid_path`` the last 5% of the packed blocks (at least
    one, at most 500) are held out. Without ``tokenizer`` a WordPiece vocabulary of ``vocab_size`` is
    learned from the text; otherwise ``tokenizer`` is used as it is: a tokenizer, a ``tokenizer.json``
    or ``vocab.txt`` file, or ``builtin:minilm`` (all-MiniLM-L6-v2's 30522-piece vocabulary).
    A learned vocabulary can differ slightly between runs (``tokenizers`` breaks ties between
    equally frequent merges in hash-map order); pass a tokenizer for exactly repeatable runs.
    ``init_from``: fine-tune the BERT of an aiayn or Hugging Face folder, with its WordPiece
    tokenizer (``preset``, ``tokenizer`` and ``vocab_size`` are then unused; a head the folder lacks
    starts untrained) and a tenth of the default peak learning rate.
    Under torchrun each process trains on every ``world_size``-th batch (DDP, or FSDP2 with
    ``fsdp``). ``run``: the shared run settings (:class:`~aiayn.training.run.RunOptions`).

    Returns:
        ``{"steps", "train_seconds", "best_val_loss", "parameters"}``.

    Raises:
        AiaynError: unreadable text, too little text, bad settings.
    """
    from .. import config as cfg
    from ..data.corpus import read_text
    from ..data.wordpiece import WordPieceTokenizer
    from ..modeldir import load_model_dir
    from ..models.bert import BertForMaskedLM
    from ..training.budget import Budget, choose_batch, describe_choice, measure_task_step
    from ..training.optim import adamw
    from ..training.run import RunOptions
    from ..training.schedules import warmup_cosine_schedule

    if seq_len < 3:
        raise AiaynError(f"--seq-len must be at least 3 ([CLS], a token, [SEP]), got {seq_len}")
    opts = RunOptions.of(run)
    start = opts.prepare(out_dir)
    out_dir, device, dist = start.out_dir, start.device, start.dist
    overrides, seed, max_steps, max_minutes = (
        opts.overrides,
        opts.seed,
        opts.max_steps,
        opts.max_minutes,
    )
    if max_steps is None and max_minutes is None:
        max_steps = 2000
    lines = _lines(read_text(text_path))
    valid_lines = _lines(read_text(valid_path)) if valid_path is not None else None

    found, resuming = start.found, start.resuming
    initial = None
    if resuming:
        saved = load_model_dir(found, device, expect="bert")
        if saved.info["kind"] != "bert":  # a classifier's folder reads as its encoder elsewhere
            raise AiaynError(
                f"{found}: a {saved.info['kind']} run, not a train mlm one: it cannot be resumed here"
            )
        config = saved.config
        tokenizer = saved.tokenizer(
            "text", lambda path: WordPieceTokenizer.from_file(path, config.max_len)
        )
    elif init_from is not None:
        from ..interop.pretrained import load_initial

        initial = load_initial("bert", init_from, out_dir)
        tokenizer, config = initial.tokenizer, cfg.apply_overrides(initial.config, overrides)
    else:
        tokenizer = _resolve_tokenizer(tokenizer, lines, vocab_size, dist)
        config = cfg.apply_overrides(cfg.get_preset("bert", preset), overrides)
        config = replace(config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    seq_len = min(seq_len, config.max_len)
    model = BertForMaskedLM(config).to(device)
    if initial is not None:
        initial.load_into(model)

    def blocks_of(texts: list[str]) -> Tensor:
        ids = tokenizer.encode_batch(texts, add_special_tokens=False)
        return pack_blocks(ids, seq_len, tokenizer.cls_id, tokenizer.sep_id)

    blocks = blocks_of(lines)
    if valid_lines is not None:
        train_blocks, valid_blocks = blocks, blocks_of(valid_lines)
    else:
        n_valid = max(1, min(500, len(blocks) // 20))
        train_blocks, valid_blocks = blocks[:-n_valid], blocks[-n_valid:]
    if len(train_blocks) == 0 or len(valid_blocks) == 0:
        raise AiaynError(
            f"{text_path}: too little text: {len(blocks)} block(s) of {seq_len} tokens; need at "
            "least 2 (one to train on, one to validate); add text or lower --seq-len"
        )
    peak = (
        lr
        if lr is not None
        else (1e-3 if config.d_model <= 128 else 5e-4 if config.d_model <= 256 else 1e-4)
    )
    if initial is not None and lr is None:
        from ..interop.pretrained import FINE_TUNE_LR_SCALE

        peak *= FINE_TUNE_LR_SCALE
    budget = Budget(max_steps, None if max_minutes is None else 60 * max_minutes)

    def make_task(size: int) -> MaskedLMTask:
        return MaskedLMTask(
            model, tokenizer, train_blocks, valid_blocks, size, seed, device,
            dist.rank, dist.world_size,
        )  # fmt: skip

    def make_optimizer(m: nn.Module) -> torch.optim.Optimizer:
        return adamw(m, peak, weight_decay=0.01, eps=1e-6)

    choice = None
    if batch_size is None:
        batch_size = DEFAULT_BATCH
        if budget.by_time:  # as many blocks a step as still leave enough steps in the budget
            choice = choose_batch(
                lambda b: measure_task_step(model, make_task, make_optimizer, b, device),
                [b for b in BATCH_CHOICES if b <= min(DEFAULT_BATCH, len(train_blocks))] or [1],
                0.9 * budget.seconds,
            )
            batch_size = dist.broadcast_object(choice.size)  # rank 0's measurement decides
    batch_size = min(batch_size, len(train_blocks))
    steps_per_epoch = math.ceil(len(train_blocks) / batch_size)
    warmup = max(10, min(1000, (max_steps or 2000) // 16))
    schedule = warmup_cosine_schedule(peak, warmup, max_steps, budget.seconds)
    optimizer = make_optimizer(model)
    _freeze_pooler(model)  # after the optimizer: its groups stay those of earlier runs' states
    task = make_task(batch_size)
    eval_every = opts.eval_every or max(
        20, min(500, (max_steps or 5000) // 10, 5 * steps_per_epoch)
    )
    (log.info if dist.is_main else log.debug)(  # the plan once, not once a rank
        "plan:\n  model       BERT %s: %d layers × d_model %d, %s parameters, vocab %d\n"
        "  batch       %d blocks of %d tokens (%d training blocks)\n  budget      %s; AdamW "
        "peak lr %g, warm-up %d steps or 5%%, cosine decay%s",
        preset,
        config.num_layers,
        config.d_model,
        f"{sum(p.numel() for p in model.parameters()):,}",
        tokenizer.vocab_size,
        batch_size,
        seq_len,
        len(train_blocks),
        budget.describe(),
        peak,
        warmup,
        "" if choice is None else f"\n  measured    {describe_choice(choice, 'blocks')}",
    )
    run = opts.fit(
        start,
        model,
        optimizer,
        schedule,
        task,
        max_steps=max_steps,
        budget_seconds=budget.seconds,
        eval_every=eval_every,
        log_every=opts.log_every or max(1, min(50, eval_every // 4)),
    )
    return {
        "steps": run["steps"],
        "train_seconds": run["train_seconds"],
        "best_val_loss": run["best"],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
