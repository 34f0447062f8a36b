"""One request frame to a real RPC provider on loopback and its one response frame back."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def exchange(port: int, frame: bytes, frame_length: Callable[[bytes], int | None], timeout: float = 10.0) -> bytes:
    """Send ``frame`` on a fresh connection and read until ``frame_length`` (the whole response's
    length once its head is in, else None) is reached; bounded by ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(frame)
        while time.monotonic() < deadline:
            need = frame_length(data)
            if need is not None and len(data) >= need:
                return data
            chunk = sock.recv(65536)
            assert chunk, f"provider closed after {len(data)} bytes"
            data += chunk
    raise AssertionError(f"no whole response within {timeout}s ({len(data)} bytes)")
