"""A write an existing Eureka, Nacos or Consul server refuses is a ``PluginError`` naming the
registry, the server, what was refused and the server's answer; an instance naming another service
is refused before anything is sent. The server is a real HTTP server on 127.0.0.1 that refuses
every write (503 and a body), as a server in maintenance does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiohttp import web

from sofamesh.core.errors import PluginError
from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.pilot.registry import Registry
from sofamesh.plugins.registries.consul.adapter import ConsulClusterRegistry
from sofamesh.plugins.registries.eureka.adapter import EurekaClusterRegistry
from sofamesh.plugins.registries.nacos.adapter import NacosClusterRegistry

# (the adapter, the words of a refused deregistration: None when it asks nothing for an instance
# it does not know, as Nacos's needs the registration's fields)
ADAPTERS: dict[str, tuple[Callable[[str], Registry], str | None]] = {
    "Eureka": (lambda url: EurekaClusterRegistry("corp", url), "to cancel"),
    "Nacos": (lambda url: NacosClusterRegistry("corp", url), None),
    "Consul": (lambda url: ConsulClusterRegistry("corp", url), "to deregister"),
}


async def _refusing_server() -> tuple[web.AppRunner, str, list[str]]:
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.Response(status=503, text="down for maintenance")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", seen


@pytest.mark.parametrize("server", sorted(ADAPTERS))
def test_a_refused_write_names_the_registry_the_server_the_instance_and_the_answer(server: str) -> None:
    make, cancel_words = ADAPTERS[server]

    async def main() -> None:
        runner, url, seen = await _refusing_server()
        adapter = make(url)
        svc = Service("orders", "http", (8080,))
        inst = ServiceInstance(service="orders", id="o-1", address="127.0.0.1", port=8080, health=Health.HEALTHY)
        try:
            with pytest.raises(PluginError) as info:
                await adapter.register(svc, inst)
            assert str(info.value) == f"registry 'corp': {server} refused orders/o-1: 503 down for maintenance"
            if cancel_words is None:
                sent = len(seen)
                assert await adapter.deregister("orders", "o-1") is False
                assert len(seen) == sent
            else:
                with pytest.raises(PluginError) as info:
                    await adapter.deregister("orders", "o-1")
                assert str(info.value) == (
                    f"registry 'corp': {server} refused {cancel_words} orders/o-1: 503 down for maintenance"
                )
            # nothing refused is taken for registered
            assert adapter.instances("orders") == ()
            sent = len(seen)
            other = ServiceInstance(service="payments", id="p-1", address="127.0.0.1", port=8080)
            with pytest.raises(PluginError, match="instance 'p-1' names service 'payments', not 'orders'"):
                await adapter.register(svc, other)
            assert len(seen) == sent  # refused before anything was sent
        finally:
            await adapter.stop()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 30))
