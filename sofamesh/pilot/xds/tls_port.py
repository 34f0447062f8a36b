"""Pilot's TLS xDS port (istiod's 15012): TLS terminated here, the gRPC bytes relayed to the ADS
server's loopback port, so ADS and the CSR API are the same services as on the plaintext port.

Why not gRPC's own TLS: gRPC's Python server either requires a client certificate or never asks
for one; istiod asks for one and verifies it when given (a workload renewing its certificate shows
its current one, a new workload has only a token). Python's ``ssl`` does that (``CERT_OPTIONAL``
against Pilot's roots), and the verified peer certificate is kept by the relay connection's local
port, which is the peer gRPC reports to the CSR service (:meth:`TlsXdsPort.peer_certificate`).

The served context is swapped at each ClientHello when the serving certificate or the roots
change (``TlsSource.server_context``): rotation reaches new connections, open streams keep going.
Bytes are relayed as they come, with each side's reading paused while the other's write buffer
is full.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from sofamesh.core.config.model import TlsConfig
from sofamesh.core.net.secrets import SecretStore
from sofamesh.core.net.tls import TlsSource

log = logging.getLogger("sofamesh.pilot.xds")


class _Side(asyncio.Protocol):
    """One end of a relayed connection; ``other`` is the end its bytes go to."""

    def __init__(self, port: TlsXdsPort) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None
        self.pending: list[bytes] = []  # bytes that arrived before the other end was connected
        self.closed = False
        self.local_port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.write(data)
        else:
            self.pending.append(data)

    def pause_writing(self) -> None:  # our write buffer is full: stop reading the other end
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.local_port:
            self.port.peers.pop(self.local_port, None)
        other = self.other
        if other is not None and other.transport is not None and not other.closed:
            other.transport.close()


class _Downstream(_Side):
    """The TLS client's connection: once the handshake is done, connect to the ADS server."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.port.connections += 1
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        self.port.open_task(self._connect(der))

    async def _connect(self, der: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: _Side(self.port), "127.0.0.1", self.port.target_port)
        except OSError as exc:
            log.warning("TLS xDS port: cannot reach the ADS server on 127.0.0.1:%d: %s", self.port.target_port, exc)
            if self.transport is not None:
                self.transport.close()
            return
        assert isinstance(up, _Side) and up.transport is not None
        up.local_port = int(up.transport.get_extra_info("sockname")[1])
        if der:
            self.port.peers[up.local_port] = der
        up.other, self.other = self, up
        if self.closed:
            up.transport.close()
            return
        for chunk in self.pending:
            up.transport.write(chunk)
        self.pending.clear()


class TlsXdsPort:
    """Serves TLS on ``host:port`` with ``secrets`` (a certificate and the roots client certificates
    are checked against, by name) and relays to ``127.0.0.1:target_port``."""

    def __init__(self, secrets: SecretStore, cert_secret: str, trust_secret: str, target_port: int) -> None:
        self.target_port = target_port
        self.source = TlsSource(
            TlsConfig(secret=cert_secret, ca_secret=trust_secret, alpn=["h2"]),
            server=True,
            path="xds_tls",
            secrets=secrets,
        )
        self.peers: dict[int, bytes] = {}  # relay connection's local port -> the client's certificate (DER)
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def open_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, host: str, port: int) -> int:
        ctx: ssl.SSLContext = self.source.server_context()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Downstream(self), host, port, ssl=ctx, ssl_handshake_timeout=10.0
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def peer_certificate(self, peer: str) -> bytes | None:
        """The verified client certificate (DER) of the TLS connection behind gRPC peer ``peer``
        (``ipv4:127.0.0.1:PORT``), or ``None`` (no certificate, or not a relayed connection)."""
        if not peer.startswith(("ipv4:127.0.0.1:", "ipv6:[::ffff:127.0.0.1]:")):
            return None
        _, _, port = peer.rpartition(":")
        return self.peers.get(int(port)) if port.isdigit() else None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()

    def describe(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "connections": self.connections,
            "with_client_certificate": len(self.peers),
            "context_reloads": self.source.reloads,
        }


__all__ = ["TlsXdsPort"]
