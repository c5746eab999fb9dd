"""The listening socket and uvicorn: :func:`make_server` binds, :meth:`Server.serve_forever` serves.

The socket is bound before uvicorn starts, so a busy port is a clear error at once (not a log line
from a background thread), port 0 can be read back before serving, and tests can run the server in
a thread of their own. uvicorn runs with h11 (pure Python, always installed: the same wire
behaviour everywhere) and its own answers to malformed requests rewritten as JSON.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
import socket
import sys
import threading
from collections.abc import Generator, Sequence
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import AiaynError
from .app import Service, build_app
from .backends import make_backend
from .requests import ServeLimits

#: The most bytes of request line and headers uvicorn buffers: above http.server's request-line
#: limit, so an over-long address reaches the app and is answered 414, and still bounded.
MAX_HEAD_BYTES = 128 * 1024
#: The longest request line accepted (http.server's limit); longer: 414.
MAX_REQUEST_LINE = 65536
#: Seconds uvicorn gives the requests in flight to finish on Ctrl-C or SIGTERM.
GRACEFUL_SHUTDOWN_S = 30


class JsonErrorProtocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request it cannot parse with a JSON error.

    uvicorn answers in plain text, with no length and always 400; this names h11's reason and
    status (431 for headers too large), like every other error the server gives, and answers an
    over-long request line 414 before h11 reads on (as http.server did).
    """

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # between requests: the next one's head is arriving
            head = bytes(self.conn.trailing_data[0]) + data
            end = head.find(b"\n")
            if (len(head) if end < 0 else end) > MAX_REQUEST_LINE:
                self._refuse(414, "the request line is too long")
                return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        # Called from inside uvicorn's `except h11.RemoteProtocolError`: the error is the one being
        # handled.
        error = sys.exc_info()[1]
        if isinstance(error, h11.RemoteProtocolError):
            self._refuse(error.error_status_hint, f"bad request: {str(error)[:200]}")
        else:
            self._refuse(400, msg)

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``{"error": message}`` and close the connection."""
        body = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"Content-Length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"connection", b"close"),
        ]
        try:
            for event in (
                h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # h11 can't answer in its state: just hang up
            pass
        self.transport.close()


class _UvicornServer(uvicorn.Server):
    """uvicorn's server, minus re-raising Ctrl-C or SIGTERM once it has shut down cleanly: a
    re-raised SIGTERM would end the process with -15, and `aiayn serve` stopping as asked is a
    success (exit 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach only the main thread; a thread's server is stopped by shutdown()
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class Server:
    """A bound server for one model: ``serve_forever()`` runs uvicorn until ``shutdown()``.

    ``serve_forever`` may run in a thread of its own; from the main thread, Ctrl-C and SIGTERM stop
    it: no new connections, the requests in flight answered, the queued ones finished or refused.

    Attributes:
        service: the backend, limits and queue the app shares.
        backend: ``service.backend``.
        quantize: the model's ``--quantize`` mode (None: float).
        socket: the listening socket.
        loopback_only: True when only this machine can reach the address.
    """

    def __init__(self, service: Service, sock: socket.socket, loopback_only: bool) -> None:
        self.service = service
        self.backend = service.backend
        self.quantize = service.quantize
        self.socket = sock
        self.loopback_only = loopback_only
        config = uvicorn.Config(
            build_app(service),
            http=JsonErrorProtocol,
            ws="none",
            loop="asyncio",
            lifespan="on",
            log_config=None,  # the CLI's logging; uvicorn's loggers propagate to it
            server_header=False,
            headers=[("server", "aiayn")],  # no Python or uvicorn version in the Server header
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self._uvicorn = _UvicornServer(config)
        self._done = threading.Event()
        self._running = False

    @property
    def server_address(self) -> tuple[Any, ...]:
        return self.socket.getsockname()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C / SIGTERM in the main thread)."""
        self._running = True
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._done.set()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop serving (as SIGTERM would) and wait until it has stopped."""
        self._uvicorn.should_exit = True
        if self._running:
            self._done.wait(timeout)

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise AiaynError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def make_server(
    loaded: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    beam: int = 4,
    limits: ServeLimits | None = None,
    allowed_hosts: Sequence[str] = (),
    quantize: str | None = None,
    max_batch: int = 32,
    batch_wait_ms: float = 5.0,
    workers: int = 1,
) -> Server:
    """A server for a loaded model directory, bound but not yet serving.

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
        max_batch: requests decoded together at most (1: one at a time).
        batch_wait_ms: how long a batch's first request waits for more.
        workers: threads running model calls.

    Raises:
        AiaynError: the model kind has no backend, or the address can't be bound.
    """
    limits = limits or ServeLimits()
    backend = make_backend(loaded, limits, beam=beam)
    service = Service(
        backend,
        limits,
        allowed_hosts,
        quantize,
        max_batch=max_batch,
        batch_wait_s=batch_wait_ms / 1e3,
        workers=workers,
    )
    sock = _bind(host, port)
    try:
        loopback_only = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback_only = False
    return Server(service, sock, loopback_only)
