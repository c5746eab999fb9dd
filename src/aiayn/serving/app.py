"""The Starlette app: routes, the Host/Origin guard, JSON errors and the security headers.

Every answer is JSON (``{"error": message}`` for a refusal; never a traceback) except the page
itself. Model work never runs on the event loop: the POST handlers check the request, then hand it
to the :class:`~aiayn.serving.batching.BatchQueue`, whose worker thread runs the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import AiaynError
from .backends import Backend
from .batching import BatchFailed, BatchQueue, QueueClosed, QueueFull
from .page import load_page
from .requests import (
    RequestError,
    ServeLimits,
    body_length,
    check_text,
    check_texts,
    controls_key,
    parse_json_object,
    request_controls,
)

log = logging.getLogger("aiayn.serve")

#: Methods a route may allow; any other is answered 501 before routing (as http.server did).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
#: The longest request target (path and query) accepted; http.server's request-line limit.
MAX_TARGET = 65536
#: Seconds a client may take to send its request body before it is answered 408.
BODY_TIMEOUT_S = 30.0

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass
class Service:
    """Everything the app's handlers share: the model backend, the limits, the queue.

    Attributes:
        backend: the model kind's backend.
        limits: the request limits.
        allowed_hosts: DNS names besides localhost that requests may address (``Host``).
        quantize: the model's ``--quantize`` mode (None: float), shown in /api/info.
        max_batch: requests in one decoding batch (1: one at a time).
        batch_wait_s: how long the first request of a batch waits for others.
        workers: threads running batches.
    """

    backend: Backend
    limits: ServeLimits
    allowed_hosts: Sequence[str] = ()
    quantize: str | None = None
    max_batch: int = 32
    batch_wait_s: float = 0.005
    workers: int = 1
    queue: BatchQueue = field(init=False)

    def __post_init__(self) -> None:
        self.allowed_hosts = {name.lower() for name in self.allowed_hosts}
        self.page, self.csp = load_page()
        self.queue = BatchQueue(
            self._run_batch,
            max_batch=self.max_batch,
            wait_s=self.batch_wait_s,
            workers=self.workers,
            expected=(AiaynError,),
        )

    def _run_batch(self, key: Hashable, items: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """On a worker thread: one batch; every item of it shares ``key``, so the same controls."""
        controls = items[0][1]
        if key[0] == "page":  # one sentence and all its attention maps
            ((text, _),) = items
            return [self.backend.run(text, **controls)]
        return self.backend.run_batch([text for text, _ in items], controls)

    async def submit(self, kind: str, text: str, controls: dict[str, Any]) -> Any:
        """Queue one text and wait for its answer.

        Args:
            kind: ``"page"`` (the output and every attention map; runs alone) or ``"text"`` (the
                output only; batches with other texts whose controls are the same).
            text: the checked input.
            controls: the checked decoding controls.

        Raises:
            RequestError: the queue is full or closing (503), or the model refused the input (400).
        """
        try:
            return await self.queue.submit(
                (kind, controls_key(controls)), (text, controls), alone=kind == "page"
            )
        except (QueueFull, QueueClosed) as e:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, str(e)) from None
        except BatchFailed as e:
            if isinstance(e.cause, AiaynError):  # input the model can't take
                raise RequestError(HTTPStatus.BAD_REQUEST, str(e.cause)) from None
            raise _AlreadyLogged from None  # the queue has logged it, once per batch


class _AlreadyLogged(Exception):
    """A failure already logged: answer 500 without logging it again."""


class _ClientGone(Exception):
    """The client hung up before its request arrived: nobody reads an answer."""


def json_response(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status, headers, media_type="application/json; charset=utf-8")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


Handler = Callable[[Request], Awaitable[Response]]


def _answers_errors(handler: Handler) -> Handler:
    """Turn a handler's RequestError into its 4xx and any other exception into a logged 500."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestError as e:
            return _error(e.status, e.message)
        except _ClientGone:
            return Response(status_code=HTTPStatus.BAD_REQUEST)
        except _AlreadyLogged:
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error")
        except Exception:
            log.exception("internal error while answering %s %s", request.method, request.url.path)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error")

    return wrapped


async def read_json(request: Request, limits: ServeLimits) -> dict[str, Any]:
    """The request body as a JSON object, after checking its headers and size."""
    length = body_length(request.headers, limits)
    try:
        body = await asyncio.wait_for(request.body(), BODY_TIMEOUT_S)
    except TimeoutError:
        raise RequestError(
            HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive in time"
        ) from None
    except ClientDisconnect:
        raise _ClientGone from None
    return parse_json_object(body, length)


def _same_origin(origin: str, host: str | None) -> bool:
    """True when a request's ``Origin`` is the page this server itself served (same host:port)."""
    return origin != "null" and host is not None and urlsplit(origin).netloc.lower() == host.lower()


def _allowed_host(host: str, allowed: set[str]) -> bool:
    name = (host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]).lower()
    if name in _LOOPBACK_NAMES or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware in front of the routes: refuses what no route should see and adds the
    headers every answer carries.

    Answer only requests addressed to an IP address, a loopback name or an allowed name, and refuse
    a POST that a page of another origin sends. A web page elsewhere can point a DNS name of its own
    at this machine ("DNS rebinding") and make the browser send it requests; they carry that name in
    ``Host`` and are refused here (an IP address in ``Host`` cannot be such a page's own origin).
    ``--allow-host NAME`` admits a DNS name. A page of another origin can also POST to this one
    directly (a "simple" cross-origin request); its ``Origin`` header differs from ``Host``, and it
    is refused as Jupyter does.

    A request body the handler did not read would be taken for the next request on a kept-alive
    connection, so such answers carry ``Connection: close``.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: set[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "0")
        has_body = bool(headers.get("transfer-encoding")) or length not in ("", "0")
        body_read = False

        async def tracked_receive() -> Message:
            nonlocal body_read
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read = True
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(_SECURITY_HEADERS)
                if has_body and not body_read:
                    extra.append((b"connection", b"close"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, tracked_receive, guarded_send)
            return
        await self.app(scope, tracked_receive, guarded_send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> Response | None:
        method = scope["method"]
        if method not in KNOWN_METHODS:
            # Not HTTP as this server speaks it: hang up after answering, as http.server did.
            return _error(
                HTTPStatus.NOT_IMPLEMENTED,
                f"Unsupported method ({method!r})",
                {"Connection": "close"},
            )
        if len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) > MAX_TARGET:
            return _error(HTTPStatus.REQUEST_URI_TOO_LONG, "the address is too long")
        host = headers.get("host")
        # An HTTP/1.0 client may omit Host; a browser always names the host.
        if host is not None and not _allowed_host(host, self.allowed_hosts):
            return _error(
                HTTPStatus.FORBIDDEN,
                "this server answers only to its IP address, localhost, or a name given "
                "with --allow-host",
            )
        origin = headers.get("origin")
        if method == "POST" and origin is not None and not _same_origin(origin, host):
            return _error(HTTPStatus.FORBIDDEN, "requests from other sites are refused")
        return None


def build_app(service: Service) -> Starlette:
    """The ASGI app serving ``service``: the page, ``/api/*`` and the batch endpoint."""
    backend, limits = service.backend, service.limits

    async def get_page(request: Request) -> Response:
        return Response(
            service.page,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": service.csp},
        )

    async def get_favicon(request: Request) -> Response:
        return Response(b"", HTTPStatus.NO_CONTENT, media_type="text/plain")

    async def get_info(request: Request) -> Response:
        return json_response(
            HTTPStatus.OK,
            {
                "kind": backend.kind,
                "model": getattr(backend, "name", ""),
                "endpoint": backend.endpoint,
                "batch_endpoint": backend.batch_endpoint,
                "limits": asdict(limits),
                "quantize": service.quantize,
                "batching": {
                    "max_batch": service.max_batch,
                    "batch_wait_ms": service.batch_wait_s * 1e3,
                    "workers": service.workers,
                },
                **backend.info(),
            },
        )

    async def post_page(request: Request) -> Response:
        body = await read_json(request, limits)
        text = check_text(body.get("text"), limits)
        controls = request_controls(body, limits.max_chars)
        return json_response(HTTPStatus.OK, await service.submit("page", text, controls))

    async def post_batch(request: Request) -> Response:
        body = await read_json(request, limits)
        texts = check_texts(body, limits, limits.max_texts)
        controls = request_controls(body, limits.max_chars)
        for i, text in enumerate(texts):
            try:
                backend.check(text)  # tokenising a few hundred characters: fast enough here
            except AiaynError as e:
                prefix = f"texts[{i}]: " if "texts" in body else ""
                raise RequestError(HTTPStatus.BAD_REQUEST, prefix + str(e)) from None
        # Each text queues on its own, so the texts of one request batch with everyone else's.
        outputs = await asyncio.gather(*(service.submit("text", t, controls) for t in texts))
        return json_response(HTTPStatus.OK, {backend.batch_field: list(outputs)})

    table: dict[str, dict[str, Handler]] = {
        "/": {"GET": get_page},
        "/index.html": {"GET": get_page},
        "/favicon.ico": {"GET": get_favicon},
        "/api/info": {"GET": get_info},
        "/api/run": {"POST": post_page},
        backend.endpoint: {"POST": post_page},
        backend.batch_endpoint: {"POST": post_batch},
    }
    routes = [
        Route(path, _answers_errors(handler), methods=[method])
        for path, methods in table.items()
        for method, handler in methods.items()
    ]

    def allowed(path: str) -> list[str]:
        methods = set(table.get(path, {}))
        return sorted(methods | ({"HEAD"} if "GET" in methods else set()))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(HTTPStatus.NOT_FOUND, f"no such page: {request.url.path[:100]}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        methods = allowed(request.url.path)
        return _error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed here; use {' or '.join(methods)}",
            {"Allow": ", ".join(methods)},
        )

    async def other_http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _error(status, HTTPStatus(status).phrase)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.queue.start()
        try:
            yield
        finally:
            await service.queue.close()  # after uvicorn has finished the requests in flight

    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_allowed, HTTPException: other_http_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # "/api/info/" is no page (as before), not a redirect
    app.add_middleware(Guard, allowed_hosts=service.allowed_hosts)
    return app
