"""``aiayn serve``: a local web page to try a model and explore its attention, and a JSON service.

A Starlette app on uvicorn (:mod:`aiayn.serving`) serves one self-contained HTML page
(``aiayn/serve_page.html``: inline CSS and JS, nothing from a CDN) and a small JSON API:

``GET /``                 the page
``GET /api/info``         the model: kind, layers, heads, the endpoints to call, the input limits
``POST /api/translate``   ``{"text": ...}`` -> the translation, the tokens, and every attention map
                          (translation models)
``POST /api/generate``    ``{"text": ...}`` -> the continuation, its tokens and the self-attention
                          maps (GPT language models)
``POST /api/run``         the model's own endpoint, whatever its kind
``POST /v1/translate``    ``{"text": str}`` or ``{"texts": [str, ...]}`` -> ``{"translations":
                          [...]}``: text only, no maps; the endpoint for throughput (translation)
``POST /v1/generate``     the same for a GPT -> ``{"continuations": [...]}``

Every POST may also set the decoding controls of ``aiayn translate``/``aiayn generate``
(:mod:`aiayn.logits`): ``"repetition_penalty"`` (a number > 0), ``"no_repeat_ngram"`` and
``"min_len"`` (integers >= 0) and ``"ban"`` (a list of texts never to write); a missing one is off.

A translation response holds ``translation``, ``source_tokens`` (+ ``<eos>``), ``target_tokens``
(``<bos>`` + ...), ``next_tokens`` (what each target position predicts) and
``attention = {"cross" | "encoder" | "decoder": [layer][head][query][key]}``, plus ``views``, which
tells the page which token list labels the queries and keys of each kind. A GPT's response has
``continuation``, ``tokens`` (prompt and continuation) and ``attention = {"self": ...}``. Another
model kind is one more backend class in :data:`aiayn.serving.backends.BACKENDS`.

Dynamic batching: concurrent ``/v1`` requests (each text of ``"texts"`` counts as one) are decoded
together. The first waits at most ``--batch-wait-ms`` for others, up to ``--max-batch``; requests
whose decoding controls differ never share a batch. ``--max-batch 1`` serves one at a time. A
translation batch is one call of the model's batched beam search; a GPT's batch is decoded prompt
by prompt (see :class:`~aiayn.serving.backends.GenerationBackend`: sampling with one generator per
batch would make a continuation depend on its neighbours). The page's requests run alone (their
maps are those of one sentence). Model calls run on ``--workers``
thread(s), off the event loop; one is the default because torch already spreads one batch over
every core, and a second worker would only split those cores and hold a second batch in memory. A
batch that fails answers each of its requests with a 500; the service keeps serving. Ctrl-C or
SIGTERM stops it cleanly: no new connections, requests in flight answered, exit 0.

Requests are checked before any model code runs: the body must be JSON (``Content-Type:
application/json``, which also stops other web sites from posting to the page without a CORS
preflight) of at most ``max_body_bytes``; each text at most ``max_chars`` characters and
``max_tokens`` tokens; ``"texts"`` at most ``max_texts``. Every failure is a 4xx with ``{"error":
message}`` (503 when the queue is full or the server is stopping); an unexpected exception is logged
to stderr and answered with a 500 that carries no traceback. Requests must address the server by an
IP address, localhost or an ``--allow-host`` name (DNS rebinding), and a POST from a page of
another origin is refused. The page inserts user text only through ``textContent`` and is served
with a Content-Security-Policy that allows only its own inline script and style (by hash) and
requests to its own origin.
"""

from __future__ import annotations

import argparse
import logging

from ..serving import ServeLimits, Server, make_server
from .commands import (
    add_device,
    add_quantize,
    beam_size,
    inference_device,
    non_negative_float,
    port_number,
    positive_int,
)

__all__ = ["ServeLimits", "Server", "make_server", "register"]

log = logging.getLogger("aiayn.serve")

#: The most requests one batch may hold (``--max-batch``): beyond this the batch's memory grows
#: and its latency with it, for no more throughput on a CPU.
MAX_BATCH = 256


def _batch_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_BATCH}, got {value}")
    return value


def _wait_ms(text: str) -> float:
    value = non_negative_float(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"expected at most 10000 ms, got {text}")
    return value


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..modeldir import load_model_dir
    from ..quantize import quantize_model

    loaded = load_model_dir(args.model, inference_device(args))
    loaded.model = quantize_model(loaded.model, args.quantize)
    limits = ServeLimits(max_chars=args.max_chars)
    server = make_server(
        loaded,
        args.host,
        args.port,
        beam=args.beam,
        limits=limits,
        allowed_hosts=args.allow_host,
        quantize=args.quantize,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        workers=args.workers,
    )
    if not server.loopback_only:
        log.warning(
            "listening on %s: the page has no login, so anyone who can reach this address can use "
            "it (requests must name an IP address%s)",
            args.host,
            ", localhost or " + ", ".join(args.allow_host) if args.allow_host else " or localhost",
        )
    precision = f" ({args.quantize})" if args.quantize else ""
    log.info(
        "serving %s%s at %s (batches of up to %d, %g ms wait; Ctrl-C to stop)",
        args.model,
        precision,
        server.url,
        args.max_batch,
        args.batch_wait_ms,
    )
    try:
        server.serve_forever()  # returns once Ctrl-C or SIGTERM has shut it down cleanly
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log.info("stopped")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page to try a model and explore its attention, and a batching JSON API",
        description="Serve a page where you type a sentence, see the model's output (a "
        "translation model's translation, a GPT's continuation), and explore every attention map "
        "(layer, head; hover a token to see what it attends to). Other kinds are refused with "
        "the command that handles them (a text classifier: classify-text and attention). "
        'For throughput, POST {"text": "..."} or {"texts": ["...", ...]} as JSON to /v1/translate '
        '(-> {"translations": [...]}) or, for a GPT, /v1/generate (-> {"continuations": [...]}): '
        "concurrent requests are decoded together in batches (a translation model's in one "
        "model call; a GPT's sampled prompts one after another, so that each keeps its seeded "
        "sample). The page's own requests, which return every attention map, run one at a time.",
    )
    p.add_argument(
        "--model", metavar="DIR", required=True, help="translation or GPT model directory"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=port_number, default=8000, help="TCP port (default 8000; 0 = any free)"
    )
    p.add_argument("--beam", type=beam_size, default=4, help="beam size (1 = greedy; at most 64)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name requests may use to reach the server (repeatable; IP addresses and "
        "localhost always work)",
    )
    p.add_argument(
        "--max-chars", type=positive_int, default=500, help="longest input accepted (characters)"
    )
    p.add_argument(
        "--max-batch",
        type=_batch_size,
        default=32,
        metavar="N",
        help="requests to /v1/* decoded together at most (default 32; 1 = one at a time; at most "
        f"{MAX_BATCH})",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=_wait_ms,
        default=5.0,
        metavar="MS",
        help="how long the first request of a batch waits for others (default 5; 0 = batch only "
        "what is already queued)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="threads running the model (default 1: torch already uses every core for one "
        "batch; more split the cores and hold more batches in memory)",
    )
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_serve)
