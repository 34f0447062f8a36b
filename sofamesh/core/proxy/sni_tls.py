"""Several TLS servers on one listener: the ClientHello's server name (SNI) picks the certificate
and client-certificate rules before the handshake starts, as Envoy picks a filter chain by
``server_names`` and Istio's Gateway serves several servers on one port.

A server may pass TLS through instead (``passthrough``): the connection, ClientHello included, goes
to the listener's ``tcp`` protocol, whose routes choose by the same name (Istio's PASSTHROUGH server
next to terminating ones on one port).

Order (Envoy's): an exact name, then the longest ``*.suffix`` covering the name, then the server
without names (which also takes ClientHellos without SNI). A connection no server takes is closed,
as Envoy closes one no filter chain matches; so is one whose ClientHello is not whole within
``hello_timeout`` (Envoy's ``listener_filters_timeout``, 15 s) or is not TLS.

Choosing before the handshake (instead of swapping the certificate in OpenSSL's SNI callback) is
what lets one server require client certificates and another not: OpenSSL fixes the verify mode
of a connection when it is created.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from sofamesh.core.net.tls import TlsSource, start_tls
from sofamesh.core.proxy.sni import MORE, server_name

if TYPE_CHECKING:
    from sofamesh.core.config.model import TlsServerConfig

HELLO_TIMEOUT_S = 15.0  # Envoy's default listener_filters_timeout


PASSTHROUGH: Final = "passthrough"
"""What ``context_for`` gives for a name whose TLS passes through (the listener's ``tcp`` routes)."""

Choice = ssl.SSLContext | str


class ServerNames:
    """The TLS contexts of a listener's ``tls_servers`` (or ``PASSTHROUGH``), by the server name they serve."""

    __slots__ = ("default", "exact", "sources", "wildcards")

    def __init__(self, servers: Sequence[TlsServerConfig], path: str = "") -> None:
        self.sources = [
            TlsSource(s.tls, server=True, path=f"{path}[{i}].tls") for i, s in enumerate(servers) if s.tls is not None
        ]
        made = iter(self.sources)
        contexts: list[Choice] = [next(made).server_context() if s.tls is not None else PASSTHROUGH for s in servers]
        self.exact: dict[str, Choice] = {}
        wildcards: list[tuple[str, Choice]] = []
        self.default: Choice | None = None
        for s, ctx in zip(servers, contexts, strict=True):
            if not s.server_names:
                self.default = ctx
            for name in s.server_names:
                if name.startswith("*."):
                    wildcards.append((name[1:], ctx))  # ".example.com"
                else:
                    self.exact[name] = ctx
        self.wildcards = sorted(wildcards, key=lambda w: -len(w[0]))

    def context_for(self, name: str | None) -> Choice | None:
        """The context serving ``name`` (``None``: no SNI), ``PASSTHROUGH``; ``None`` when no server takes it."""
        if name is None:
            return self.default
        ctx = self.exact.get(name)
        if ctx is not None:
            return ctx
        for suffix, wctx in self.wildcards:
            if name.endswith(suffix) and len(name) > len(suffix):
                return wctx
        return self.default


class SniTls(asyncio.Protocol):
    """The protocol a ``tls_servers`` listener's connections start with: reads the ClientHello,
    picks the server, then terminates TLS with its context in front of the connection made by
    ``factory`` (which sees ``connection_made`` once, with the TLS transport, and every byte)."""

    __slots__ = ("_buf", "_factory", "_hello_timeout", "_loop", "_servers", "_timer", "_transport")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        servers: ServerNames,
        factory: Callable[[], asyncio.Protocol],
        hello_timeout: float = HELLO_TIMEOUT_S,
    ) -> None:
        self._loop = loop
        self._servers = servers
        self._factory = factory
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self._hello_timeout = hello_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._timer = self._loop.call_later(self._hello_timeout, self._give_up)

    def _give_up(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or not data:
            return
        self._buf += data
        name = server_name(self._buf)
        if name is MORE:
            return
        self._transport = None  # decided: nothing more reaches this object
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        buf, self._buf = self._buf, b""
        ctx = self._servers.context_for(name if isinstance(name, str) else None) if buf[:1] == b"\x16" else None
        if ctx is None:
            transport.abort()
            return
        app = self._factory()
        if isinstance(ctx, str):  # PASSTHROUGH: the connection as it is, its ClientHello included
            transport.set_protocol(app)
            app.connection_made(transport)
            app.data_received(buf)
            return
        start_tls(self._loop, transport, app, ctx, buf)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None  # closed before its ClientHello was whole: no connection was made
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


__all__ = ["HELLO_TIMEOUT_S", "PASSTHROUGH", "ServerNames", "SniTls"]
