"""AcceptingServer: a listening socket on 127.0.0.1 that serves each connection it accepts on a
thread of its own, for the tests whose upstream writes its frames by hand."""

from __future__ import annotations

import socket
import threading
from typing import Self


class AcceptingServer:
    """Subclasses write ``serve(conn, n)``; ``n`` counts the connections accepted, from 1."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn, self.connections), daemon=True).start()

    def serve(self, conn: socket.socket, n: int) -> None:
        raise NotImplementedError
