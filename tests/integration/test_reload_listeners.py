"""Server.apply on a running proxy: endpoint-only changes touch no connection, a changed listener
drains its old connections while new ones get the new config, listeners come and go, and a
config that cannot bind changes nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sofamesh.core.config.loader import from_mapping
from sofamesh.core.config.model import ProxyConfig
from sofamesh.core.errors import ConfigErrors
from sofamesh.core.server import Server
from sofamesh.testing import UpstreamServer, free_port, no_logged_tracebacks


def _config(listeners: list[dict[str, Any]], clusters: dict[str, list[str]]) -> ProxyConfig:
    return from_mapping({"admin": None, "drain_timeout_ms": 3000, "listeners": listeners,
                         "clusters": [{"name": n, "endpoints": eps} for n, eps in clusters.items()]})


def _listener(address: str, cluster: str, name: str = "in", **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": address, "protocols": ["http1"], "routes": [{"cluster": cluster}], **extra}


class Conn:
    """One keep-alive HTTP/1.1 connection to the proxy."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str = "/who") -> tuple[str, dict[str, str]]:
        if self.writer is None:
            host, port = self.address.rsplit(":", 1)
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), 10)
        return body.decode().split()[0], headers

    async def closed_by_peer(self) -> bool:
        assert self.reader is not None
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _run(test: Callable[[Server, dict[str, UpstreamServer]], Awaitable[None]], first: Callable[..., ProxyConfig]
         ) -> None:
    with UpstreamServer("a") as a, UpstreamServer("b") as b:
        ups = {"a": a, "b": b}

        async def main() -> None:
            server = Server(first(ups))
            await server.start()
            try:
                await asyncio.wait_for(test(server, ups), 30)
            finally:
                await server.shutdown()

        with no_logged_tracebacks():  # the rule ProxyProcess applies to a proxy in a subprocess
            asyncio.run(main())


def test_an_endpoint_only_change_touches_neither_the_client_nor_the_kept_upstream_connection() -> None:
    address = f"127.0.0.1:{free_port()}"

    def first(ups: dict[str, UpstreamServer]) -> ProxyConfig:
        return _config([_listener(address, "c")], {"c": [ups["a"].address]})

    async def test(server: Server, ups: dict[str, UpstreamServer]) -> None:
        conn = Conn(address)
        assert (await conn.get())[0] == "a"
        cluster, rt = server.clusters["c"], server.listeners["in"].rt  # rt: its counters carry on
        pool = next(iter(cluster.pools.values()))
        server.apply(_config([_listener(address, "c")], {"c": [ups["a"].address, ups["b"].address]}))
        served = [(await conn.get())[0] for _ in range(4)]
        assert sorted(served) == ["a", "a", "b", "b"]
        assert server.clusters["c"] is cluster
        assert cluster.pools[(ups["a"].address, "http1")] is pool
        assert rt.stats.downstream_cx_total == 1  # the same client connection all along
        assert len(ups["a"].peers) == 1  # and the same upstream connection to the kept endpoint
        conn.close()

    _run(test, first)


def test_a_changed_listener_drains_its_old_connections_while_new_ones_get_the_new_config() -> None:
    address = f"127.0.0.1:{free_port()}"

    def first(ups: dict[str, UpstreamServer]) -> ProxyConfig:
        return _config([_listener(address, "ca")], {"ca": [ups["a"].address], "cb": [ups["b"].address]})

    async def test(server: Server, ups: dict[str, UpstreamServer]) -> None:
        old = Conn(address)
        assert (await old.get())[0] == "a"
        slow = asyncio.ensure_future(old.get("/slow?ms=600"))
        await asyncio.sleep(0.2)  # the slow request is at the upstream
        changed = _listener(address, "cb", limits={"max_header_bytes": 32 * 1024})
        server.apply(_config([changed], {"ca": [ups["a"].address], "cb": [ups["b"].address]}))
        new = Conn(address)
        assert (await new.get())[0] == "b"
        who, headers = await slow  # the in-flight request finished on the old config ...
        assert (who, headers.get("connection")) == ("slow", "close")
        assert await old.closed_by_peer()  # ... and then its connection closed
        assert (await new.get())[0] == "b"
        new.close()
        old.close()

    _run(test, first)


def test_listeners_are_added_and_removed_by_a_reload() -> None:
    one, two = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

    def first(ups: dict[str, UpstreamServer]) -> ProxyConfig:
        return _config([_listener(one, "c")], {"c": [ups["a"].address]})

    async def test(server: Server, ups: dict[str, UpstreamServer]) -> None:
        server.apply(_config([_listener(one, "c"), _listener(two, "c", name="second")], {"c": [ups["a"].address]}))
        await asyncio.sleep(0.05)
        c2 = Conn(two)
        assert (await c2.get())[0] == "a"
        c2.close()
        server.apply(_config([_listener(two, "c", name="second")], {"c": [ups["a"].address]}))
        await asyncio.sleep(0.05)
        with pytest.raises(OSError):
            await Conn(one).get()
        assert sorted(server.listeners) == ["second"]

    _run(test, first)


def test_a_reload_that_cannot_bind_changes_nothing() -> None:
    address = f"127.0.0.1:{free_port()}"
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = f"127.0.0.1:{blocker.getsockname()[1]}"

    def first(ups: dict[str, UpstreamServer]) -> ProxyConfig:
        return _config([_listener(address, "c")], {"c": [ups["a"].address]})

    async def test(server: Server, ups: dict[str, UpstreamServer]) -> None:
        version = server.config_version
        with pytest.raises(ConfigErrors, match=r"listeners\[1\]\.address: cannot listen on"):
            server.apply(_config([_listener(address, "c"), _listener(taken, "c", name="x")],
                                 {"c": [ups["b"].address]}))
        assert server.config_version == version and sorted(server.listeners) == ["in"]
        conn = Conn(address)
        assert (await conn.get())[0] == "a"
        conn.close()

    try:
        _run(test, first)
    finally:
        blocker.close()
