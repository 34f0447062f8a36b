"""sofamesh probes idle Bolt upstream connections and drops the ones that stop answering.

The upstream here is a minimal Bolt server written for this test (it answers requests, and
heartbeats only when told to), so the silence is deliberate.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA, Heartbeat, RequestHead, ResponseHead
from sofamesh.plugins.protocols.bolt import BoltCodec, Framing
from sofamesh.plugins.protocols.bolt.frames import (
    SOFA_RESPONSE_CLASS,
    encode_header_map,
    encode_request,
    encode_response,
)
from sofamesh.testing import ProxyProcess, free_port


class TinyBoltServer:
    """Answers every request with status 0; answers heartbeats only if ``answer_heartbeats``."""

    def __init__(self, answer_heartbeats: bool) -> None:
        self.answer_heartbeats = answer_heartbeats
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.heartbeats_seen = 0
        self.connections_closed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        codec = BoltCodec(Role.SERVER, CodecLimits())
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                codec.receive_data(data)
                while (ev := codec.next_event()) is not NEED_DATA:
                    if isinstance(ev, RequestHead):
                        framing = ev.meta if isinstance(ev.meta, Framing) else Framing()
                        conn.sendall(encode_response(ev.request_id, 0, framing, class_name=SOFA_RESPONSE_CLASS,
                                                     content=b"ok"))
                    elif isinstance(ev, Heartbeat) and not ev.reply:
                        self.heartbeats_seen += 1
                        if self.answer_heartbeats:
                            conn.sendall(codec.heartbeat_reply(ev))
                if not data:
                    self.connections_closed += 1
                    break

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.sock.close()


@contextmanager
def behind_sofamesh(answer_heartbeats: bool) -> Iterator[tuple[int, ProxyProcess, TinyBoltServer]]:
    upstream = TinyBoltServer(answer_heartbeats)
    port = free_port()
    config = {
        "listeners": [{"name": "rpc_in", "address": f"127.0.0.1:{port}", "protocols": ["bolt"],
                       "routes": [{"match": {"service": "svc:1.0"}, "cluster": "tiny"}]}],
        "clusters": [{"name": "tiny", "protocol": "bolt", "heartbeat_interval_ms": 100,
                      "endpoints": [f"127.0.0.1:{upstream.port}"]}],
    }
    try:
        with ProxyProcess(config) as proxy:
            yield port, proxy, upstream
    finally:
        upstream.stop()


def call(port: int, request_id: int) -> ResponseHead:
    codec = BoltCodec(Role.CLIENT, CodecLimits())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(encode_request(request_id, header=encode_header_map([("service", "svc:1.0")]), timeout_ms=3000))
        for _ in range(100):
            codec.receive_data(s.recv(65536))
            ev = codec.next_event()
            if isinstance(ev, ResponseHead):
                return ev
    raise AssertionError("no response")


def wait_stats(proxy: ProxyProcess, key: str, at_least: int) -> dict[str, int]:
    stats: dict[str, int] = {}
    for _ in range(100):  # bounded: 10 s
        stats = proxy.stats()["clusters"]["tiny"]
        if stats[key] >= at_least:
            return stats
        time.sleep(0.1)
    raise AssertionError(f"{key} never reached {at_least}: {stats}")


@pytest.mark.parametrize("answer", [True, False], ids=["answering", "silent"])
def test_idle_upstreams_are_probed_and_silent_ones_are_closed(answer: bool) -> None:
    with behind_sofamesh(answer) as (port, proxy, upstream):
        first = call(port, 41)
        assert (first.request_id, first.status) == (41, 0)
        if answer:
            stats = wait_stats(proxy, "upstream_heartbeat_sent", 3)
            assert stats["upstream_heartbeat_failed"] == 0 and upstream.connections_closed == 0
        else:
            stats = wait_stats(proxy, "upstream_heartbeat_failed", 1)
            for _ in range(50):
                if upstream.connections_closed:
                    break
                time.sleep(0.1)
            assert upstream.connections_closed == 1
        assert upstream.heartbeats_seen >= 1
        again = call(port, 42)  # served on the same or a fresh upstream connection
        assert (again.request_id, again.status) == (42, 0)
        assert proxy.stats()["clusters"]["tiny"]["upstream_cx_total"] == (1 if answer else 2)
