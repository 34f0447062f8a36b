"""TLS contexts for listeners and upstream clusters, re-read when their files change, and the
SPIFFE identity of a peer certificate.

A listener's ``ssl.SSLContext`` is handed to asyncio once, so rotation happens inside the
handshake: the served context's SNI callback (OpenSSL calls it for every ClientHello, with or
without a server name) swaps in the newest context. Upstream connections ask ``TlsSource.context()``
for each new connection. File changes are noticed by mtime/size, checked at most once a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sofamesh.core.errors import ConfigError

if TYPE_CHECKING:
    from sofamesh.core.config.model import TlsConfig

log = logging.getLogger("sofamesh.tls")

_CHECK_EVERY_S = 1.0


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, -1))
    return tuple(out)


class TlsSource:
    """Builds the context for one ``TlsConfig`` and rebuilds it when a cert, key or CA file changes.

    ``server=True``: a listener context (client certs verified against ``ca`` when given; required
    when ``require_client_cert``). ``server=False``: an upstream origination context (our cert and
    key presented as the client certificate; the upstream's chain verified against ``ca``; host
    names are not checked, as mesh certificates name workloads by SPIFFE URI, not DNS).
    """

    __slots__ = ("_checked", "_ctx", "_stamp", "config", "path", "paths", "reloads", "server")

    def __init__(self, config: TlsConfig, *, server: bool, path: str = "") -> None:
        self.config = config
        self.server = server
        self.path = path
        self.paths = tuple(p for p in (config.cert, config.key, config.ca) if p)
        self.reloads = 0
        self._stamp = _stamp(self.paths)
        self._ctx = self._build()
        self._checked = time.monotonic()

    def _build(self) -> ssl.SSLContext:
        c = self.config
        try:
            if self.server:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(c.cert, c.key)
                if c.ca:
                    ctx.load_verify_locations(c.ca)
                    ctx.verify_mode = ssl.CERT_REQUIRED if c.require_client_cert else ssl.CERT_OPTIONAL
                elif c.require_client_cert:
                    raise ConfigError(f"{self.path}.ca", "require_client_cert needs a CA bundle to verify against")
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.load_cert_chain(c.cert, c.key)
                if c.ca:
                    ctx.load_verify_locations(c.ca)
                    ctx.verify_mode = ssl.CERT_REQUIRED
                else:
                    ctx.verify_mode = ssl.CERT_NONE
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(self.path, f"cannot load TLS files ({', '.join(self.paths)}): {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if c.alpn:
            ctx.set_alpn_protocols(c.alpn)
        return ctx

    def context(self) -> ssl.SSLContext:
        """The newest context; rebuilt first if a file changed (checked at most once a second).
        A rebuild that fails (a half-written file) keeps the previous context and retries later."""
        now = time.monotonic()
        if now - self._checked >= _CHECK_EVERY_S:
            self._checked = now
            stamp = _stamp(self.paths)
            if stamp != self._stamp:
                try:
                    ctx = self._build()
                except ConfigError as exc:
                    log.warning("TLS files changed but could not be loaded, keeping the previous ones: %s", exc)
                else:
                    self._ctx = ctx
                    self._stamp = stamp
                    self.reloads += 1
                    log.info("TLS files reloaded: %s", ", ".join(self.paths))
        return self._ctx

    def server_context(self) -> ssl.SSLContext:
        """The context to hand to ``create_server``: it swaps in the newest one at each handshake."""
        base = self._ctx

        def on_client_hello(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            newest = self.context()
            if sslobj.context is not newest:
                sslobj.context = newest

        base.sni_callback = on_client_hello
        return base


def peer_identity(transport: Any) -> str | None:
    """The first URI SAN (``spiffe://trust-domain/ns/<ns>/sa/<sa>``) of the verified peer certificate."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI":
            return str(value)
    return None


# The first byte of every TLS connection: a handshake record (ContentType 22) carrying the ClientHello.
# No plaintext protocol we serve starts with it (Bolt 0x01/0x02, Dubbo 0xda, HTTP/1 and h2c ASCII).
_TLS_HANDSHAKE = 0x16


class TlsSniffer(asyncio.Protocol):
    """The protocol of a listener that takes TLS and plaintext on one port (``tls.plaintext``, as
    Istio's PERMISSIVE mode does): the first byte tells a ClientHello from plaintext. A TLS
    connection gets ``ctx`` (an ``SSLProtocol`` between the socket and the connection, which then
    sees a TLS transport and its peer certificate); a plaintext one gets the socket as it is. Either
    way the connection made by ``factory`` sees ``connection_made`` once, with its own transport,
    and every byte, the first included."""

    __slots__ = ("_ctx", "_factory", "_loop", "_transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, ctx: ssl.SSLContext,
                 factory: Callable[[], asyncio.Protocol]) -> None:
        self._loop = loop
        self._ctx = ctx
        self._factory = factory
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or not data:
            return
        self._transport = None  # decided: nothing more reaches this object
        app = self._factory()
        if data[0] != _TLS_HANDSHAKE:
            transport.set_protocol(app)
            app.connection_made(transport)
            app.data_received(data)
            return
        tls = SSLProtocol(self._loop, app, self._ctx, None, server_side=True)  # type: ignore[arg-type]  # no waiter
        transport.set_protocol(tls)
        tls.connection_made(transport)
        view = memoryview(data)
        while view:  # SSLProtocol is a BufferedProtocol: hand it the bytes already read
            buf = tls.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            tls.buffer_updated(n)
            view = view[n:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None  # closed before its first byte: no connection was made


__all__ = ["TlsSniffer", "TlsSource", "peer_identity"]
