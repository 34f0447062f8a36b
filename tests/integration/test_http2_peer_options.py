"""``http2_protocol_options`` against real HTTP/2 peers (the ``h2`` library, its header validation
off where it must send what RFC 9113 forbids): the custom SETTINGS a listener and a cluster send, the
answer to an invalid HTTP message on either side (the whole connection, Envoy's default, or the
stream alone), and ``connection_keepalive`` with its jitter and ``connection_idle_interval`` on
upstream connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.integration.accepting import AcceptingServer

PROTOCOL_ERROR = 0x1
# the sweep that sends keepalive pings runs once a second; a loaded machine may add a little
SWEEP_S = 1.0
MARGIN_S = 1.5


class H2Upstream(AcceptingServer):
    """An HTTP/2 server on a thread. ``/bad`` is answered with an upper-case header name (invalid,
    RFC 9113 8.2.1), ``/slow`` after 0.6 s, anything else at once; bodies say ``conn <n>``. What
    it saw goes to ``log`` as (monotonic time, connection, what): ``settings`` (the peer's
    SETTINGS as a dict), ``ping``, ``request <path>``, ``reset <code>``, ``goaway <code>``,
    ``closed``. ``silent``: read on and write nothing, PING ACKs included (a dead upstream)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[float, int, object]] = []
        self.silent = False

    def serve(self, conn: socket.socket, n: int) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8", validate_outbound_headers=False,
                                           normalize_outbound_headers=False)  # fmt: skip
        h2c = h2.connection.H2Connection(config)
        h2c.initiate_connection()
        lock = threading.Lock()
        conn.settimeout(30)

        def flush() -> None:
            out = h2c.data_to_send()
            if out and not self.silent:
                conn.sendall(out)

        def answer(sid: int, path: str) -> None:
            if path == "/slow":
                time.sleep(0.6)
            body = f"conn {n}".encode()
            headers = [(":status", "200"), ("content-length", str(len(body)))]
            try:
                if path == "/bad":  # the invalid head alone: the stream stays open for the answer to it
                    with lock:
                        h2c.send_headers(sid, [*headers, ("X-Upper", "1")])
                        flush()
                    time.sleep(0.5)
                with lock:
                    if path != "/bad":
                        h2c.send_headers(sid, headers)
                    h2c.send_data(sid, body, end_stream=True)
                    flush()
            except (h2.exceptions.ProtocolError, OSError):
                pass

        try:
            conn.sendall(h2c.data_to_send())
            while True:
                data = conn.recv(65536)
                now = time.monotonic()
                if not data:
                    self.log.append((now, n, "closed"))
                    return
                with lock:
                    events = h2c.receive_data(data)
                for ev in events:
                    if isinstance(ev, h2.events.RemoteSettingsChanged):
                        self.log.append((now, n, {int(k): v.new_value for k, v in ev.changed_settings.items()}))
                    elif isinstance(ev, h2.events.PingReceived):
                        self.log.append((now, n, "ping"))
                    elif isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers)[":path"]
                        self.log.append((now, n, f"request {path}"))
                        threading.Thread(target=answer, args=(ev.stream_id, path), daemon=True).start()
                    elif isinstance(ev, h2.events.StreamReset):
                        self.log.append((now, n, f"reset {ev.error_code}"))
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        self.log.append((now, n, f"goaway {ev.error_code}"))
                with lock:
                    flush()
        except OSError:
            self.log.append((time.monotonic(), n, "closed"))
        finally:
            conn.close()

    def seen(self, what: object) -> list[tuple[float, int]]:
        return [(t, n) for t, n, w in list(self.log) if w == what]

    def wait_for(self, what: object, deadline_s: float) -> list[tuple[float, int]]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and not self.seen(what):
            time.sleep(0.02)
        return self.seen(what)


def _h2_proxy(proxy_factory: Callable[..., ProxyProcess], up_port: int, cluster: dict[str, object] | None = None,
              listener: dict[str, object] | None = None) -> int:
    """A proxy with an HTTP/1 and HTTP/2 listener whose routes go to an HTTP/2 upstream."""
    port = free_port()
    proxy_factory({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1", "http2"],
                       "routes": [{"cluster": "h2up", "timeout_ms": 5000}], **(listener or {})}],
        "clusters": [{"name": "h2up", "protocol": "http2", "endpoints": [f"127.0.0.1:{up_port}"],
                      "health": {"ejection_ms": 0}, **(cluster or {})}],
    })  # fmt: skip
    return port


class _Client:
    """An h2 client connection to the proxy (its own header validation off)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
                                           normalize_outbound_headers=False, validate_inbound_headers=False)  # fmt: skip
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.events: list[h2.events.Event] = []
        self.closed = False

    def request(self, path: str, extra: list[tuple[str, str]] = ()) -> int:  # type: ignore[assignment]
        sid = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "web"), (":path", path), *extra]
        self.h2.send_headers(sid, headers, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return sid

    def read_until(self, done: Callable[[], bool], limit_s: float) -> None:
        end = time.monotonic() + limit_s
        self.sock.settimeout(0.2)
        while not done() and not self.closed and time.monotonic() < end:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self.events.extend(self.h2.receive_data(data))
            out = self.h2.data_to_send()
            if out:
                self.sock.sendall(out)

    def close(self) -> None:
        self.sock.close()

    def status(self, sid: int) -> str | None:
        for ev in self.events:
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                return dict(ev.headers)[":status"]
        return None

    def reset(self, sid: int) -> int | None:
        for ev in self.events:
            if isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                return int(ev.error_code)
        return None

    def goaway(self) -> int | None:
        for ev in self.events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                return int(ev.error_code)
        return None


# -- custom_settings_parameters --------------------------------------------------------------------
def test_custom_settings_reach_the_peers_of_a_listener_and_of_a_cluster(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    custom = [{"identifier": 0xF0F0, "value": 7}, {"identifier": 0x3, "value": 42}]
    with H2Upstream() as up:
        port = _h2_proxy(proxy_factory, up.port, cluster={"http2_protocol_options": {"custom_settings_parameters": [
            {"identifier": 0xA0A, "value": 99}, {"identifier": 0x5, "value": 32768}]}},
            listener={"http2_protocol_options": {"custom_settings_parameters": custom}})  # fmt: skip
        client = _Client(port)
        try:
            client.read_until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events), 5)
            changed = next(e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged)).changed_settings
            assert {int(k): v.new_value for k, v in changed.items()}.items() >= {0xF0F0: 7, 0x3: 42}.items()
            sid = client.request("/x")
            client.read_until(lambda: client.status(sid) is not None, 10)
            assert client.status(sid) == "200"
        finally:
            client.close()
        upstream_settings = next(w for _, _, w in up.log if isinstance(w, dict))
        assert upstream_settings[0xA0A] == 99 and upstream_settings[0x5] == 32768
        assert upstream_settings[0x3] == 1024  # the codec's own, beside the custom ones


# -- override_stream_error_on_invalid_http_message -------------------------------------------------
BAD_HEADERS = {
    "upper-case name": ("X-Upper", "1"),
    "connection-specific": ("connection", "keep-alive"),
    "unknown pseudo-header": (":bogus", "1"),
}


@pytest.mark.parametrize("bad", sorted(BAD_HEADERS))
def test_an_invalid_request_ends_the_connection_by_default_and_only_its_stream_when_told(
    bad: str, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    strict, lenient = free_port(), free_port()
    route = {"cluster": "web", "timeout_ms": 5000}
    proxy_factory({
        "listeners": [
            {"name": "strict", "address": f"127.0.0.1:{strict}", "protocols": ["http2"], "routes": [route]},
            {"name": "lenient", "address": f"127.0.0.1:{lenient}", "protocols": ["http2"], "routes": [route],
             "http2_protocol_options": {"override_stream_error_on_invalid_http_message": True}},
        ],
        "clusters": [{"name": "web", "endpoints": [upstream.address], "http_protocol": "http1"}],
    })  # fmt: skip
    header = BAD_HEADERS[bad]
    # Envoy's default: GOAWAY(PROTOCOL_ERROR), the connection closed
    client = _Client(strict)
    try:
        good = client.request("/before")
        client.read_until(lambda: client.status(good) is not None, 10)
        client.request("/bad", [header])
        client.read_until(lambda: False, 10)
    finally:
        client.close()
    assert client.status(good) == "200"
    assert client.goaway() == PROTOCOL_ERROR and client.closed
    # stream errors: RST_STREAM(PROTOCOL_ERROR) on that stream; the streams around it are answered
    client = _Client(lenient)
    try:
        first = client.request("/first")
        bad_sid = client.request("/bad", [header])
        after = client.request("/after")
        client.read_until(lambda: None not in (client.status(first), client.reset(bad_sid), client.status(after)), 10)
        assert (client.status(first), client.reset(bad_sid), client.status(after)) == ("200", PROTOCOL_ERROR, "200")
        later = client.request("/later")
        client.read_until(lambda: client.status(later) is not None, 10)
    finally:
        client.close()
    assert client.status(later) == "200"
    assert client.goaway() is None and not client.closed
    assert client.status(bad_sid) is None  # the invalid request went nowhere


@pytest.mark.parametrize("stream_error", [False, True])
def test_an_invalid_upstream_response_ends_its_connection_or_only_its_stream(
    stream_error: bool, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    with H2Upstream() as up:
        options = {"http2_protocol_options": {"override_stream_error_on_invalid_http_message": True}}
        port = _h2_proxy(proxy_factory, up.port, cluster=options if stream_error else None)

        async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
                await c.get("/warm")  # the upstream connection is up before the two below share it
                slow = asyncio.ensure_future(c.get("/slow"))
                await asyncio.sleep(0.2)
                bad = await c.get("/bad")
                return bad, await slow, await c.get("/after")

        bad, slow, after = asyncio.run(scenario())
    assert bad.status_code >= 500
    assert up.seen("request /bad")[0][1] == 1
    if stream_error:
        assert up.seen(f"reset {PROTOCOL_ERROR}"), up.log
        assert not up.seen(f"goaway {PROTOCOL_ERROR}")
        assert (slow.status_code, slow.text) == (200, "conn 1")  # its sibling on the connection finished
        assert (after.status_code, after.text) == (200, "conn 1")
    else:
        assert up.seen(f"goaway {PROTOCOL_ERROR}"), up.log
        assert after.status_code == 200 and after.text == "conn 2"  # a new connection


# -- connection_keepalive ---------------------------------------------------------------------------
def test_a_listeners_ping_waits_its_interval_and_at_most_its_jitter(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    port = free_port()
    proxy_factory({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                       "routes": [{"cluster": "web"}],
                       "connection_keepalive": {"interval_ms": 1000, "timeout_ms": 5000, "interval_jitter_percent": 50}}],
        "clusters": [{"name": "web", "endpoints": [upstream.address], "http_protocol": "http1"}],
    })  # fmt: skip
    client = _Client(port)
    gaps = []
    try:
        client.read_until(lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in client.events), 5)
        for _ in range(3):
            last = time.monotonic()  # our last write: the SETTINGS ACK, then each PING ACK
            seen = len(client.events)
            client.read_until(lambda s=seen: any(isinstance(e, h2.events.PingReceived) for e in client.events[s:]), 6)
            gaps.append(time.monotonic() - last)
    finally:
        client.close()
    # never before the interval of silence; by interval x 1.5 plus the sweep's second (twice: the
    # silence is noted by one sweep and the ping sent by another)
    assert all(1.0 <= g <= 1.5 + 2 * SWEEP_S + MARGIN_S for g in gaps), gaps
    assert not client.closed


def test_an_upstream_that_stops_answering_pings_is_closed_and_the_next_request_opens_another(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    with H2Upstream() as up:
        ka = {"interval_ms": 1000, "timeout_ms": 1000, "interval_jitter_percent": 0}
        port = _h2_proxy(proxy_factory, up.port, cluster={"connection_keepalive": ka, "idle_timeout_ms": 0})
        r = httpx.get(f"http://127.0.0.1:{port}/one", timeout=15)
        assert (r.status_code, r.text) == (200, "conn 1")
        asked = up.seen("request /one")[0][0]  # before the answer the proxy last read
        pings = up.wait_for("ping", 1.0 + SWEEP_S + MARGIN_S)
        assert pings and 1.0 <= pings[0][0] - asked <= 1.0 + SWEEP_S + MARGIN_S, (pings, asked)
        time.sleep(0.3)  # its ACK goes out
        n = len(up.seen("ping"))
        up.silent = True  # answers nothing from now on, PING ACKs included
        closed = up.wait_for("closed", 1.0 + 2 * SWEEP_S + 1.0 + 2 * MARGIN_S)  # a ping, then its timeout
        assert [n for _, n in closed] == [1], up.log
        assert len(up.seen("ping")) > n, up.log  # the ping it did not answer
        up.silent = False
        r = httpx.get(f"http://127.0.0.1:{port}/two", timeout=15)
        assert (r.status_code, r.text) == (200, "conn 2")


def test_a_request_on_a_connection_idle_past_connection_idle_interval_follows_a_ping(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    with H2Upstream() as up:
        ka = {"interval_ms": 0, "timeout_ms": 1000, "connection_idle_interval_ms": 500}
        port = _h2_proxy(proxy_factory, up.port, cluster={"connection_keepalive": ka, "idle_timeout_ms": 0})
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
            assert c.get("/one").text == "conn 1"
            assert c.get("/soon").text == "conn 1"  # not idle that long: no ping
            time.sleep(0.8)
            assert c.get("/late").text == "conn 1"
            kinds = [w for _, n, w in up.log if w == "ping" or str(w).startswith("request")]
            assert kinds == ["request /one", "request /soon", "ping", "request /late"]
            time.sleep(0.8)
            up.silent = True  # a dead upstream: the ping ahead of the next request goes unanswered
            lost = c.get("/lost")
            assert lost.status_code >= 500
            up.silent = False
            assert [n for _, n in up.wait_for("closed", 1.0 + SWEEP_S + MARGIN_S)] == [1]
            assert c.get("/next").text == "conn 2"
