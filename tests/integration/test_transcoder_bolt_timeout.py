"""A transcoded Bolt call's frame carries its route's timeout (capped by nothing else), on the wire
to a Bolt listener that records what arrives and never answers: the route's timeout then answers
the HTTP client with a JSON 504."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from sofamesh.plugins.protocols.bolt import frames
from sofamesh.testing import ProxyProcess, free_port


class SilentBolt:
    """Accepts one connection at a time on 127.0.0.1 and keeps the first request frame's header."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.headers: list[tuple[int, ...]] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            conn.settimeout(10)
            data = b""
            try:
                while len(data) < frames.V1_REQUEST.size:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                continue
            if len(data) >= frames.V1_REQUEST.size:
                self.headers.append(frames.V1_REQUEST.unpack_from(data))

    def stop(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def silent() -> Iterator[SilentBolt]:
    s = SilentBolt()
    yield s
    s.stop()


def test_the_route_timeout_is_in_the_bolt_frame_and_answers_504(silent: SilentBolt) -> None:
    listen = f"127.0.0.1:{free_port()}"
    call = {
        "protocol": "bolt",
        "interface": "com.example.Echo",
        "version": "1.0",
        "method": "echo",
        "arguments": [{"name": "s", "type": "java.lang.String"}],
    }
    config = {
        "listeners": [
            {
                "name": "edge",
                "address": listen,
                "protocols": ["http1"],
                "routes": [
                    {
                        "match": {"path": {"prefix": "/echo"}},
                        "cluster": "bolt",
                        "timeout_ms": 700,
                        "filters": [{"type": "transcoder", "config": call}],
                    },
                ],
            }
        ],
        "clusters": [
            {"name": "bolt", "protocol": "bolt", "endpoints": [f"127.0.0.1:{silent.port}"], "heartbeat_interval_ms": 0}
        ],
    }
    with ProxyProcess(config), httpx.Client(base_url=f"http://{listen}", timeout=10) as c:
        r = c.post("/echo", json=["hi"])
        assert r.status_code == 504 and r.json()["error"] == "timeout", r.text
    assert silent.headers, "no frame reached the provider"
    header = silent.headers[0]
    assert (header[0], header[6]) == (frames.PROTO_V1, 700)  # protocol, timeout: the route's, not 3000
