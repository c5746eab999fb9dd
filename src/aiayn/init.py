"""Named weight-initialisation schemes.

* ``xavier``: Glorot-uniform for every matrix, zero biases (torch's nn.Transformer, the Annotated
  Transformer). Embeddings ~ N(0, D^-1/2): they are multiplied by sqrt(D) in the model, so the scaled
  embedding has unit variance (as in fairseq and tensor2tensor).
* ``gpt2``: N(0, 0.02) for matrices and embeddings, zero biases, and residual output projections
  (``out_proj`` and ``ffn.linear2``) scaled by 1/sqrt(2·layers) so the residual stream's variance does
  not grow with depth (GPT-2 paper, section 2.3).
* ``bert``: N(0, 0.02) everywhere, zero biases (BERT's ``initializer_range``).

LayerNorms always start at weight 1, bias 0. A weight shared by two modules (a tied output layer) is
initialised once, by the first module that owns it (the embedding).
"""

from __future__ import annotations

import math

from torch import nn

INIT_SCHEMES = ("xavier", "gpt2", "bert")


def init_weights(model: nn.Module, scheme: str, num_layers: int = 1) -> None:
    """Initialise ``model``'s parameters in place with the named scheme."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    seen: set[int] = set()  # a tied output layer shares its weight with an embedding: init it once
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if weight is not None:
            if id(weight) in seen:
                continue
            seen.add(id(weight))
        if isinstance(module, nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                std = 0.02
                if scheme == "gpt2" and name.endswith(("out_proj", "ffn.linear2")):
                    std = 0.02 / math.sqrt(2 * num_layers)
                nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            std = module.embedding_dim**-0.5 if scheme == "xavier" else 0.02
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
