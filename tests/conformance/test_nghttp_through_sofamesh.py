"""nghttp and h2load (Debian nghttp2-client, nghttp2's own HTTP/2 stack) through a sofamesh HTTP/2
listener to an HTTP/1 origin: the options that exercise HPACK, flow control, padding,
CONTINUATION and many streams, each checked against what the origin really answered."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port, pattern

NGHTTP, H2LOAD = shutil.which("nghttp"), shutil.which("h2load")


@pytest.fixture
def edge(proxy_factory: Callable[..., ProxyProcess]) -> Iterator[tuple[ProxyProcess, str, UpstreamServer]]:
    assert NGHTTP and H2LOAD, "nghttp and h2load are required (scripts/setup.d/22-http2-peers.sh installs them)"
    with UpstreamServer("origin") as origin:
        port = free_port()
        proxy = proxy_factory({
            "listeners": [{"name": "edge", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                           "routes": [{"cluster": "origin", "timeout_ms": 30000}]}],
            # The origin (http.server) accepts few connections at once: the pool keeps to 4.
            "clusters": [{"name": "origin", "protocol": "http1", "endpoints": [origin.address],
                          "circuit_breakers": {"max_connections": 4}}],
        })  # fmt: skip
        yield proxy, f"http://127.0.0.1:{port}", origin


def nghttp(*args: str) -> str:
    assert NGHTTP
    out = subprocess.run([NGHTTP, *args], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def stat_rows(out: str) -> list[tuple[str, str, str]]:
    """nghttp -s: one row per stream, "id responseEnd requestStart process code size path" ->
    (path, code, size), sorted."""
    return sorted((f[6], f[4], f[5]) for f in (line.split() for line in out.splitlines())
                  if len(f) == 7 and f[0].isdigit())  # fmt: skip


def test_many_streams_on_one_connection_and_a_zero_size_header_table(
    edge: tuple[ProxyProcess, str, UpstreamServer],
) -> None:
    proxy, url, origin = edge
    # -m 50: the same request 50 times at once on one connection; -c 0: our HPACK table must shrink to 0
    out = nghttp("-n", "-s", "-m", "50", "-c", "0", f"{url}/many")
    rows = stat_rows(out)
    assert rows == [("/many", "200", str(len("origin GET /many\n")))] * 50, out
    assert origin.paths["/many"] == 50
    st = proxy.stats()["listeners"]["edge"]
    assert st["downstream_cx_total"] == 1 and st["downstream_rq_2xx"] == 50


def test_our_zero_size_header_table_is_kept_by_nghttp2s_encoder(proxy_factory: Callable[..., ProxyProcess]) -> None:
    # hpack_table_size 0 (Envoy's field) is the SETTINGS_HEADER_TABLE_SIZE the listener sends. h2load
    # sends one request at a time on one connection (-m 1), so every block after the first follows
    # its acknowledgement: one that did not empty its table first, or indexed into it, would end the
    # connection with COMPRESSION_ERROR.
    assert H2LOAD, "h2load is required (scripts/setup.d/22-http2-peers.sh installs it)"
    with UpstreamServer("origin") as origin:
        port = free_port()
        proxy = proxy_factory({
            "listeners": [{"name": "edge", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                           "http2_protocol_options": {"hpack_table_size": 0},
                           "routes": [{"cluster": "origin", "timeout_ms": 30000}]}],
            "clusters": [{"name": "origin", "protocol": "http1", "endpoints": [origin.address]}],
        })  # fmt: skip
        out = subprocess.run([H2LOAD, "-n", "30", "-c", "1", "-m", "1", "-H", "x-tenant: " + "t" * 60,
                              f"http://127.0.0.1:{port}/table"], capture_output=True, text=True, timeout=120,
                             check=False)  # fmt: skip
        assert re.search(r"requests: 30 total, 30 started, 30 done, 30 succeeded, 0 failed", out.stdout), out.stdout
        assert origin.paths["/table"] == 30
        st = proxy.stats()["listeners"]["edge"]
        assert st["downstream_cx_total"] == 1 and st["downstream_rq_2xx"] == 30


def test_a_large_upload_with_padding_and_a_download_through_small_windows(
    edge: tuple[ProxyProcess, str, UpstreamServer],
    tmp_path: Path,
) -> None:
    _, url, _ = edge
    body = pattern(3 * 1024 * 1024 + 7)
    data = tmp_path / "body"
    data.write_bytes(body)
    # -b 200: up to 200 bytes of padding on every frame nghttp sends (padding is flow-controlled too)
    out = nghttp("-b", "200", "-d", str(data), f"{url}/echo")
    assert out.startswith(f"{len(body)} {hashlib.sha256(body).hexdigest()}\n"), out[:200]
    # -w 10 / -W 16: 1 KiB stream window, 64 KiB connection window for our DATA to nghttp
    n = 2 * 1024 * 1024
    got = subprocess.run([NGHTTP or "", "-w", "10", "-W", "16", f"{url}/big?n={n}"], capture_output=True,
                         timeout=120, check=False)  # fmt: skip
    assert got.returncode == 0, got.stderr[-2000:]
    assert len(got.stdout) == n and got.stdout == pattern(n)


def test_a_header_block_split_into_continuation_frames_reaches_the_origin(
    edge: tuple[ProxyProcess, str, UpstreamServer],
) -> None:
    _, url, _ = edge
    # --continuation: nghttp adds header fields of 4 KiB each until its block is over our 16 KiB frame
    # size, so it goes out as HEADERS + CONTINUATION
    args = ["--continuation", "-H", "x-trace: nghttp", "-d", "/dev/null", f"{url}/echo"]
    verbose = nghttp("-v", *args)
    [length] = [int(n) for n in re.findall(r"send HEADERS frame <length=(\d+)", verbose)]
    assert length > 16384, verbose[:2000]
    assert ":status: 200" in verbose
    body = nghttp(*args)  # the origin's echo of the request headers it got
    sent = re.findall(r";(continuation-test-\d+)=(-*)", body)
    assert len(sent) >= 4 and all(len(v) == 4096 for _, v in sent), [(k, len(v)) for k, v in sent]
    assert "x-trace=nghttp;" in body


def test_h2load_completes_every_request_over_many_streams(edge: tuple[ProxyProcess, str, UpstreamServer]) -> None:
    proxy, url, origin = edge
    assert H2LOAD
    out = subprocess.run([H2LOAD, "-n", "2000", "-c", "4", "-m", "16", f"{url}/load"], capture_output=True,
                         text=True, timeout=180, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  out.stdout)  # fmt: skip
    assert m is not None, out.stdout
    assert m.groups() == ("2000", "2000", "2000", "2000", "0", "0"), out.stdout
    assert re.search(r"status codes: 2000 2xx", out.stdout), out.stdout
    assert origin.paths["/load"] == 2000
    assert proxy.stats()["listeners"]["edge"]["downstream_cx_total"] == 4
