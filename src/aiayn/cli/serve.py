"""``aiayn serve``: a local web page to try a model and explore its attention.

One self-contained HTML page (``aiayn/serve_page.html``: inline CSS and JS, nothing from a CDN) and a
small JSON API on the standard library's :class:`~http.server.ThreadingHTTPServer`:

``GET /``                 the page
``GET /api/info``         the model: kind, layers, heads, the endpoint to call, the input limits
``POST /api/translate``   ``{"text": ...}`` -> the translation, the tokens, and every attention map
                          (translation models)
``POST /api/generate``    ``{"text": ...}`` -> the continuation, its tokens and the self-attention
                          maps (GPT language models)
``POST /api/run``         the model's own endpoint, whatever its kind

Every POST may also set the decoding controls of ``aiayn translate``/``aiayn generate``
(:mod:`aiayn.logits`): ``"repetition_penalty"`` (a number > 0), ``"no_repeat_ngram"`` and
``"min_len"`` (integers >= 0) and ``"ban"`` (a list of texts never to write); a missing one is off.

A translation response holds ``translation``, ``source_tokens`` (+ ``<eos>``), ``target_tokens``
(``<bos>`` + ...), ``next_tokens`` (what each target position predicts) and
``attention = {"cross" | "encoder" | "decoder": [layer][head][query][key]}``, plus ``views``, which
tells the page which token list labels the queries and keys of each kind. A GPT's response has
``continuation``, ``tokens`` (prompt and continuation) and ``attention = {"self": ...}``. Another
model kind is one more backend class in :data:`BACKENDS` returning the same shape.

Requests are checked before any model code runs: the body must be JSON (``Content-Type:
application/json``, which also stops other web sites from posting to the page without a CORS
preflight) of at most ``max_body_bytes``; the text at most ``max_chars`` characters and
``max_tokens`` tokens. Every failure is a 4xx with ``{"error": message}``; an unexpected exception is
logged to stderr and answered with a 500 that carries no traceback. The page inserts user text only
through ``textContent`` and is served with a Content-Security-Policy that allows only its own inline
script and style (by hash) and requests to its own origin.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import AiaynError
from ..viz import lm_attention_maps
from .commands import (
    add_device,
    add_quantize,
    beam_size,
    inference_device,
    port_number,
    positive_int,
)

log = logging.getLogger("aiayn.serve")

PAGE_RESOURCE = "serve_page.html"


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for.

    Attributes:
        max_body_bytes: request body size (larger: 413).
        max_chars: characters of input text (more: 400).
        max_tokens: source tokens after tokenisation (more: 400); bounds the work and the reply size.
        max_output_tokens: tokens the model may write.
    """

    max_body_bytes: int = 16 * 1024
    max_chars: int = 500
    max_tokens: int = 128
    max_output_tokens: int = 160


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the user."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Backend(Protocol):
    """What the server needs from a model kind."""

    #: the model kind (``transformer``, ...) and the POST path the page calls
    kind: str
    endpoint: str

    def info(self) -> dict[str, Any]:
        """Facts the page shows and needs (layers, heads, button label, ...)."""

    def run(self, text: str, **controls: Any) -> dict[str, Any]:
        """Process one input with the request's decoding controls (the keyword arguments of
        :func:`aiayn.logits.make_controls`); raise :class:`~aiayn.errors.AiaynError` for input the
        model can't take."""


def _rounded(maps: list[Any]) -> list[Any]:
    """Per-layer ``(1, H, T, S)`` tensors -> nested lists ``[layer][head][T][S]``, 4 decimals.

    Rounded in float64, so the JSON holds ``0.1234`` rather than float32's ``0.12340000271797180``.
    """
    return [(m[0].double() * 1e4).round().div(1e4).tolist() for m in maps]


class TranslationBackend:
    """Serves an encoder-decoder translation model.

    Args:
        loaded: the model directory, loaded.
        limits: the request limits.
        beam: beam size (1 = greedy).
    """

    kind = "transformer"
    endpoint = "/api/translate"

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

    def run(self, text: str, **controls: Any) -> dict[str, Any]:
        tr = self.translator
        limit = min(self.limits.max_tokens, tr.model.config.max_len - 1)
        n_tokens = len(tr.src_tok.encode(text))
        if n_tokens > limit:
            raise AiaynError(f"the text has {n_tokens} tokens; the limit is {limit}")
        if n_tokens == 0:
            raise AiaynError("the text has no tokens")
        translation = tr.translate(
            [text],
            beam=self.beam,
            max_len=self.limits.max_output_tokens,
            controls=_controls(tr.tgt_tok, controls),
        )[0]
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
    text always gets the same continuation.

    Args:
        loaded: the model directory, loaded.
        limits: the request limits (``max_output_tokens`` bounds the continuation).
        beam: unused (translation only).
        temperature: sampling temperature (0 = greedy).
    """

    kind = "gpt"
    endpoint = "/api/generate"

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

    def run(self, text: str, **controls: Any) -> dict[str, Any]:
        tok = self.lm.tokenizer
        limit = min(self.limits.max_tokens, self.max_len - 1)
        n_tokens = len(tok.encode(text))
        if n_tokens > limit:
            raise AiaynError(f"the text has {n_tokens} tokens; the limit is {limit}")
        if n_tokens == 0:
            raise AiaynError("the text has no tokens")
        new_tokens = min(self.limits.max_output_tokens, self.max_len - n_tokens)
        continuation = self.lm.generate(
            text,
            max_new_tokens=new_tokens,
            temperature=self.temperature,
            seed=0,
            controls=_controls(tok, controls),
        )
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


def _controls(tokenizer: Any, controls: dict[str, Any]) -> Any:
    """A request's decoding controls, texts to ban written in the model's output tokens (None when
    the request sets none: the decoders' plain path)."""
    if not controls:
        return None
    from ..logits import make_controls

    return make_controls(tokenizer.encode, tokenizer.unk_id, **controls)


#: Texts one request may ban (each is a comparison per decoding step).
MAX_BANNED = 64


def _is_count(value: Any) -> bool:
    # bool is an int in Python: JSON's true must not pass as 1.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_penalty(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and 0 < value < math.inf  # JSON's NaN and Infinity parse as floats


def _is_texts(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_BANNED
        and all(isinstance(t, str) for t in value)
    )


#: The decoding controls a request may set: name -> (check of the JSON value, what it must be).
_CONTROL_FIELDS: dict[str, tuple[Any, str]] = {
    "repetition_penalty": (_is_penalty, "a number > 0"),
    "no_repeat_ngram": (_is_count, "an integer >= 0"),
    "min_len": (_is_count, "an integer >= 0"),
    "ban": (_is_texts, f"a list of at most {MAX_BANNED} strings"),
}


def request_controls(request: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """The decoding controls a request sets, checked.

    Raises:
        RequestError: one of them is of the wrong type or out of range (400).
    """
    controls = {}
    for name, (ok, what) in _CONTROL_FIELDS.items():
        if name not in request:
            continue
        value = request[name]
        if not ok(value):
            raise RequestError(HTTPStatus.BAD_REQUEST, f'"{name}" must be {what}')
        controls[name] = value
    if any(len(t) > max_chars for t in controls.get("ban", ())):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f'"ban": each text may have at most {max_chars} characters'
        )
    return controls


#: model kind -> backend class: ``kind``, ``endpoint``, ``info()`` and ``run(text)`` returning
#: ``output``, token lists, ``attention = {view: [layer][head][query][key]}`` and ``views``.
BACKENDS: dict[str, type] = {"transformer": TranslationBackend, "gpt": GenerationBackend}


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


#: What to run instead, for a kind the page does not serve. A classifier's answer is a label, not a
#: text whose tokens the page could line up against the input's; its attention is one command away.
_ELSEWHERE = {
    "bert-classifier": "classify with `aiayn classify-text --model DIR TEXT`, draw its attention "
    "with `aiayn attention --model DIR TEXT --out FILE`",
}


# ---- the page --------------------------------------------------------------------------------------


def load_page() -> tuple[bytes, str]:
    """The page's bytes and its Content-Security-Policy (hashes of its inline script and style)."""
    try:
        html = resources.files("aiayn").joinpath(PAGE_RESOURCE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AiaynError(
            f"aiayn/{PAGE_RESOURCE} is missing from the installed package (it is package data; "
            "reinstall aiayn)"
        ) from None

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in blocks
        )

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.encode("utf-8"), csp


# ---- HTTP ------------------------------------------------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _same_origin(origin: str, host: str | None) -> bool:
    """True when a request's ``Origin`` is the page this server itself served (same host:port)."""
    return origin != "null" and host is not None and urlsplit(origin).netloc.lower() == host.lower()


class AttentionServer(ThreadingHTTPServer):
    """The HTTP server: holds the backend, the page and the limits for its handlers."""

    daemon_threads = True  # a stuck client never keeps the process alive on Ctrl-C

    def __init__(
        self,
        address: tuple[str, int],
        backend: Backend,
        limits: ServeLimits,
        allowed_hosts: Sequence[str] = (),
        quantize: str | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits
        #: the model's ``--quantize`` mode (None: float), shown in /api/info
        self.quantize = quantize
        self.allowed_hosts = {name.lower() for name in allowed_hosts}
        self.page, self.csp = load_page()
        # One request at a time runs the model: torch already uses every core for one sentence, and
        # this keeps memory bounded however many clients there are.
        self.model_lock = threading.Lock()
        host = address[0]
        try:
            self.loopback_only = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            self.loopback_only = False
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    """Routes requests; every error becomes a JSON ``{"error": ...}`` with a 4xx/5xx status."""

    server: AttentionServer
    protocol_version = "HTTP/1.1"
    server_version = "aiayn"
    timeout = 30  # seconds a client may take to send its request before the connection is dropped

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    # -- routing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _routes(self) -> dict[str, dict[str, Any]]:
        run = self._post_run
        return {
            "/": {"GET": self._get_page},
            "/index.html": {"GET": self._get_page},
            "/api/info": {"GET": self._get_info},
            "/api/run": {"POST": run},
            self.server.backend.endpoint: {"POST": run},
            "/favicon.ico": {"GET": self._get_favicon},
        }

    def _dispatch(self, method: str) -> None:
        self._body_read = False  # one handler serves every request of a kept-alive connection
        try:
            self._check_host()
            path = urlsplit(self.path).path
            methods = self._routes().get(path)
            if methods is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path[:100]}")
            allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())
            if method not in allowed:
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{method} is not allowed here; use {' or '.join(sorted(allowed))}",
                )
            methods["GET" if method == "HEAD" else method]()
        except RequestError as e:
            self._send_json(e.status, {"error": e.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to answer
        except TimeoutError:
            log.info("%s: the request body did not arrive in time", self.address_string())
            self.close_connection = True
        except Exception:
            log.exception("internal error while answering %s %s", method, self.path[:200])
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal server error"})

    def _check_host(self) -> None:
        """Answer only requests addressed to an IP address, a loopback name or an allowed name,
        and refuse a POST that a page of another origin sends.

        A web page elsewhere can point a DNS name of its own at this machine ("DNS rebinding") and
        make the browser send it requests; they carry that name in ``Host`` and are refused here
        (an IP address in ``Host`` cannot be such a page's own origin). ``--allow-host NAME``
        admits a DNS name. A page of another origin can also POST to this one directly (a "simple"
        cross-origin request); its ``Origin`` header differs from ``Host``, and it is refused as
        Jupyter does.
        """
        host = self.headers.get("Host")
        # An HTTP/1.0 client may omit Host; a browser always names the host.
        if host is not None and not self._allowed_host(host):
            raise RequestError(
                HTTPStatus.FORBIDDEN,
                "this server answers only to its IP address, localhost, or a name given "
                "with --allow-host",
            )
        origin = self.headers.get("Origin")
        if self.command == "POST" and origin is not None and not _same_origin(origin, host):
            raise RequestError(HTTPStatus.FORBIDDEN, "requests from other sites are refused")

    def _allowed_host(self, host: str) -> bool:
        name = (
            host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        ).lower()
        if name in _LOOPBACK_NAMES or name in self.server.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    # -- handlers
    def _get_page(self) -> None:
        self._send(
            HTTPStatus.OK,
            self.server.page,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": self.server.csp},
        )

    def _get_favicon(self) -> None:
        self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")

    def _get_info(self) -> None:
        backend = self.server.backend
        info = {
            "kind": backend.kind,
            "model": getattr(backend, "name", ""),
            "endpoint": backend.endpoint,
            "limits": asdict(self.server.limits),
            "quantize": self.server.quantize,
            **backend.info(),
        }
        self._send_json(HTTPStatus.OK, info)

    def _post_run(self) -> None:
        request = self._read_json()
        text = request.get("text")
        if not isinstance(text, str):
            raise RequestError(HTTPStatus.BAD_REQUEST, 'expected {"text": "..."} with a string')
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud800" escapes decode to a lone surrogate
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"the text holds a lone surrogate (U+{ord(text[e.start]):04X}) at character "
                f"{e.start}: not valid Unicode",
            ) from None
        limits = self.server.limits
        if len(text) > limits.max_chars:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"the text has {len(text)} characters; the limit is {limits.max_chars}",
            )
        if not text.strip():
            raise RequestError(HTTPStatus.BAD_REQUEST, "the text is empty")
        controls = request_controls(request, limits.max_chars)
        try:
            with self.server.model_lock:
                result = self.server.backend.run(text, **controls)
        except AiaynError as e:  # input the model can't take (too many tokens, ...)
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
        self._send_json(HTTPStatus.OK, result)

    def _read_json(self) -> dict[str, Any]:
        """The request body as a JSON object, after checking its headers and size."""
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length header")
        limit = self.server.limits.max_body_bytes
        if length > limit:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the request body is {length} bytes; the limit is {limit}",
            )
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON with Content-Type: application/json"
            )
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the request body was cut short")
        try:
            request = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the request body is not UTF-8") from None
        except json.JSONDecodeError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid JSON: {e.msg}") from None
        except ValueError as e:  # e.g. an integer of thousands of digits (Python's own limit)
            raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid JSON: {e}") from None
        except RecursionError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "invalid JSON: nested too deeply") from None
        if not isinstance(request, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, 'expected a JSON object {"text": "..."}')
        return request

    # -- responses
    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        # A body we did not read would be taken for the next request: close the connection instead.
        if not getattr(self, "_body_read", False) and (
            self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0"
        ):
            self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                methods = self._routes().get(urlsplit(self.path).path, {})
                allow = set(methods) | ({"HEAD"} if "GET" in methods else set())
                self.send_header("Allow", ", ".join(sorted(allow)))
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and status != HTTPStatus.NO_CONTENT:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors http.server raises itself (bad request line, header too long...) as JSON too."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        if not hasattr(self, "headers"):
            self.headers = {}  # type: ignore[assignment]  # the request line itself was bad
        if not hasattr(self, "command") or self.command is None:
            self.command = "GET"
        self._send_json(status, {"error": message or status.phrase})

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_server(
    loaded: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    beam: int = 4,
    limits: ServeLimits | None = None,
    allowed_hosts: Sequence[str] = (),
    quantize: str | None = None,
) -> AttentionServer:
    """An HTTP server for a loaded model directory, bound but not yet serving.

    Call ``serve_forever()`` (in a thread for tests; port 0 picks a free port, see ``.url``) and
    ``shutdown()`` + ``server_close()`` to stop.

    Args:
        loaded: from :func:`aiayn.modeldir.load_model_dir`.
        host: address to listen on; 127.0.0.1 keeps the page on this machine.
        port: TCP port (0 = any free one).
        beam: beam size for translation.
        limits: request limits.
        allowed_hosts: DNS names besides localhost that requests may address (``Host``).
        quantize: how ``loaded``'s model was quantised (``--quantize``), to show in /api/info.

    Raises:
        AiaynError: the model kind has no backend, or the address can't be bound.
    """
    limits = limits or ServeLimits()
    backend = make_backend(loaded, limits, beam=beam)
    try:
        return AttentionServer((host, port), backend, limits, allowed_hosts, quantize)
    except OSError as e:
        raise AiaynError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


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
    )
    if not server.loopback_only:
        log.warning(
            "listening on %s: the page has no login, so anyone who can reach this address can use "
            "it (requests must name an IP address%s)",
            args.host,
            ", localhost or " + ", ".join(args.allow_host) if args.allow_host else " or localhost",
        )
    precision = f" ({args.quantize})" if args.quantize else ""
    log.info("serving %s%s at %s (Ctrl-C to stop)", args.model, precision, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page to try a model and explore its attention",
        description="Serve a page where you type a sentence, see the model's output (a "
        "translation model's translation, a GPT's continuation), and explore every attention map "
        "(layer, head; hover a token to see what it attends to). Other kinds are refused with "
        "the command that handles them (a text classifier: classify-text and attention).",
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
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_serve)
