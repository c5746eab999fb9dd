"""A BERT encoder with a classification head: the model of ``aiayn train classify``'s folders.

Kind ``bert-classifier`` (:mod:`aiayn.models.registry`); the task that trains and uses it is
:mod:`aiayn.tasks.classify`, which says why the head reads the mean of the last layer rather than
``[CLS]``. The model lives here, beside the other kinds, so that every command reading model folders
(:func:`aiayn.modeldir.load_model_dir`) reads a classifier's too, and those that need only an encoder
(``aiayn embed``, ``aiayn attention``, ``aiayn search``) take its :attr:`BertClassifier.bert`.

Its config is the encoder's :class:`~aiayn.models.bert.BertConfig`; the number of outputs is the
number of labels its folder lists (:meth:`BertClassifier.folder_args`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..config import check
from ..dropout import Dropout
from .bert import BertConfig, BertModel, mean_pool

__all__ = ["KIND", "BertClassifier"]

#: The model kind a classifier's ``config.json`` records.
KIND = "bert-classifier"


class BertClassifier(nn.Module):
    """A BERT encoder, mean pooling, dropout and a linear layer: ``(B, T)`` ids -> ``(B, K)`` logits.

    Args:
        config: the encoder's hyper-parameters (``pooler`` is not used and should be False).
        num_labels: K.
    """

    #: The config kind of :mod:`aiayn.config` (the encoder's own; a head adds no hyper-parameter).
    config_kind = "bert"
    #: The kind of the encoder inside, and the attribute holding it: what commands that need
    #: only an encoder read (see :func:`aiayn.models.registry.encoder_of`).
    encoder_kind, encoder_attribute = "bert", "bert"

    def __init__(self, config: BertConfig, num_labels: int) -> None:
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)  # BERT's initialisation of its task layers
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def folder_args(info: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor's arguments besides the config, from a folder's ``config.json``.

        Raises:
            ConfigError: no list of two or more label names.
        """
        labels = info.get("labels")
        check(
            isinstance(labels, list)
            and len(labels) >= 2
            and all(isinstance(x, str) for x in labels),
            "labels must be a list of two or more names",
        )
        return {"num_labels": len(labels)}

    def forward(self, input_ids: Tensor, key_mask: Tensor) -> Tensor:
        """``input_ids`` ``(B, T)``, ``key_mask`` ``(B, T)`` True at real tokens -> ``(B, K)``."""
        hidden = self.bert(input_ids, key_mask)  # (B, T, D)
        return self.head(self.dropout(mean_pool(hidden, key_mask)))
