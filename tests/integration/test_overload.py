"""The overload manager and connection limits against a running ``sofamesh proxy``: a connection
flood past a limit is refused while established clients keep working; an upload flood against a
memory threshold is shed and reset, and the proxy's RSS stays under the threshold plus a margin."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import httpx
import yaml
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, SettingsFrame

from sofamesh.plugins.protocols.bolt.frames import encode_request
from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.conftest import http_proxy_config

MiB = 1024 * 1024


async def _flood(port: int, n: int, hold: float) -> tuple[int, int]:
    """Open ``n`` connections at once, hold each for ``hold`` s; (refused, still open at the end)."""

    async def one() -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError):
            return False
        try:
            data = await asyncio.wait_for(reader.read(1), hold)
            return data != b""  # b"": closed by the proxy
        except TimeoutError:
            return True  # held open the whole time
        except ConnectionResetError:
            return False
        finally:
            writer.close()

    results = await asyncio.gather(*(one() for _ in range(n)))
    return results.count(False), results.count(True)


def test_a_connection_flood_past_the_listener_limit_is_refused_while_established_clients_keep_working(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([upstream.address], max_connections=40)
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        assert c.get("/before").status_code == 200
        box: dict[str, tuple[int, int]] = {}
        t = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(_flood(port, 300, 3.0))))
        t.start()
        time.sleep(1.0)
        during = [c.get(f"/during/{i}") for i in range(20)]
        t.join(30)
        assert not t.is_alive()
        assert [r.status_code for r in during] == [200] * 20
        assert c.get("/after").status_code == 200
    refused, held = box["r"]
    assert held <= 39, f"{held} flood connections held open past the limit of 40 (one is the client's)"
    assert refused >= 300 - 39
    st = proxy.stats()["listeners"]["web"]
    assert st["downstream_cx_overflow"] == refused
    assert st["downstream_rq_2xx"] == 22


def test_the_global_connection_limit_counts_every_listener(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([upstream.address])
    port2 = free_port()
    cfg["listeners"].append({**cfg["listeners"][0], "name": "web2", "address": f"127.0.0.1:{port2}"})
    cfg["overload_manager"] = {"refresh_interval_ms": 100, "max_active_downstream_connections": 50}
    proxy = proxy_factory(cfg)

    async def both() -> list[tuple[int, int]]:
        return list(await asyncio.gather(_flood(port, 100, 2.0), _flood(port2, 100, 2.0)))

    (r1, h1), (r2, h2) = asyncio.run(both())
    assert h1 + h2 <= 50 and r1 + r2 >= 150
    snap = proxy.stats()
    listeners = snap["listeners"]
    assert (
        listeners["web"]["downstream_global_cx_overflow"] + listeners["web2"]["downstream_global_cx_overflow"]
        == r1 + r2
    )
    assert snap["overload"]["max_active_downstream_connections"] == 50
    with httpx.Client(timeout=5) as c:  # the flood is gone: both listeners serve again
        assert c.get(f"http://127.0.0.1:{port}/x").status_code == 200
        assert c.get(f"http://127.0.0.1:{port2}/x").status_code == 200


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


HEADROOM = 96 * MiB  # the threshold: the idle proxy's RSS plus this
MARGIN = 32 * MiB  # slack: a read per connection, buffers' spare capacity, the loop's own
FLOOD = 32  # connections, each uploading most of an 8 MiB Bolt frame: 3x the headroom


def test_an_upload_flood_against_the_memory_threshold_is_shed_and_reset_and_rss_stays_bounded(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, http_port = http_proxy_config([upstream.address])
    bolt_port = free_port()
    cfg["listeners"].append(
        {
            "name": "rpc",
            "address": f"127.0.0.1:{bolt_port}",
            "protocols": ["bolt"],
            "request_headers_timeout_ms": 60_000,
            "routes": [{"name": "all", "cluster": "web"}],
        }
    )
    probe = proxy_factory(cfg)
    assert probe.proc is not None
    time.sleep(0.5)
    baseline = _rss(probe.proc.pid)
    probe.stop()
    threshold = baseline + HEADROOM
    cfg["overload_manager"] = {
        "refresh_interval_ms": 50,
        "max_rss_bytes": threshold,
        "actions": [
            {"name": "stop_accepting_requests", "triggers": [{"name": "memory", "threshold": 0.75}]},
            {
                "name": "envoy.overload_actions.stop_accepting_connections",
                "triggers": [{"name": "memory", "threshold": 0.85}],
            },
            {"name": "shrink_heap", "triggers": [{"name": "memory", "threshold": 0.7}]},
            {"name": "reset_high_memory_stream", "triggers": [{"name": "memory", "threshold": 0.9}]},
        ],
    }
    proxy = proxy_factory(cfg)
    assert proxy.proc is not None
    pid = proxy.proc.pid
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], _rss(pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    frame = encode_request(7, content=b"\0" * (8 * MiB))
    upload = frame[: len(frame) - MiB // 2]  # the frame never ends: the proxy holds what it got
    statuses: list[tuple[int, str | None]] = []

    async def uploader() -> str:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", bolt_port), 10)
        except (OSError, TimeoutError):
            return "refused"
        try:
            for i in range(0, len(upload), 256 * 1024):
                writer.write(upload[i : i + 256 * 1024])
                await asyncio.wait_for(writer.drain(), 10)
            await asyncio.sleep(3)
            return "held"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except TimeoutError:
            return "stalled"  # the listener stopped accepting: it waits in the backlog
        finally:
            writer.close()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as c:
            for i in range(60):
                r = await c.get(f"/shed/{i}")
                statuses.append((r.status_code, r.headers.get("x-envoy-overloaded")))
                await asyncio.sleep(0.05)

    async def run() -> list[str]:
        c = asyncio.create_task(client())
        await asyncio.sleep(0.2)
        outcomes = await asyncio.gather(*(uploader() for _ in range(FLOOD)))
        await asyncio.wait_for(c, 60)
        return list(outcomes)

    try:
        outcomes = asyncio.run(run())
    finally:
        sampling.set()
        sampler.join(5)
    assert proxy.proc.poll() is None, "the proxy died under the flood"
    print(
        f"baseline {baseline / MiB:.0f} MiB, threshold {threshold / MiB:.0f} MiB, peak {peak[0] / MiB:.0f} MiB, "
        f"uploads {sorted(outcomes)}, shed {sum(1 for c, _ in statuses if c == 503)}/{len(statuses)}"
    )
    assert peak[0] <= threshold + MARGIN, (
        f"RSS peaked at {peak[0] / MiB:.0f} MiB, over the {threshold / MiB:.0f} MiB threshold plus {MARGIN / MiB:.0f}"
    )
    snap = proxy.stats()
    ov = snap["overload"]
    # the biggest uploads were reset as they grew past what the reset threshold leaves
    assert ov.get("reset_high_memory_stream.resets", 0) >= 1
    assert snap["listeners"]["rpc"]["downstream_rq_overload_reset"] == ov["reset_high_memory_stream.resets"]
    shed = [s for s in statuses if s[0] == 503]
    assert shed and all(h == "true" for _, h in shed), (statuses, ov, proxy.log()[-4000:])
    assert snap["listeners"]["web"]["downstream_rq_overload_shed"] == len(shed)
    assert ov["rss_peak_bytes"] <= threshold + MARGIN
    # the flood is over: requests are served again
    deadline = time.monotonic() + 20
    ok = False
    with httpx.Client(timeout=5) as c:
        while time.monotonic() < deadline and not ok:
            ok = c.get(f"http://127.0.0.1:{http_port}/after").status_code == 200
            time.sleep(0.2)
    assert ok, f"still shedding after the flood: {proxy.stats()['overload']}"


def _h2_frames(sock: socket.socket, limit: float) -> tuple[list[Frame], bool]:
    """Frames the proxy sends (decoded by hyperframe) until it closes the connection or ``limit`` s
    pass; SETTINGS are acknowledged. (frames, closed by the proxy)."""
    frames: list[Frame] = []
    buf = b""
    deadline = time.monotonic() + limit
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return frames, True
        if not data:
            return frames, True
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            frames.append(frame)
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
    return frames, False


def test_disable_http_keepalive_drains_an_http2_connection_as_envoys_connection_manager_does(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    """With ``disable_http_keepalive`` on, the next stream on an HTTP/2 connection is served and the
    connection drains as Envoy's HTTP connection manager drains it: GOAWAY with the largest stream
    id, then GOAWAY naming the last stream the client opened, then the proxy closes the connection
    once that stream is done (the h2 library writes the client's frames; hyperframe reads the
    proxy's, since h2 refuses frames after a GOAWAY)."""
    cfg, port = http_proxy_config([upstream.address])
    cfg["listeners"][0]["protocols"] = ["http2"]
    cfg["clusters"][0]["http_protocol"] = "http1"
    cfg["overload_manager"] = {
        "refresh_interval_ms": 100,
        "max_active_downstream_connections": 1000,  # one connection: pressure 0.001
        "actions": [
            {"name": "disable_http_keepalive", "triggers": [{"name": "downstream_connections", "threshold": 0.001}]}
        ],
    }
    proxy = proxy_factory(cfg)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    time.sleep(0.6)  # a few refreshes: the action is on
    conn.send_headers(
        1, [(":method", "GET"), (":path", "/one"), (":scheme", "http"), (":authority", "web")], end_stream=True
    )
    sock.sendall(conn.data_to_send())
    t0 = time.monotonic()
    frames, closed = _h2_frames(sock, 10)
    took = time.monotonic() - t0
    sock.close()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert [(g.last_stream_id, g.error_code) for g in goaways] == [(2**31 - 1, 0), (1, 0)], frames
    on_1 = [f for f in frames if f.stream_id == 1]
    assert isinstance(on_1[0], HeadersFrame) and b"up-a GET /one" in b"".join(
        f.data for f in on_1 if isinstance(f, DataFrame)
    ), frames
    assert "END_STREAM" in on_1[-1].flags, frames  # the stream was served whole
    assert frames.index(goaways[0]) < frames.index(on_1[0]), frames  # GOAWAY before the response's headers
    assert closed and took < 6, (closed, took, frames)  # closed after the last GOAWAY, not at the idle timeout
    st = proxy.stats()
    assert st["listeners"]["web"]["downstream_cx_overload_disable_keepalive"] == 1, st["listeners"]["web"]
    assert st["overload"]["disable_http_keepalive.activations"] >= 1, st["overload"]


def test_a_reload_applies_new_overload_thresholds_and_actions_and_removing_them_turns_them_off(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    """The overload manager follows a config reload (POST /reload): a threshold lowered under the
    present pressure turns ``stop_accepting_requests`` on (503 with ``x-envoy-overloaded``), a
    threshold raised turns it off, and a config without ``overload_manager`` leaves no action on
    and no process-wide connection limit."""
    cfg, port = http_proxy_config([upstream.address])

    def overload(threshold: float) -> dict[str, object]:
        return {
            "refresh_interval_ms": 100,
            "max_active_downstream_connections": 1000,
            "actions": [
                {
                    "name": "stop_accepting_requests",
                    "triggers": [{"name": "downstream_connections", "threshold": threshold}],
                }
            ],
        }

    cfg["overload_manager"] = overload(0.9)
    proxy = proxy_factory(cfg)

    def reload(doc: dict[str, object]) -> dict[str, float]:
        proxy.config_path.write_text(yaml.safe_dump(doc))
        r = httpx.post(proxy.admin_url + "/reload", timeout=5)
        assert r.status_code == 200, r.text
        return dict(proxy.stats()["overload"])

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        assert c.get("/a").status_code == 200
        assert proxy.stats()["overload"]["max_active_downstream_connections"] == 1000
        cfg["overload_manager"] = overload(0.001)  # this one connection is over it
        snap = reload(cfg)
        assert snap["stop_accepting_requests.active"] == 1, snap  # at once, not at the next refresh
        shed = c.get("/b")
        assert shed.status_code == 503 and shed.headers.get("x-envoy-overloaded") == "true", shed
        cfg["overload_manager"] = overload(0.5)
        snap = reload(cfg)
        assert snap["stop_accepting_requests.active"] == 0, snap
        assert c.get("/c").status_code == 200
        cfg["overload_manager"] = overload(0.001)
        reload(cfg)
        assert c.get("/d").status_code == 503
        del cfg["overload_manager"]
        snap = reload(cfg)
        assert "stop_accepting_requests.active" not in snap, snap
        assert snap["max_active_downstream_connections"] == 0, snap
        assert c.get("/e").status_code == 200
    assert proxy.stats()["listeners"]["web"]["downstream_rq_overload_shed"] == 2
