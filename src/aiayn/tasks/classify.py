"""Text classification by fine-tuning a BERT: ``aiayn train classify`` and ``aiayn classify-text``.

The recipe of Devlin et al. (2019, section 4) with sentence-transformers' pooling: a pretrained
encoder (``builtin:minilm``, an aiayn BERT from ``aiayn train mlm``, or a Hugging Face BERT folder),
the mean of its last layer over the real tokens, dropout, and one linear layer to the labels; every
weight is trained, with AdamW, warm-up and cosine decay, on cross-entropy. Mean pooling rather than
BERT's ``[CLS]`` pooler: all-MiniLM-L6-v2 was trained to put a sentence's meaning in the mean, and
masked-LM training (``aiayn train mlm``) never trains the pooler at all.

Data is UTF-8 TSV, ``text<TAB>label``, as the corpus readers check it. The labels are the training
file's; a validation or test line with another label is an error naming its file and line.

A classifier's model directory has kind ``bert-classifier``: ``config.json`` (the BERT config, the
labels, the token limit), ``model.safetensors`` (``bert.*`` encoder weights and ``head.*``) and
``tokenizer.json``. The model, :class:`~aiayn.models.bert_classifier.BertClassifier`, is a kind of
:mod:`aiayn.models.registry`, so :func:`aiayn.modeldir.load_model_dir` reads these folders with the
checks of every other, and commands that need only an encoder (``aiayn embed``, ``aiayn
attention``, ``aiayn search``) read a classifier's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AiaynError, CheckpointError, ConfigError, DataError
from ..models.bert_classifier import KIND, BertClassifier
from ..quantize import quantize_model

if TYPE_CHECKING:
    from ..data.numbered_tsv import NumberedPair
    from ..data.wordpiece import WordPieceTokenizer
    from ..modeldir import LoadedModel

log = logging.getLogger(__name__)

__all__ = [
    "KIND",
    "BertClassifier",
    "TextClassificationTask",
    "TextClassifier",
    "train_classify",
]

TOKENIZER_FILE = "tokenizer.json"
#: Sentences per batch (on average: batches are cut by padded tokens, so short sentences go in
#: larger batches and long ones in smaller).
DEFAULT_BATCH = 32
#: Tokens a text is cut to, ``[CLS]``/``[SEP]`` included (the model's positions permitting).
DEFAULT_MAX_TOKENS = 128
#: Sentences per batch when predicting.
PREDICT_BATCH = 64


@dataclass(frozen=True)
class Examples:
    """Tokenised texts and their label indices."""

    ids: list[list[int]]
    labels: Tensor  # (N,) long

    def __len__(self) -> int:
        return len(self.ids)


def _length_sorted_batches(ids: Sequence[Sequence[int]], size: int) -> Iterator[list[int]]:
    """Indices in batches of ``size``, longest first: little padding when predicting."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


@torch.inference_mode()
def predict_logits(
    model: nn.Module, tokenizer: WordPieceTokenizer, ids: Sequence[Sequence[int]]
) -> Tensor:
    """Logits ``(N, K)`` (float32, on the CPU) of tokenised texts, in their order."""
    device = next(model.parameters()).device
    out = torch.empty(len(ids), model.num_labels)
    for chunk in _length_sorted_batches(ids, PREDICT_BATCH):
        input_ids, key_mask = tokenizer.pad([ids[i] for i in chunk])
        out[chunk] = model(input_ids.to(device), key_mask.to(device)).float().cpu()
    return out


class TextClassificationTask:
    """The :class:`~aiayn.training.trainer.Task` of text classification.

    Args:
        model: the :class:`BertClassifier`.
        tokenizer: its WordPiece tokenizer (truncating at the token limit).
        train: training examples.
        valid: validation examples.
        batch_size: sentences per batch, on average (see :data:`DEFAULT_BATCH`).
        seed: batches depend only on ``(seed, epoch)``, so a resumed run sees the same ones.
        device: where batches go.
        info: the ``config.json`` entries besides the model config (labels, token limit, ...).
    """

    best_metric = "val_accuracy"
    higher_is_better = True

    def __init__(
        self,
        model: BertClassifier,
        tokenizer: WordPieceTokenizer,
        train: Examples,
        valid: Examples,
        batch_size: int,
        seed: int,
        device: torch.device,
        info: dict[str, Any],
    ) -> None:
        from ..data.batching import TokenBatchSampler

        self.model, self.tokenizer, self.train, self.valid = model, tokenizer, train, valid
        self.device, self.info = device, info
        lengths = [len(x) for x in train.ids]
        mean = sum(lengths) / max(len(lengths), 1)
        # Batches of similar lengths (sorted within large shuffled buckets), cut by padded tokens.
        self.sampler = TokenBatchSampler(
            lengths, max(1, round(batch_size * mean)), shuffle=True, seed=seed
        )

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        self.sampler.set_epoch(epoch)
        for indices in self.sampler:
            input_ids, key_mask = self.tokenizer.pad([self.train.ids[i] for i in indices])
            labels = self.train.labels[indices]
            yield input_ids.to(self.device), key_mask.to(self.device), labels.to(self.device)

    def tokens(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return len(batch[2])

    def loss(
        self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], step: int
    ) -> tuple[Tensor, int]:
        input_ids, key_mask, labels = batch
        logits = model(input_ids, key_mask)  # (B, K)
        return F.cross_entropy(logits.float(), labels, reduction="sum"), len(labels)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = predict_logits(model, self.tokenizer, self.valid.ids)
        loss = float(F.cross_entropy(logits, self.valid.labels, reduction="sum"))
        correct = int((logits.argmax(-1) == self.valid.labels).sum())
        n = max(len(self.valid), 1)
        return {"val_loss": loss / n, "val_accuracy": correct / n}

    def write_model_files(self, directory: Path) -> None:
        from ..modeldir import write_model_info

        write_model_info(
            directory,
            KIND,
            self.model.config,
            task="classify",
            tokenizers={"text": TOKENIZER_FILE},
            **self.info,
        )
        self.tokenizer.save(directory, TOKENIZER_FILE.removesuffix(".json"))


# ---- data -------------------------------------------------------------------------------------------
def _label_indices(rows: Sequence[NumberedPair], labels: Sequence[str], path: str | Path) -> Tensor:
    """Each row's label as an index into ``labels``.

    Raises:
        DataError: a label that is not one of ``labels`` (the first such line named).
    """
    index = {label: i for i, label in enumerate(labels)}
    for row in rows:
        if row.target not in index:
            shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
            raise DataError(
                path, f"unknown label {row.target!r} (the model's labels: {shown})", line=row.line
            )
    return torch.tensor([index[row.target] for row in rows], dtype=torch.long)


def _examples(
    rows: Sequence[NumberedPair],
    labels: Sequence[str],
    tokenizer: WordPieceTokenizer,
    path: str | Path,
) -> Examples:
    targets = _label_indices(rows, labels, path)
    return Examples(tokenizer.encode_batch([row.source for row in rows]), targets)


def _hold_out(rows: list[NumberedPair], seed: int) -> tuple[list[NumberedPair], list[NumberedPair]]:
    """10% of the training texts (at most 1,000, at least one) for validation, by text: a text
    that occurs twice is on one side only."""
    from .translation import split_off_validation

    train, valid = split_off_validation(
        [(row.source, row.target) for row in rows], fraction=0.1, max_size=1000, seed=seed
    )
    held = {text for text, _ in valid}
    return [r for r in rows if r.source not in held], [r for r in rows if r.source in held]


# ---- model directories ------------------------------------------------------------------------------
@dataclass
class _Classifier:
    """What a classifier's directory holds, read back."""

    model: BertClassifier
    tokenizer: WordPieceTokenizer
    labels: tuple[str, ...]
    info: dict[str, Any]


def _read_dir(directory: str | Path, device: torch.device | str) -> _Classifier:
    """Read a ``bert-classifier`` directory (:func:`aiayn.modeldir.load_model_dir`: config checked,
    weights checked against it on the meta device before the model is built, tokenizer no larger
    than the embedding) with its labels and token limit.

    Raises:
        CheckpointError: another kind of model, or missing, corrupt or inconsistent files.
    """
    from ..modeldir import load_model_dir
    from ..training.checkpoint import read_config

    directory = Path(directory)
    info = read_config(directory)
    if info["kind"] != KIND:
        raise CheckpointError(
            f"{directory}: holds a {info['kind']} model, but this command needs a text classifier "
            "(written by `aiayn train classify`)"
        )
    return _classifier_of(load_model_dir(directory, device, expect=KIND))


def _classifier_of(loaded: LoadedModel) -> _Classifier:
    """A read ``bert-classifier`` folder's model with its tokenizer (cut at the token limit it was
    trained with) and labels.

    Raises:
        CheckpointError: no valid token limit, or a tokenizer larger than the embedding.
    """
    from ..data.wordpiece import WordPieceTokenizer

    max_length = loaded.info.get("max_length")
    if not (isinstance(max_length, int) and max_length >= 3):
        raise CheckpointError(f"{loaded.directory}/config.json: max_length must be an integer >= 3")
    limit = min(max_length, loaded.config.max_len)
    tokenizer = loaded.tokenizer("text", lambda path: WordPieceTokenizer.from_file(path, limit))
    return _Classifier(loaded.model, tokenizer, tuple(loaded.info["labels"]), loaded.info)


class TextClassifier:
    """A fine-tuned text classifier: texts in, labels out.

    Args:
        model: the :class:`BertClassifier` (in eval mode).
        tokenizer: its tokenizer.
        labels: the label names, in the order of the model's outputs.
    """

    def __init__(
        self, model: BertClassifier, tokenizer: WordPieceTokenizer, labels: Sequence[str]
    ) -> None:
        self.model, self.tokenizer, self.labels = model.eval(), tokenizer, tuple(labels)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: torch.device | str = "cpu",
        quantize: str | None = None,
    ) -> TextClassifier:
        """Read a directory written by ``aiayn train classify``; ``quantize="int8"``: the Linear
        layers in int8 (:func:`aiayn.quantize.quantize_model`, CPU only).

        Raises:
            CheckpointError: not a text classifier, or missing or corrupt files.
        """
        read = _read_dir(directory, device)
        return cls(quantize_model(read.model, quantize), read.tokenizer, read.labels)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> TextClassifier:
        """The classifier of a folder :func:`aiayn.modeldir.load_model_dir` read (kind
        ``bert-classifier``).

        Raises:
            CheckpointError: no valid token limit, or a tokenizer larger than the embedding.
        """
        read = _classifier_of(loaded)
        return cls(read.model, read.tokenizer, read.labels)

    def probabilities(self, texts: Sequence[str]) -> Tensor:
        """Label probabilities ``(N, K)`` of each text."""
        ids = self.tokenizer.encode_batch(list(texts))
        return torch.softmax(predict_logits(self.model, self.tokenizer, ids), dim=-1)

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``{"text", "label", "probability"}`` for each text."""
        if not texts:
            return []
        best, index = self.probabilities(texts).max(dim=-1)
        return [
            {"text": t, "label": self.labels[i], "probability": round(float(p), 6)}
            for t, i, p in zip(texts, index.tolist(), best.tolist())
        ]

    def evaluate(self, path: str | Path) -> dict[str, float]:
        """Accuracy on a ``text<TAB>label`` file: ``{"accuracy", "n"}``.

        Raises:
            DataError: a malformed line, or a label the model does not know (named by line).
        """
        from ..data.numbered_tsv import read_numbered_tsv

        rows = read_numbered_tsv(path)
        examples = _examples(rows, self.labels, self.tokenizer, path)
        logits = predict_logits(self.model, self.tokenizer, examples.ids)
        correct = int((logits.argmax(-1) == examples.labels).sum())
        return {"accuracy": correct / len(rows), "n": len(rows)}


# ---- training ---------------------------------------------------------------------------------------
def _initial_model(
    init: str, overrides: list[str] | None, num_labels: int, device: torch.device
) -> tuple[BertClassifier, WordPieceTokenizer]:
    """A classifier whose encoder holds the weights of ``init`` (the head is new)."""
    from .. import config as cfg
    from .mlm import SentenceEncoder

    encoder = SentenceEncoder.load(init, device)
    config = cfg.apply_overrides(replace(encoder.model.config, pooler=False), overrides)
    model = BertClassifier(config, num_labels).to(device)
    state = {k: v for k, v in encoder.model.state_dict().items() if not k.startswith("pooler.")}
    try:
        model.bert.load_state_dict(state)
    except RuntimeError:
        raise ConfigError(
            f"--set {' '.join(overrides or [])}: changes the shape of {init}'s weights; only "
            "fields such as dropout and attention_dropout can be changed when fine-tuning"
        ) from None
    return model, encoder.tokenizer


def train_classify(
    train_path: str | Path,
    out_dir: str | Path,
    valid_path: str | Path | None = None,
    init: str = "builtin:minilm",
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int | None = None,
    lr: float | None = None,
    **run: Any,
) -> dict[str, Any]:
    """Fine-tune a BERT with a classification head on ``text<TAB>label`` lines.

    Args mirror ``aiayn train classify``; ``run``: the shared run settings
    (:class:`~aiayn.training.run.RunOptions`). Without ``valid_path`` 10% of the training texts (at most
    1,000) are held out. Without a budget, three passes over the training data (Devlin et al.
    fine-tune for 2-4). The default learning rate is 1e-4 for a pretrained width (d_model > 128)
    and 1e-3 for the tiny presets, which are trained from scratch rather than fine-tuned.

    Returns:
        ``{"steps", "train_seconds", "best_val_accuracy", "parameters", "labels"}``.

    Raises:
        AiaynError: unreadable data (named by file and line), fewer than two labels, bad settings.
    """
    from ..data.numbered_tsv import read_numbered_tsv
    from ..training.budget import Budget
    from ..training.optim import adamw
    from ..training.run import RunOptions
    from ..training.schedules import warmup_cosine_schedule

    if max_tokens < 3:
        raise AiaynError(
            f"--max-tokens must be at least 3 ([CLS], a token, [SEP]), got {max_tokens}"
        )
    opts = RunOptions.of(run)
    start = opts.prepare(out_dir, distributed_run=False)
    out_dir, device, seed = start.out_dir, start.device, opts.seed
    train_rows = read_numbered_tsv(train_path)
    valid_rows = read_numbered_tsv(valid_path) if valid_path is not None else None
    if start.resuming:
        saved = _read_dir(start.found, device)  # the trainer restores its weights and state
        model, labels, tokenizer = saved.model, saved.labels, saved.tokenizer
        init = saved.info.get("init", init)
    else:
        labels = tuple(sorted({row.target for row in train_rows}))
        if len(labels) < 2:
            raise DataError(train_path, f"only one label ({labels[0]!r}): nothing to tell apart")
        model, tokenizer = _initial_model(init, opts.overrides, len(labels), device)
        tokenizer = tokenizer.with_max_length(min(max_tokens, model.config.max_len))
    if valid_rows is None:
        train_rows, valid_rows = _hold_out(train_rows, seed)
        valid_path = f"{train_path} (held out)"
    train = _examples(train_rows, labels, tokenizer, train_path)
    valid = _examples(valid_rows, labels, tokenizer, valid_path)
    config = model.config
    info = {"labels": list(labels), "max_length": tokenizer.max_length, "init": init}

    peak = lr if lr is not None else (1e-3 if config.d_model <= 128 else 1e-4)
    batch_size = min(batch_size or DEFAULT_BATCH, len(train))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    max_steps, max_minutes = opts.max_steps, opts.max_minutes
    if max_steps is None and max_minutes is None:
        max_steps = 3 * steps_per_epoch
    budget = Budget(max_steps, None if max_minutes is None else 60 * max_minutes)
    warmup = max(10, min(500, (max_steps or 10 * steps_per_epoch) // 10))
    schedule = warmup_cosine_schedule(peak, warmup, max_steps, budget.seconds)
    task = TextClassificationTask(
        model, tokenizer, train, valid, batch_size, seed, device, info
    )  # fmt: skip
    eval_every = opts.eval_every or max(10, min(500, steps_per_epoch, (max_steps or 10**9) // 5))
    log.info(
        "plan:\n  model       BERT from %s: %d layers × d_model %d, %s parameters, %d labels\n"
        "  data        %d training / %d validation texts, at most %d tokens each\n"
        "  batch       %d texts (on average)\n  budget      %s; AdamW peak lr %g, warm-up %d "
        "steps or 5%%, cosine decay",
        init,
        config.num_layers,
        config.d_model,
        f"{sum(p.numel() for p in model.parameters()):,}",
        len(labels),
        len(train),
        len(valid),
        tokenizer.max_length,
        batch_size,
        budget.describe(),
        peak,
        warmup,
    )
    run = opts.fit(
        start,
        model,
        adamw(model, peak, weight_decay=0.01, eps=1e-6),
        schedule,
        task,
        max_steps=max_steps,
        budget_seconds=budget.seconds,
        eval_every=eval_every,
        log_every=opts.log_every or max(1, min(50, eval_every // 2)),
    )
    return {
        "steps": run["steps"],
        "train_seconds": run["train_seconds"],
        "best_val_accuracy": run["best"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "labels": len(labels),
    }
