"""HTTP/1.1 ``Upgrade: h2c`` through the proxy from its YAML, to a real h2c server (hypercorn) with
curl ``--http2`` (which asks for the upgrade on ``http://``): a listener whose ``upgrade_types`` hold
``h2c`` tunnels it (the upstream's 101, then HTTP/2 both ways, several streams on the connection);
without it the request is served as HTTP/1.1, as Envoy serves it."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from sofamesh.testing import ProxyProcess, free_port
from tests.conftest import http_proxy_config


async def _app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = f"{scope['http_version']} {scope['method']} {scope['path']} {len(body)}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


class Hypercorn:
    """hypercorn serving ``_app`` on 127.0.0.1 in a thread of its own (h2c upgrade on, as by default)."""

    def __init__(self) -> None:
        self.port = free_port()
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(self._ready.set)
            try:
                self._loop.run_until_complete(serve(_app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def h2c() -> Iterator[Hypercorn]:
    server = Hypercorn()
    try:
        yield server
    finally:
        server.stop()


def _curl(port: int, *paths: str, extra: tuple[str, ...] = ()) -> list[str]:
    """One curl ``--http2`` run fetching ``paths`` on one connection: per path ``VERSION BODY``."""
    cmd = ["curl", "-sS", "--max-time", "10", "--http2", *extra]
    for p in paths:
        cmd += [
            "-w",
            "\n%{http_version} %{num_connects}\n",
            f"http://web.example.com:{port}{p}",
            "--resolve",
            f"web.example.com:{port}:127.0.0.1",
        ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def _wait_answers(port: int) -> None:
    for _ in range(100):
        try:
            _curl(port, "/ready")
            return
        except AssertionError:
            threading.Event().wait(0.1)
    raise AssertionError("the proxy or hypercorn never answered")


def test_an_allowed_h2c_upgrade_is_tunnelled_and_carries_http2_streams(
    h2c: Hypercorn, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([f"127.0.0.1:{h2c.port}"], upgrade_types=["websocket", "h2c"])
    proxy_factory(cfg)
    _wait_answers(port)
    # the upgrade's own request is stream 1; the next ones are new HTTP/2 streams on the same
    # connection (one connect): what only a tunnel to an HTTP/2 server can answer
    got = _curl(port, "/one", "/two", "/three")
    assert got == ["2 GET /one 0", "2 1", "2 GET /two 0", "2 0", "2 GET /three 0", "2 0"], got
    # an upgrade request with a body is served as HTTP/1.1, its body delivered, the connection kept
    got = _curl(port, "/first", "/post", extra=("-d", "x" * 1000))
    assert got == ["1.1 POST /first 1000", "1.1 1", "1.1 POST /post 1000", "1.1 0"], got


def test_without_the_allowance_an_h2c_upgrade_is_served_as_http11(
    h2c: Hypercorn, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([f"127.0.0.1:{h2c.port}"], upgrade_types=["websocket"])
    proxy_factory(cfg)
    _wait_answers(port)
    got = _curl(port, "/one", "/two")
    assert got == ["1.1 GET /one 0", "1.1 1", "1.1 GET /two 0", "1.1 0"], got
