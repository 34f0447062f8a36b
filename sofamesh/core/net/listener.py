"""Listening sockets. With SO_REUSEPORT several worker processes share one port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from ssl import SSLContext

from sofamesh.core.config.model import parse_address
from sofamesh.core.errors import ConfigError


def bind_socket(address: str, reuse_port: bool = False, backlog: int = 1024, path: str = "") -> socket.socket:
    host, port = parse_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(path, f"cannot resolve listen address {address!r}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(path, f"cannot listen on {address!r}: {exc.strerror or exc}") from None
    return sock


class Listener:
    """A bound socket serving connections made by ``protocol_factory``."""

    def __init__(self, name: str, address: str, protocol_factory: Callable[[], asyncio.Protocol],
                 reuse_port: bool = False, path: str = "", sock: socket.socket | None = None) -> None:
        self.name = name
        self.address = address
        self._factory = protocol_factory
        # ``sock``: a socket already listening on ``address`` (handed over by a hot upgrade)
        self._sock = sock if sock is not None else bind_socket(address, reuse_port, path=path)
        self._server: asyncio.Server | None = None

    @property
    def socket(self) -> socket.socket:
        """The listening socket (a hot upgrade hands its descriptor to the new process)."""
        return self._sock

    @property
    def serving(self) -> bool:
        """Accepting connections now."""
        return self._server is not None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self, loop: asyncio.AbstractEventLoop, ssl: SSLContext | None = None) -> None:
        self._server = await loop.create_server(self._factory, sock=self._sock, ssl=ssl)

    async def serve_anew(self, loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], asyncio.Protocol],
                         ssl: SSLContext | None = None) -> None:
        """Serve the same listening socket with another protocol factory and TLS context (a
        listener whose TLS changed). A duplicate of the socket starts accepting before the old
        server lets go of its own descriptor, so the socket never stops listening and no
        connection waiting in its backlog is lost."""
        sock = self._sock.dup()
        old = self._server
        self._server = await loop.create_server(protocol_factory, sock=sock, ssl=ssl)
        self._factory, self._sock = protocol_factory, sock
        if old is not None:
            old.close()

    def close_socket(self) -> None:
        """Close a socket that was bound but never started (a config that was refused)."""
        if self._server is None:
            self._sock.close()

    def pause_accepting(self) -> None:
        """Stop accepting and keep the socket listening (a hot upgrade that may yet fail): ``start``
        serves it again, and connections that arrive meanwhile wait in the backlog."""
        if self._server is not None:
            spare = self._sock.dup()
            self._server.close()
            self._sock, self._server = spare, None

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 0.5)
            except TimeoutError:
                pass


__all__ = ["Listener", "bind_socket"]
