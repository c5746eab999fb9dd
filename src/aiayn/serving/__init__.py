"""``aiayn serve`` as a service: a Starlette app on uvicorn with dynamic batching.

Modules, one job each: :mod:`.requests` (limits and request checks), :mod:`.backends` (one class
per model kind), :mod:`.batching` (the queue that turns concurrent requests into one decoding
batch), :mod:`.page` (the HTML page and its Content-Security-Policy), :mod:`.app` (routes, the
Host/Origin guard, JSON errors), :mod:`.server` (the socket and uvicorn). The command line is
:mod:`aiayn.cli.serve`.
"""

from .requests import RequestError, ServeLimits
from .server import Server, make_server

__all__ = ["RequestError", "ServeLimits", "Server", "make_server"]
