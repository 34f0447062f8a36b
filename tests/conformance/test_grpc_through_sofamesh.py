"""Real grpcio client -> running sofamesh proxy (http2 listener and cluster) -> real grpcio server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator

import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.test_http2_peers import (
    ECHO,
    GRPC_CLIENT,
    Peer,
    check_grpc_results,
    run_program,
    start_peer,
    stop_peer,
)
from tests.conformance.test_http2_peers import GRPC_SERVER as SERVER


@pytest.fixture
def grpc_backend() -> Iterator[Peer]:
    peer = start_peer([sys.executable, str(SERVER)])
    yield peer
    stop_peer(peer)


def grpc_proxy(upstream: str, **route: object) -> tuple[dict[str, object], int]:
    port = free_port()
    return {
        "listeners": [{"name": "grpc", "address": f"127.0.0.1:{port}", "protocols": ["http2", "http1"],
                       "routes": [{"match": {"service": ECHO, "method": {"regex": "Unary|ServerStream|ClientStream|Bidi|Slow|Fail|Big"}},
                                   "cluster": "echo", **route}]}],
        "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [upstream]}],
    }, port


def test_every_kind_of_grpc_call_works_through_sofamesh(
        grpc_backend: Peer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = grpc_proxy(f"127.0.0.1:{grpc_backend.port}")
    proxy = proxy_factory(cfg)
    results = asyncio.run(run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{port}"], timeout=90))
    check_grpc_results(results)  # unary, server/client streaming, bidi, a 10 MiB message, deadline, error details
    st = proxy.stats()
    assert st["clusters"]["echo"]["upstream_cx_total"] == 1
    assert st["listeners"]["grpc"]["downstream_rq_total"] >= 6


def test_five_hundred_concurrent_calls_share_one_upstream_connection(grpc_backend: Peer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = grpc_proxy(f"127.0.0.1:{grpc_backend.port}")
    proxy = proxy_factory(cfg)
    results = asyncio.run(run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{port}", "many"], timeout=120))
    assert results["many"]["code"] == "OK" and results["many"]["replies"] == ["500 of 500 match"]
    st = proxy.stats()
    assert st["listeners"]["grpc"]["downstream_cx_total"] == 1
    assert st["clusters"]["echo"]["upstream_cx_total"] == 1


def test_route_timeout_gives_deadline_exceeded_and_a_down_server_unavailable(grpc_backend: Peer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = grpc_proxy(f"127.0.0.1:{grpc_backend.port}", timeout_ms=200)
    proxy_factory(cfg)
    results = asyncio.run(run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{port}", "slow", "unary"], timeout=60))
    assert results["slow"]["code"] == "DEADLINE_EXCEEDED"
    assert results["unary"]["code"] == "OK"
    cfg, port = grpc_proxy(f"127.0.0.1:{free_port()}")
    proxy_factory(cfg)
    results = asyncio.run(run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{port}", "unary"], timeout=60))
    assert results["unary"]["code"] == "UNAVAILABLE"


def test_http1_clients_reach_an_h2_only_upstream(proxy_factory: Callable[..., ProxyProcess]) -> None:
    """nghttpd would be the classic h2-only server; a hypercorn-free check uses the proxy itself:
    an HTTP/1 listener whose cluster speaks http2 to a second sofamesh listener that serves h2c
    in front of a plain HTTP/1 upstream."""
    import httpx

    from sofamesh.testing import UpstreamServer

    with UpstreamServer("h1-origin") as origin:
        h2_port, h1_port = free_port(), free_port()
        cfg = {
            "listeners": [
                {"name": "edge", "address": f"127.0.0.1:{h1_port}", "protocols": ["http1"], "routes": [{"cluster": "h2hop"}]},
                {"name": "h2only", "address": f"127.0.0.1:{h2_port}", "protocols": ["http2"], "routes": [{"cluster": "origin"}]},
            ],
            "clusters": [
                {"name": "h2hop", "protocol": "http2", "endpoints": [f"127.0.0.1:{h2_port}"]},
                {"name": "origin", "protocol": "http1", "endpoints": [origin.address]},
            ],
        }
        proxy = proxy_factory(cfg)
        with httpx.Client(timeout=10) as c:
            r = c.get(f"http://127.0.0.1:{h1_port}/via-h2")
            big = c.post(f"http://127.0.0.1:{h1_port}/echo", content=b"z" * (3 * 1024 * 1024))
        assert r.status_code == 200 and r.text == "h1-origin GET /via-h2\n"
        assert big.status_code == 200 and big.text.split()[0] == str(3 * 1024 * 1024)
        assert proxy.stats()["clusters"]["h2hop"]["upstream_cx_total"] == 1


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_grpc_client_that_stops_reading_stalls_its_stream_and_proxy_memory_stays_bounded(grpc_backend: Peer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    import h2.config
    import h2.connection
    import h2.events

    from tests.conformance.test_http2_peers import grpc_message_of, grpc_messages, within

    cfg, port = grpc_proxy(f"127.0.0.1:{grpc_backend.port}", timeout_ms=0)
    proxy = proxy_factory(cfg)
    assert proxy.proc is not None
    count, word = 60_000, "w" * 100  # about 6 MB of server-streamed messages: many windows
    before = _rss_kib(proxy.proc.pid)

    async def scenario() -> tuple[int, int, list[bytes]]:
        reader, writer = await within(asyncio.open_connection("127.0.0.1", port), 5)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", f"/{ECHO}/ServerStream"),
                                (":authority", "echo"), ("content-type", "application/grpc"), ("te", "trailers")])
        client.send_data(1, grpc_message_of(f"{count}:{word}".encode()), end_stream=True)
        writer.write(client.data_to_send())
        body = bytearray()
        ended = False

        async def read(acknowledge: bool, quiet: float) -> None:
            nonlocal ended
            while not ended:
                try:
                    data = await asyncio.wait_for(reader.read(65536), quiet)
                except TimeoutError:
                    return
                assert data, "proxy closed the connection"
                for ev in client.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        body.extend(ev.data)
                        if acknowledge:
                            client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended = True
                writer.write(client.data_to_send())

        await within(read(acknowledge=False, quiet=1.5), 30)
        stalled_at = len(body)
        grown = _rss_kib(proxy.proc.pid) - before  # type: ignore[union-attr]
        client.acknowledge_received_data(len(body), 1)
        writer.write(client.data_to_send())
        await within(read(acknowledge=True, quiet=15.0), 120)
        writer.close()
        return stalled_at, grown, grpc_messages(bytes(body))

    stalled_at, grown, messages = asyncio.run(scenario())
    assert stalled_at <= 65_535  # nothing was pushed past the client's window
    assert grown < 20 * 1024, f"proxy RSS grew by {grown} KiB while the client did not read"
    assert len(messages) == count and messages[-1] == f"{word}-{count - 1}".encode()


def test_dubbo3_triple_consumer_reaches_its_provider_through_sofamesh(proxy_factory: Callable[..., ProxyProcess]) -> None:
    from tests.conformance.test_http2_peers import (
        DUBBO_PYTHON,
        GREETER,
        TRIPLE_CONSUMER,
        TRIPLE_PROVIDER,
        check_triple_results,
        need,
    )

    need(DUBBO_PYTHON.exists(), "apache-dubbo 3.0.0b1 (.cache/venv-dubbo3)")
    provider_port = free_port()
    provider = start_peer([str(DUBBO_PYTHON), str(TRIPLE_PROVIDER), "--port", str(provider_port)])
    try:
        port = free_port()
        proxy = proxy_factory({
            "listeners": [{"name": "tri", "address": f"127.0.0.1:{port}", "protocols": "auto",
                           "routes": [{"match": {"service": GREETER}, "cluster": "greeter"}]}],
            "clusters": [{"name": "greeter", "protocol": "http2", "endpoints": [f"127.0.0.1:{provider.port}"]}],
        })
        results = asyncio.run(run_program([str(DUBBO_PYTHON), str(TRIPLE_CONSUMER), f"127.0.0.1:{port}"], timeout=90))
        check_triple_results(results)
        assert proxy.stats()["clusters"]["greeter"]["upstream_rq_total"] >= 2
    finally:
        stop_peer(provider)


def test_curl_and_nghttp_speak_h2c_through_sofamesh_to_an_h2_upstream(proxy_factory: Callable[..., ProxyProcess]) -> None:
    """curl --http2-prior-knowledge and nghttp (Debian nghttp2-client) -> sofamesh (h2c) -> an h2c hop
    (a second sofamesh listener) -> an HTTP/1 origin: HTTP/2 on both sides of the first proxy."""
    import shutil
    import subprocess

    from sofamesh.testing import UpstreamServer

    curl, nghttp = shutil.which("curl"), shutil.which("nghttp")
    assert curl and nghttp, "curl and nghttp are required (scripts/setup.d/22-http2-peers.sh installs them)"
    with UpstreamServer("origin") as origin:
        edge, hop = free_port(), free_port()
        proxy = proxy_factory({
            "listeners": [
                {"name": "edge", "address": f"127.0.0.1:{edge}", "protocols": ["http2"], "routes": [{"cluster": "hop"}]},
                {"name": "hop", "address": f"127.0.0.1:{hop}", "protocols": ["http2"], "routes": [{"cluster": "origin"}]},
            ],
            "clusters": [
                {"name": "hop", "protocol": "http2", "endpoints": [f"127.0.0.1:{hop}"]},
                {"name": "origin", "protocol": "http1", "endpoints": [origin.address]},
            ],
        })
        out = subprocess.run([curl, "-sS", "--http2-prior-knowledge", "-w", " %{http_version} %{http_code}",
                              f"http://127.0.0.1:{edge}/from-curl"], capture_output=True, text=True, timeout=30)
        assert out.stdout == "origin GET /from-curl\n 2 200", out.stderr
        out = subprocess.run([nghttp, "-n", "-s", f"http://127.0.0.1:{edge}/a", f"http://127.0.0.1:{edge}/b"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        # nghttp -s: one row per stream, "id responseEnd requestStart process code size path"
        rows = sorted((f[6], f[4], f[5]) for f in (line.split() for line in out.stdout.splitlines())
                      if len(f) == 7 and f[0].isdigit())
        body = len("origin GET /a\n")
        assert rows == [("/a", "200", str(body)), ("/b", "200", str(body))], out.stdout
        st = proxy.stats()
        assert st["listeners"]["edge"]["downstream_rq_2xx"] == 3
        assert st["clusters"]["hop"]["upstream_cx_total"] == 1  # both clients' streams share one h2 connection


def test_triple_version_and_group_headers_route_each_call_to_the_provider_they_name(
        proxy_factory: Callable[..., ProxyProcess]) -> None:
    """grpcio sends ``tri-service-version`` / ``tri-service-group`` metadata as a Dubbo 3 client does
    (apache-dubbo 3.0.0b1's own client sends neither: its request metadata has a TODO there); two
    apache-dubbo Triple providers of the same service are told apart by them."""
    import grpc

    from tests.conformance.test_http2_peers import DUBBO_PYTHON, GREETER, TRIPLE_PROVIDER, need

    need(DUBBO_PYTHON.exists(), "apache-dubbo 3.0.0b1 (.cache/venv-dubbo3)")
    providers = [start_peer([str(DUBBO_PYTHON), str(TRIPLE_PROVIDER), "--port", str(free_port()), "--name", name])
                 for name in ("v1-a", "v2-b")]
    try:
        port = free_port()
        proxy = proxy_factory({
            "listeners": [{"name": "tri", "address": f"127.0.0.1:{port}", "protocols": ["http2"], "routes": [
                {"match": {"service": GREETER, "version": "1.0.0", "group": "a"}, "cluster": "v1a"},
                {"match": {"service": GREETER, "version": "2.0.0", "group": "b"}, "cluster": "v2b"}]}],
            "clusters": [{"name": c, "protocol": "http2", "endpoints": [f"127.0.0.1:{p.port}"]}
                         for c, p in zip(("v1a", "v2b"), providers, strict=True)],
        })

        def whoami(meta: tuple[tuple[str, str], ...]) -> str:
            try:
                return bytes(call(b"", metadata=meta, timeout=10)).decode()
            except grpc.RpcError as err:
                return str(err.code().name)

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{GREETER}/whoami")
            v1a = (("tri-service-version", "1.0.0"), ("tri-service-group", "a"))
            v2b = (("tri-service-version", "2.0.0"), ("tri-service-group", "b"))
            crossed = (("tri-service-version", "1.0.0"), ("tri-service-group", "b"))
            answers = [whoami(m) for m in (v1a, v2b, v1a, v2b, crossed, ())]
        assert answers == ["v1-a", "v2-b", "v1-a", "v2-b", "UNIMPLEMENTED", "UNIMPLEMENTED"]
        clusters = proxy.stats()["clusters"]
        assert (clusters["v1a"]["upstream_rq_total"], clusters["v2b"]["upstream_rq_total"]) == (2, 2)
    finally:
        for p in providers:
            stop_peer(p)


def test_the_stream_idle_timeout_ends_each_silent_stream_alone_while_its_connection_keeps_serving(
        grpc_backend: Peer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    """Envoy's stream_idle_timeout judges each stream: on one grpcio channel, a call whose server
    stalls before answering gets DEADLINE_EXCEEDED, and a bidi call gone quiet after its first reply
    ends with DEADLINE_EXCEEDED trailers, about 2 s after their last event, while unary calls on
    the same HTTP/2 connection keep it busy and keep being answered."""
    import grpc

    cfg, port = grpc_proxy(f"127.0.0.1:{grpc_backend.port}", timeout_ms=0)
    cfg["listeners"][0]["stream_idle_timeout_ms"] = 2000  # type: ignore[index]
    proxy = proxy_factory(cfg)

    async def scenario() -> dict[str, object]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            unary = ch.unary_unary(f"/{ECHO}/Unary")
            assert await unary(b"warm", timeout=10) == b"echo:warm"
            t0 = asyncio.get_running_loop().time()
            stalled = asyncio.ensure_future(ch.unary_unary(f"/{ECHO}/Slow")(b"15000", timeout=30))
            bidi = ch.stream_stream(f"/{ECHO}/Bidi")(timeout=30)
            await bidi.write(b"one")
            first = await bidi.read()
            answered = 0
            while not stalled.done() and asyncio.get_running_loop().time() - t0 < 12:
                assert await unary(b"busy", timeout=10) == b"echo:busy"  # the connection serves on
                answered += 1
                await asyncio.sleep(0.2)
            with pytest.raises(grpc.aio.AioRpcError) as stalled_err:
                await stalled
            took = asyncio.get_running_loop().time() - t0
            with pytest.raises(grpc.aio.AioRpcError) as bidi_err:
                await bidi.read()
            after = await unary(b"after", timeout=10)
            return {"first": first, "answered": answered, "took": took, "stalled": stalled_err.value,
                    "bidi": bidi_err.value, "after": after}

    r = asyncio.run(scenario())
    assert r["first"] == b"bidi:one" and r["after"] == b"echo:after"
    for err in (r["stalled"], r["bidi"]):
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err  # type: ignore[attr-defined]
        assert "stream idle" in (err.details() or ""), err  # type: ignore[attr-defined]
    assert 1.9 <= r["took"] < 8, r  # the idle timeout (+ up to one 1 s sweep), not the server's 15 s
    assert r["answered"] >= 5, r  # unary calls kept the connection busy all along
    st = proxy.stats()["listeners"]["grpc"]
    assert st["downstream_rq_idle_timeout"] == 2, st
    assert st["downstream_cx_total"] == 1, st  # one connection: nothing was closed
