"""WebSocket (HTTP/1.1 Upgrade) through the proxy from its YAML, with the ``websockets`` client and
server: messages both ways, past the route timeout, large ones; either side's close reaches the
other; a listener without ``upgrade_types`` answers 403."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sofamesh.testing import ProxyProcess, free_port
from tests.integration.websocket_peers import WsEcho, ws_connect


@pytest.fixture
def echo() -> Iterator[WsEcho]:
    e = WsEcho("up")
    try:
        yield e
    finally:
        e.stop()


def _config(echo: WsEcho, upgrades: list[str]) -> tuple[dict[str, object], int]:
    port = free_port()
    return {
        "listeners": [
            {
                "name": "web",
                "address": f"127.0.0.1:{port}",
                "protocols": ["http1"],
                "upgrade_types": upgrades,
                "routes": [{"name": "all", "cluster": "ws", "timeout_ms": 500}],
            }
        ],
        "clusters": [{"name": "ws", "endpoints": [f"127.0.0.1:{echo.port}"], "health": {"ejection_ms": 0}}],
    }, port


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_websocket_carries_messages_both_ways_past_the_route_timeout(
    echo: WsEcho, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = _config(echo, ["websocket"])
    proxy_factory(cfg)
    with ws_connect("ws://chat.example.com/room/1?x=2", "127.0.0.1", port) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "up:hello"
        ws.send("path:")
        assert ws.recv(timeout=5) == "up:/room/1?x=2"
        time.sleep(1.0)  # twice the route timeout: a tunnel is not timed out by its route
        big = "x" * 300_000
        ws.send(big)
        assert ws.recv(timeout=10) == "up:" + big
        assert echo.open == 1
        started = time.monotonic()
    assert time.monotonic() - started < 3  # the close handshake went through at once
    assert _wait(lambda: echo.open == 0)


def test_the_server_closing_the_websocket_closes_the_client_side(
    echo: WsEcho, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = _config(echo, ["websocket"])
    proxy_factory(cfg)
    with ws_connect("ws://chat.example.com/", "127.0.0.1", port) as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "up:one"
        echo.server.shutdown()  # the server closes its connections (close code 1001, going away)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1001


def test_a_listener_without_upgrade_types_answers_an_upgrade_with_403(
    echo: WsEcho, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = _config(echo, [])
    proxy_factory(cfg)
    with pytest.raises(InvalidStatus) as err:
        ws_connect("ws://chat.example.com/", "127.0.0.1", port)
    assert err.value.response.status_code == 403
    assert b"not allowed" in err.value.response.body
    assert echo.open == 0
