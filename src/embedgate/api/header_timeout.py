"""A bound on how long a client may take to send its first request's headers.

uvicorn closes idle keep-alive connections, but a connection that sends its headers a byte at
a time stays open for ever, and enough of them exhaust the server's sockets (slowloris). The
ASGI app is not called until the headers are complete, so the limit lives in the HTTP
protocol: the connection is closed when no request has started after `timeout_s`.
"""

from __future__ import annotations

import asyncio
from typing import Any


def protocol_with_header_timeout(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol (httptools when installed, else h11), with the limit."""
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # uvicorn without the httptools extra
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeaderTimeoutProtocol(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _headers_too_slow(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                self.transport.close()  # no request line and headers in time: drop it

        def connection_lost(self, exc: Exception | None) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
