"""HTTP/1.1 through a running ``sofamesh proxy`` with real clients (httpx, http.client, curl, sockets)."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port, pattern
from tests.conftest import http_proxy_config

MiB = 1024 * 1024


def _raw(port: int, data: bytes, want: int = 1, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until ``want`` complete responses (by content-length) or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want and buf.count(b"HTTP/1.1 ") >= want and _complete(buf, want):
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


def _complete(buf: bytes, want: int) -> bool:
    pos = 0
    for _ in range(want):
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return False
        head = buf[pos:end].decode("latin-1").lower()
        n = 0
        for line in head.split("\r\n"):
            if line.startswith("content-length:"):
                n = int(line.split(":", 1)[1])
        if len(buf) < end + 4 + n:
            return False
        pos = end + 4 + n
    return True


def test_keep_alive_requests_reuse_one_upstream_connection(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        bodies = [c.get(f"/item/{i}").text for i in range(20)]
    assert bodies == [f"up-a GET /item/{i}\n" for i in range(20)]
    st = proxy.stats()
    assert st["listeners"]["web"]["downstream_cx_total"] == 1
    assert st["clusters"]["web"]["upstream_cx_total"] == 1
    assert st["clusters"]["web"]["upstream_rq_2xx"] == 20
    assert len(upstream.peers) == 1


def test_chunked_upload_of_several_mib_arrives_intact(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy_factory(cfg)
    data = pattern(6 * MiB + 123)

    def gen() -> Iterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    with httpx.Client(timeout=20) as c:
        r = c.post(f"http://127.0.0.1:{port}/echo", content=gen())
    assert r.status_code == 200
    n, digest = r.text.split("\n")[0].split()
    assert int(n) == len(data)
    assert digest == hashlib.sha256(data).hexdigest()


def test_content_length_upload_and_chunked_download_with_curl(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess], tmp_path) -> None:  # type: ignore[no-untyped-def]
    curl = shutil.which("curl")
    assert curl, "curl is required (scripts/setup.d/00-base.sh installs it)"
    cfg, port = http_proxy_config([upstream.address])
    proxy_factory(cfg)
    up = tmp_path / "up.bin"
    up.write_bytes(pattern(3 * MiB))
    out = subprocess.run([curl, "-sS", "--data-binary", f"@{up}", f"http://127.0.0.1:{port}/echo"],
                         capture_output=True, timeout=30, check=True).stdout.decode()
    assert out.split()[0] == str(3 * MiB)
    assert out.split()[1] == hashlib.sha256(pattern(3 * MiB)).hexdigest()
    down = tmp_path / "down.bin"
    subprocess.run([curl, "-sS", "-o", str(down), f"http://127.0.0.1:{port}/big?n={5 * MiB}"], timeout=30, check=True)
    assert down.read_bytes() == pattern(5 * MiB)


def test_forwarded_headers_are_added_and_hop_by_hop_headers_removed(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy_factory(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/echo", headers={"Keep-Alive": "timeout=5", "Connection": "keep-alive, x-secret",
                                          "X-Secret": "hop", "X-Forwarded-For": "10.1.1.1"})
    body = conn.getresponse().read().decode()
    conn.close()
    assert "x-forwarded-for=10.1.1.1, 127.0.0.1;" in body
    assert "x-forwarded-proto=http;" in body
    assert "keep-alive=" not in body and "x-secret=" not in body


def test_a_request_line_split_across_reads_is_http_on_a_listener_that_also_takes_tcp(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    """``tcp`` matches any bytes: it takes a connection only once the protocols before it cannot
    (``GE`` may still be HTTP/1), as on a gateway port that passes some TLS names through."""
    cfg, port = http_proxy_config([upstream.address], protocols=["http1", "tcp"])
    proxy_factory(cfg)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GE")
        time.sleep(0.3)
        s.sendall(b"T /echo HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200") and b"x-forwarded-proto=http;" in got, got[:300]


def test_slow_upstream_gets_504_after_the_route_timeout(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address], timeout_ms=300)
    proxy = proxy_factory(cfg)
    t0 = time.monotonic()
    r = httpx.get(f"http://127.0.0.1:{port}/slow?ms=3000", timeout=10)
    took = time.monotonic() - t0
    assert r.status_code == 504
    assert "timeout after 300 ms" in r.text
    assert took < 2.5
    assert proxy.stats()["listeners"]["web"]["downstream_rq_timeout"] == 1


def test_dead_upstream_and_reset_upstream_get_envoys_503(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cfg, port = http_proxy_config([upstream.address], extra_routes=[{"match": {"path": {"prefix": "/dead"}}, "cluster": "dead"}],
                                  extra_clusters=[{"name": "dead", "endpoints": [dead]}])
    proxy = proxy_factory(cfg)
    r = httpx.get(f"http://127.0.0.1:{port}/dead", timeout=5)
    assert r.status_code == 503
    assert f"connect to {dead} failed" in r.text
    assert "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure" in r.text
    r = httpx.get(f"http://127.0.0.1:{port}/reset", timeout=5)
    assert r.status_code == 503  # reset before the response head: Envoy's 503, flag UC
    assert r.text.startswith("upstream connect error or disconnect/reset before headers. reset reason: ")
    assert proxy.stats()["clusters"]["dead"]["upstream_cx_connect_fail"] >= 1


def test_a_failed_endpoint_is_skipped_for_a_healthy_one(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([f"127.0.0.1:{free_port()}", upstream.address])
    proxy_factory(cfg)
    with httpx.Client(timeout=5) as c:
        codes = [c.get(f"http://127.0.0.1:{port}/x").status_code for _ in range(10)]
    assert codes == [200] * 10


def test_malformed_request_gets_400_while_a_parallel_connection_keeps_working(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as good:
        assert good.get("/before").status_code == 200
        bad = _raw(port, b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400 ")
        assert b"malformed" in bad
        assert good.get("/after").text == "up-a GET /after\n"
    assert proxy.stats()["listeners"]["web"]["downstream_cx_protocol_error"] == 1


def test_oversized_header_block_is_rejected_with_431(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address], limits={"max_header_bytes": 1024})
    proxy_factory(cfg)
    resp = _raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 431 ")


def test_oversized_body_is_rejected_with_413(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address], limits={"max_body_bytes": 1000})
    proxy_factory(cfg)
    resp = _raw(port, b"POST /echo HTTP/1.1\r\nHost: a\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
    assert resp.startswith(b"HTTP/1.1 413 ")
    assert b"body over 1000 bytes" in resp


def test_pipelined_requests_are_answered_in_order(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy_factory(cfg)
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(5))
    resp = _raw(port, reqs + b"GET /slow?ms=200 HTTP/1.1\r\nHost: a\r\n\r\nGET /last HTTP/1.1\r\nHost: a\r\n\r\n", want=7)
    order = [line for line in resp.split(b"\n") if line.startswith(b"up-a") or line.startswith(b"slow")]
    assert order == [b"up-a GET /p0", b"up-a GET /p1", b"up-a GET /p2", b"up-a GET /p3", b"up-a GET /p4",
                     b"slow done", b"up-a GET /last"]


def test_http10_client_gets_a_close_delimited_or_sized_answer(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy_factory(cfg)
    resp = _raw(port, b"GET /old HTTP/1.0\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in resp.lower()
    assert resp.endswith(b"up-a GET /old\n")
    resp = _raw(port, b"GET /big?n=70000 HTTP/1.0\r\n\r\n", want=0)
    assert b"transfer-encoding" not in resp.lower()
    assert resp.split(b"\r\n\r\n", 1)[1] == pattern(70000)


def test_no_route_gives_404_with_a_clear_body(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    port = free_port()
    cfg = {"listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                          "routes": [{"match": {"path": {"prefix": "/api"}}, "cluster": "web"}]}],
           "clusters": [{"name": "web", "endpoints": [upstream.address]}]}
    proxy_factory(cfg)
    r = httpx.get(f"http://127.0.0.1:{port}/other", timeout=5)
    assert r.status_code == 404
    assert "no route for GET" in r.text and "/other" in r.text
    assert httpx.get(f"http://127.0.0.1:{port}/api/x", timeout=5).status_code == 200


def test_routes_match_host_method_and_headers_and_balance_round_robin(upstream: UpstreamServer, upstream_b: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    port = free_port()
    cfg = {"listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": "auto", "routes": [
        {"match": {"host": "b.example", "method": "GET"}, "cluster": "b"},
        {"match": {"headers": {"x-tenant": {"prefix": "gold"}}}, "cluster": "b"},
        {"cluster": "both"}]}],
        "clusters": [{"name": "b", "endpoints": [upstream_b.address]},
                     {"name": "both", "lb": "round_robin", "endpoints": [upstream.address, upstream_b.address]}]}
    proxy_factory(cfg)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=5) as c:
        assert c.get(base + "/h", headers={"host": "b.example:8080"}).text.startswith("up-b")
        assert c.get(base + "/t", headers={"x-tenant": "gold-1"}).text.startswith("up-b")
        names = [c.get(base + "/rr").text.split()[0] for _ in range(6)]
    assert sorted(names) == ["up-a"] * 3 + ["up-b"] * 3


def test_sigterm_during_a_slow_request_lets_it_complete(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg)
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["r"] = httpx.get(f"http://127.0.0.1:{port}/slow?ms=800", timeout=10)
        except Exception as exc:
            result["e"] = exc

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while upstream.requests < 1:  # the slow request is at the upstream: now stop the proxy
        assert time.monotonic() < deadline, "the request never reached the upstream"
        time.sleep(0.01)
    proxy.signal(signal.SIGTERM)
    t.join(10)
    assert "e" not in result, result
    r = result["r"]
    assert isinstance(r, httpx.Response) and r.status_code == 200 and r.text == "slow done\n"
    assert proxy.proc is not None and proxy.proc.wait(10) == 0
    assert "0 in-flight request(s) cut" in proxy.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/after", timeout=2)


def test_tcp_listener_passes_bytes_through_undecoded(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    port = free_port()
    cfg = {"listeners": [{"name": "raw", "address": f"127.0.0.1:{port}", "protocols": ["tcp"],
                          "routes": [{"cluster": "web"}]}],
           "clusters": [{"name": "web", "endpoints": [upstream.address]}]}
    proxy_factory(cfg)
    resp = _raw(port, b"GET /raw HTTP/1.1\r\nHost: a\r\nX-Untouched: yes\r\n\r\n")
    assert resp.endswith(b"up-a GET /raw\n")
    assert b"x-sofamesh" not in resp.lower()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_slows_the_upstream_and_memory_stays_bounded(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address], timeout_ms=0)
    proxy = proxy_factory(cfg)
    assert proxy.proc is not None
    before = _rss_kib(proxy.proc.pid)
    total = 300 * MiB
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % total)
        got = 0
        while got < MiB:
            got += len(s.recv(65536))
        time.sleep(1.5)  # stop reading: the proxy must stop reading from the upstream too
        stalled_at = upstream.big_sent
        time.sleep(0.5)
        assert upstream.big_sent - stalled_at < 4 * MiB, "the upstream kept sending to a client that does not read"
        grown = _rss_kib(proxy.proc.pid) - before
        assert upstream.big_sent < total / 4
        assert grown < 30 * 1024, f"proxy RSS grew by {grown} KiB while the client was not reading"
        s.settimeout(10)
        deadline = time.monotonic() + 60
        while got < total and time.monotonic() < deadline:  # now read it all: nothing was lost
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    assert got > total  # body plus chunk framing
