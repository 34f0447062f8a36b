"""Consul HTTP and TCP checks run by Pilot at their interval against real sockets on 127.0.0.1: the
status (passing / warning / critical) shows in the agent and health APIs and as the instance's
health in the mesh model (EDS health); a check critical for ``DeregisterCriticalServiceAfter``
deregisters its service; ``FailuresBeforeCritical`` holds a failure back; bad check fields are
refused by name."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiohttp import web

from sofamesh.pilot.model import Health
from sofamesh.plugins.registries.consul.api import ConsulRegistry


class Target:
    """An HTTP server whose answer the test sets, and counts the checks it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.hits = 0
        self.headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.hits += 1
            self.headers.append(dict(request.headers))
            return web.Response(status=self.status, text=f"status {self.status}")

        app = web.Application()
        app.router.add_route("*", "/health", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (plain or async) until it returns something true."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def _run(body: Callable[[httpx.AsyncClient, ConsulRegistry, Target], Awaitable[None]]) -> None:
    async def main() -> None:
        registry = ConsulRegistry("consul", None, address="127.0.0.1:0", reap_interval=0.1)
        target = Target()
        await target.start()
        await registry.start(registry.mesh.refresh)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{registry.port}", timeout=5) as http:
                await body(http, registry, target)
        finally:
            await registry.stop()
            await target.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def _health(registry: ConsulRegistry, service: str) -> Health | None:
    insts = registry.mesh.instances(service)
    return insts[0].health if insts else None


def test_http_checks_run_at_their_interval_and_their_status_shows_everywhere() -> None:
    async def body(http: httpx.AsyncClient, reg: ConsulRegistry, target: Target) -> None:
        check = {
            "HTTP": f"http://127.0.0.1:{target.port}/health",
            "Interval": "1s",
            "Timeout": "2s",
            "Method": "POST",
            "Header": {"X-Probe": ["a", "b"]},
        }
        resp = await http.put(
            "/v1/agent/service/register", json={"Name": "web", "ID": "web-1", "Port": target.port, "Check": check}
        )
        assert resp.status_code == 200, resp.text

        async def status() -> str:
            return str((await http.get("/v1/agent/checks")).json()["service:web-1"]["Status"])

        async def passing_ids() -> list[str]:
            rows = (await http.get("/v1/health/service/web", params={"passing": "1"})).json()
            return [r["Service"]["ID"] for r in rows]

        # the first run is at once: passing, healthy in the model, listed as passing
        await until(lambda: _health(reg, "web") is Health.HEALTHY, 5, "healthy")
        assert await status() == "passing" and await passing_ids() == ["web-1"]
        checks = (await http.get("/v1/agent/checks")).json()
        assert checks["service:web-1"]["Type"] == "http" and "200 OK" in checks["service:web-1"]["Output"]
        assert target.headers[0]["X-Probe"] == "a, b" and target.headers[0]["User-Agent"] == "Consul Health Check"
        # at its interval: about one run a second
        hits = target.hits
        await asyncio.sleep(3.2)
        assert 2 <= target.hits - hits <= 5, target.hits - hits
        # 500: critical, unhealthy (EDS health), not passing
        target.status = 500
        await until(lambda: _health(reg, "web") is Health.UNHEALTHY, 5, "unhealthy")
        assert await status() == "critical" and await passing_ids() == []
        assert "500" in (await http.get("/v1/agent/checks")).json()["service:web-1"]["Output"]
        # 429: warning, which Consul still routes to (healthy) but is not "passing"
        target.status = 429
        await until(status, 5, "a new status")
        await until(lambda: _health(reg, "web") is Health.HEALTHY, 5, "healthy on warning")
        assert await status() == "warning" and await passing_ids() == []
        # the target gone: critical with the connection error
        await target.stop()
        await until(lambda: _health(reg, "web") is Health.UNHEALTHY, 5, "unhealthy when down")
        out = (await http.get("/v1/agent/checks")).json()["service:web-1"]["Output"]
        assert str(target.port) in out, out
        # deregistered: its check no longer runs
        assert (await http.put("/v1/agent/service/deregister/web-1")).status_code == 200
        runs = reg.checks.runs
        await asyncio.sleep(2.5)
        assert reg.checks.runs - runs <= 1

    _run(body)


def test_tcp_checks_failures_before_critical_and_deregister_critical_service_after() -> None:
    async def body(http: httpx.AsyncClient, reg: ConsulRegistry, target: Target) -> None:
        accepted = 0

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        check = {
            "TCP": f"127.0.0.1:{port}",
            "Interval": "1s",
            "Timeout": "1s",
            "FailuresBeforeCritical": 2,
            "DeregisterCriticalServiceAfter": "2s",
        }
        resp = await http.put(
            "/v1/agent/service/register", json={"Name": "db", "ID": "db-1", "Port": port, "Check": check}
        )
        assert resp.status_code == 200, resp.text
        await until(lambda: _health(reg, "db") is Health.HEALTHY, 5, "healthy")
        checks = (await http.get("/v1/agent/checks")).json()
        assert checks["service:db-1"]["Output"] == f"TCP connect 127.0.0.1:{port}: Success"
        assert accepted >= 1
        server.close()
        await server.wait_closed()
        closed_at = time.monotonic()
        # one refused connection is held back; the second makes it critical
        await until(lambda: _health(reg, "db") is Health.UNHEALTHY, 6, "unhealthy")
        assert time.monotonic() - closed_at >= 1.0
        # critical for 2 s: deregistered
        await until(lambda: not reg.mesh.instances("db"), 8, "deregistered")
        assert (await http.get("/v1/agent/services")).json() == {}

    _run(body)


def test_bad_check_fields_are_refused_by_name_and_the_others_keep_running() -> None:
    async def body(http: httpx.AsyncClient, reg: ConsulRegistry, target: Target) -> None:
        good = {"HTTP": f"http://127.0.0.1:{target.port}/health", "Interval": "1s"}
        assert (
            await http.put("/v1/agent/service/register", json={"Name": "web", "ID": "w", "Port": 80, "Check": good})
        ).status_code == 200
        for check, words in (
            ({"HTTP": "http://127.0.0.1:1/"}, "Check.Interval: Interval must be > 0"),
            ({"TCP": "localhost", "Interval": "1s"}, "Check.TCP: 'localhost' is not host:port"),
            ({"HTTP": "ftp://x/", "Interval": "1s"}, "Check.HTTP"),
            ({"HTTP": "http://x/", "Interval": "soon"}, "Check.Interval: invalid duration"),
            ({"TCP": "127.0.0.1:1", "Interval": "1s", "FailuresBeforeCritical": -1}, "Check.FailuresBeforeCritical"),
            ({"TCP": "127.0.0.1:1", "Interval": "1s", "Status": "fine"}, "Check.Status"),
        ):
            resp = await http.put(
                "/v1/agent/service/register", json={"Name": "bad", "ID": "b", "Port": 80, "Check": check}
            )
            assert resp.status_code == 400 and words in resp.text, (check, resp.text)
        hits = target.hits
        await until(lambda: target.hits > hits + 1, 5, "the good check still running")
        assert [i.id for i in reg.mesh.instances("web")] == ["w"] and not reg.mesh.instances("bad")

    _run(body)
