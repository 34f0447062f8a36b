"""A real third-party WebSocket peer (PyPI ``websockets``): an echo server in a thread, and a
client helper that talks through a proxy to a chosen address while naming another host."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve


class WsEcho:
    """Answers each text message with ``NAME:MESSAGE``; ``path:`` answers the request path;
    counts the connections open now (``open``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open = 0
        self._lock = threading.Lock()

        def handler(ws: ServerConnection) -> None:
            with self._lock:
                self.open += 1
            try:
                for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    ws.send(f"{name}:{ws.request.path if text == 'path:' else text}")  # type: ignore[union-attr]
            except ConnectionClosed:
                pass  # the client went away without a closing handshake
            finally:
                with self._lock:
                    self.open -= 1

        self.server = serve(handler, "127.0.0.1", 0, max_size=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def ws_connect(url: str, address: str, port: int, tls: ssl.SSLContext | None = None, **kw: Any) -> ClientConnection:
    """A WebSocket client for ``url`` (its host is the Host header and the TLS server name)
    connected to ``address:port`` (a proxy)."""
    host = url.split("//", 1)[1].split("/", 1)[0].split(":", 1)[0]
    sock = socket.create_connection((address, port), timeout=10)
    if tls is not None:
        return connect(url, sock=sock, ssl=tls, server_hostname=host, open_timeout=10, max_size=None, **kw)
    return connect(url, sock=sock, open_timeout=10, max_size=None, **kw)


__all__ = ["WsEcho", "ws_connect"]
