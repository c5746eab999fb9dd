"""Model backends: what the service needs from a model kind, one class per kind.

A backend answers two kinds of work. :meth:`Backend.run` is the page's: one text, its output and
every attention map (a batch of one: the maps of one sentence are what the page draws).
:meth:`Backend.run_batch` is the throughput path: many texts with the same decoding controls, text
out, no maps, in as few model calls as the kind allows. Both run on a worker thread, never on the
event loop; :meth:`Backend.check` runs first, on the event loop, so a text the model can't take is
refused with a 400 of its own before it joins a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import AiaynError
from ..viz import lm_attention_maps
from .requests import ServeLimits


class Backend(Protocol):
    """What the server needs from a model kind."""

    #: the model kind (``transformer``, ...), the POST path the page calls, the batch endpoint and
    #: the field of its answer
    kind: str
    endpoint: str
    batch_endpoint: str
    batch_field: str

    def info(self) -> dict[str, Any]:
        """Facts the page shows and needs (layers, heads, button label, ...)."""

    def check(self, text: str) -> None:
        """Raise :class:`~aiayn.errors.AiaynError` for input the model can't take."""

    def run(self, text: str, **controls: Any) -> dict[str, Any]:
        """Process one input with the request's decoding controls (the keyword arguments of
        :func:`aiayn.logits.make_controls`): the output, its tokens and attention maps."""

    def run_batch(self, texts: Sequence[str], controls: dict[str, Any]) -> list[str]:
        """The output text of each input, all decoded with the same ``controls``."""


def _rounded(maps: list[Any]) -> list[Any]:
    """Per-layer ``(1, H, T, S)`` tensors -> nested lists ``[layer][head][T][S]``, 4 decimals.

    Rounded in float64, so the JSON holds ``0.1234`` rather than float32's ``0.12340000271797180``.
    """
    return [(m[0].double() * 1e4).round().div(1e4).tolist() for m in maps]


def _controls(tokenizer: Any, controls: dict[str, Any]) -> Any:
    """A request's decoding controls, texts to ban written in the model's output tokens (None when
    the request sets none: the decoders' plain path)."""
    if not controls:
        return None
    from ..logits import make_controls

    return make_controls(tokenizer.encode, tokenizer.unk_id, **controls)


def _check_tokens(tokenizer: Any, text: str, limit: int) -> int:
    n_tokens = len(tokenizer.encode(text))
    if n_tokens > limit:
        raise AiaynError(f"the text has {n_tokens} tokens; the limit is {limit}")
    if n_tokens == 0:
        raise AiaynError("the text has no tokens")
    return n_tokens


class TranslationBackend:
    """Serves an encoder-decoder translation model.

    Batches are one call of :meth:`~aiayn.tasks.translation.Translator.translate` (beam search over
    the whole batch, sentences of similar length decoded together); padding is masked, so each
    sentence gets the translation it gets alone.

    Args:
        loaded: the model directory, loaded.
        limits: the request limits.
        beam: beam size (1 = greedy).
    """

    kind = "transformer"
    endpoint = "/api/translate"
    batch_endpoint = "/v1/translate"
    batch_field = "translations"

    def __init__(self, loaded: Any, limits: ServeLimits, beam: int = 4) -> None:
        from ..tasks.translation import Translator

        self.translator = Translator(loaded)
        self.limits = limits
        self.beam = beam
        self.name = loaded.directory.name
        config = loaded.config
        self.layers = {
            "encoder": config.num_encoder_layers,
            "decoder": config.num_decoder_layers,
            "cross": config.num_decoder_layers,
        }
        self.heads = config.num_heads
        self.d_model = config.d_model
        self.token_limit = min(limits.max_tokens, config.max_len - 1)

    def info(self) -> dict[str, Any]:
        return {
            "task": "translate",
            "input_label": "Sentence",
            "action": "Translate",
            "output_label": "Translation",
            "layers": self.layers,
            "heads": self.heads,
            "d_model": self.d_model,
        }

    def check(self, text: str) -> None:
        _check_tokens(self.translator.src_tok, text, self.token_limit)

    def run_batch(self, texts: Sequence[str], controls: dict[str, Any]) -> list[str]:
        tr = self.translator
        return tr.translate(
            list(texts),
            beam=self.beam,
            max_len=self.limits.max_output_tokens,
            controls=_controls(tr.tgt_tok, controls),
        )

    def run(self, text: str, **controls: Any) -> dict[str, Any]:
        tr = self.translator
        self.check(text)
        (translation,) = self.run_batch([text], controls)
        maps = tr.attention(text, translation)
        source_tokens, target_tokens = tr.tokens_of(text, translation)
        return {
            "input": text,
            "output": translation,
            "translation": translation,
            "source_tokens": source_tokens,
            "target_tokens": target_tokens,
            # Target position t reads token t (<bos> first) and predicts token t + 1.
            "next_tokens": [*target_tokens[1:], "<eos>"],
            "attention": {
                "cross": _rounded(maps.cross),
                "encoder": _rounded(maps.encoder),
                "decoder": _rounded(maps.decoder_self),
            },
            "views": [
                {
                    "name": "cross",
                    "label": "cross-attention (translation → source)",
                    "queries": "target_tokens",
                    "keys": "source_tokens",
                    "next": "next_tokens",
                },
                {
                    "name": "encoder",
                    "label": "encoder self-attention (source → source)",
                    "queries": "source_tokens",
                    "keys": "source_tokens",
                },
                {
                    "name": "decoder",
                    "label": "decoder self-attention (translation → translation, causal)",
                    "queries": "target_tokens",
                    "keys": "target_tokens",
                    "next": "next_tokens",
                },
            ],
        }


class GenerationBackend:
    """Serves a GPT language model: the continuation of the text, and its self-attention.

    Sampling follows ``aiayn generate``'s defaults (temperature 0.8) with a fixed seed, so the same
    text always gets the same continuation. That is also why a batch decodes its prompts one after
    another: :func:`aiayn.decoding.stream_generate` draws every row of a batch from one random
    generator, so a prompt's sample would depend on which other requests shared its batch. A batch
    still saves the queueing and runs on the worker thread; one model call per batch needs a
    generator per row there.

    Args:
        loaded: the model directory, loaded.
        limits: the request limits (``max_output_tokens`` bounds the continuation).
        beam: unused (translation only).
        temperature: sampling temperature (0 = greedy).
    """

    kind = "gpt"
    endpoint = "/api/generate"
    batch_endpoint = "/v1/generate"
    batch_field = "continuations"

    def __init__(
        self, loaded: Any, limits: ServeLimits, beam: int = 4, temperature: float = 0.8
    ) -> None:
        from ..tasks.lm import LanguageModel

        self.lm = LanguageModel(loaded)
        self.limits = limits
        self.temperature = temperature
        self.name = loaded.directory.name
        config = loaded.config
        self.max_len = config.max_len
        self.layers = {"self": config.num_layers}
        self.heads = config.num_heads
        self.d_model = config.d_model
        self.token_limit = min(limits.max_tokens, config.max_len - 1)

    def info(self) -> dict[str, Any]:
        return {
            "task": "generate",
            "input_label": "Text to continue",
            "action": "Generate",
            "output_label": "Continuation",
            "layers": self.layers,
            "heads": self.heads,
            "d_model": self.d_model,
        }

    def check(self, text: str) -> None:
        _check_tokens(self.lm.tokenizer, text, self.token_limit)

    def _continue(self, text: str, controls: dict[str, Any]) -> str:
        n_tokens = _check_tokens(self.lm.tokenizer, text, self.token_limit)
        return self.lm.generate(
            text,
            max_new_tokens=min(self.limits.max_output_tokens, self.max_len - n_tokens),
            temperature=self.temperature,
            seed=0,
            controls=_controls(self.lm.tokenizer, controls),
        )

    def run_batch(self, texts: Sequence[str], controls: dict[str, Any]) -> list[str]:
        return [self._continue(text, controls) for text in texts]

    def run(self, text: str, **controls: Any) -> dict[str, Any]:
        tok = self.lm.tokenizer
        continuation = self._continue(text, controls)
        n_tokens = len(tok.encode(text))
        ids = tok.encode(text + continuation)[: self.max_len]
        tokens = [tok.id_to_token(i) for i in ids]
        return {
            "input": text,
            "output": continuation,
            "continuation": continuation,
            "tokens": tokens,
            "prompt_length": n_tokens,
            # Position t reads token t and predicts token t + 1; the last one's guess isn't shown.
            "next_tokens": [*tokens[1:], "…"],
            "attention": {"self": _rounded(lm_attention_maps(self.lm.model, ids))},
            "views": [
                {
                    "name": "self",
                    "label": "self-attention (causal)",
                    "queries": "tokens",
                    "keys": "tokens",
                    "next": "next_tokens",
                }
            ],
        }


#: model kind -> backend class (see :class:`Backend`).
BACKENDS: dict[str, type] = {"transformer": TranslationBackend, "gpt": GenerationBackend}

#: What to run instead, for a kind the page does not serve. A classifier's answer is a label, not a
#: text whose tokens the page could line up against the input's; its attention is one command away.
_ELSEWHERE = {
    "bert-classifier": "classify with `aiayn classify-text --model DIR TEXT`, draw its attention "
    "with `aiayn attention --model DIR TEXT --out FILE`",
}


def make_backend(loaded: Any, limits: ServeLimits, beam: int = 4) -> Backend:
    """The backend for ``loaded``'s model kind.

    Raises:
        AiaynError: no backend serves this kind.
    """
    cls = BACKENDS.get(loaded.kind)
    if cls is None:
        elsewhere = _ELSEWHERE.get(loaded.kind)
        raise AiaynError(
            f"{loaded.directory}: `aiayn serve` handles {', '.join(BACKENDS)} models, "
            f"not {loaded.kind}" + (f"; {elsewhere}" if elsewhere else "")
        )
    return cls(loaded, limits, beam=beam)
