"""Connection deadlines for ``stepline serve``: uvicorn's HTTP protocols, with a bound on the headers.

uvicorn closes a connection that stays idle after a response (``timeout_keep_alive``), but
waits for ever for a request's headers: a client that connects and sends nothing, or sends
its headers a byte at a time (slowloris), holds a connection (a file descriptor, a parser)
until the server runs out of them. The protocols here arm uvicorn's own keep-alive timer
when a connection opens (an unused connection closes as an idle one does) and give every
request ``--timeout-s`` from the connection or the previous response to complete its
headers; past it the client gets a JSON 408 and the connection is closed. The body and the
prediction have the same bound in the app (see ``asgi.py``). Subclasses rather than a
proxy in front: the header phase is only visible inside the protocol.
"""
from __future__ import annotations

import functools
import json
import os

from stepline.serving.serve_cli import OPTIONS_VARIABLE


@functools.lru_cache(maxsize=None)
def header_timeout_s() -> float | None:
    """``--timeout-s`` of the server this process belongs to (None: no bound)."""
    from stepline.serving.asgi import DEFAULT_TIMEOUT_S
    options = json.loads(os.environ.get(OPTIONS_VARIABLE, "{}"))
    return options.get("timeout_s", DEFAULT_TIMEOUT_S) or None


class HeaderDeadline:
    """Mixin for a uvicorn HTTP protocol: 408 and close when a request's headers take too long."""

    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.timeout_keep_alive_task is None:  # an unused connection is idle like one after a response
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        timeout = header_timeout_s()
        if timeout and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(timeout, self._headers_late, timeout)

    def _headers_late(self, timeout: float) -> None:
        self._header_timer = None
        in_progress = self.cycle is not None and not self.cycle.response_complete
        if in_progress or getattr(self, "pipeline", None) or self.transport.is_closing():
            return  # the headers came: the app bounds the body and the prediction
        message = json.dumps({"error": f"request headers: not received within {timeout:g} s "
                                       f"(the server's --timeout-s)"}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(message), message))
        self.transport.close()


@functools.lru_cache(maxsize=None)
def _protocol(base):
    return type(base.__name__ + "WithDeadlines", (HeaderDeadline, base), {"__module__": __name__})


def protocol_class(http: str) -> str:
    """The import string of the protocol ``--http`` names (``auto``: httptools when installed), with deadlines."""
    if http == "auto":
        try:
            import httptools  # noqa: F401
            http = "httptools"
        except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
            http = "h11"
    return f"{__name__}:{'HttpTools' if http == 'httptools' else 'H11'}"


def __getattr__(name: str):
    """``HttpTools`` and ``H11``: imported on use, so that h11-only installs never import httptools."""
    if name == "HttpTools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        return _protocol(HttpToolsProtocol)
    if name == "H11":
        from uvicorn.protocols.http.h11_impl import H11Protocol
        return _protocol(H11Protocol)
    raise AttributeError(name)
