"""Pilot sends a route naming an unknown cluster (a third-party generator's mistake): the sidecar
NACKs it with an error naming the route and the cluster, Pilot records the NACK, and the previous
config keeps serving."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.core.catalog import Provenance
from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.app import Pilot, pilot_host
from sofamesh.pilot.config import parse
from sofamesh.pilot.xds.generator import LISTENER, NodeInfo, XdsResource
from sofamesh.testing import UpstreamServer, free_port
from tests.integration.xds.mesh import Sidecar, http_get, wait_for
from tests.integration.xds.tiny_ads import http_listener, route_config


class BadRoutes:
    """A listener whose inline route names cluster ``nope``, once ``armed``."""

    type_url = LISTENER

    def __init__(self) -> None:
        self.armed = False
        self.address = f"127.0.0.1:{free_port()}"

    def scope(self, node: NodeInfo) -> Hashable:
        return None

    def generate(self, mesh: Any, node: NodeInfo) -> Iterable[XdsResource]:
        if not self.armed:
            return []
        return [
            XdsResource(
                "acme-bad", http_listener("acme-bad", self.address, routes=route_config("acme-routes", [("/", "nope")]))
            )
        ]


class _Plugin:
    def __init__(self, gen: Any, name: str) -> None:
        self.gen = gen
        self.name = name

    @hookimpl
    def pilot_register_xds_generators(self, catalog: Any) -> None:
        catalog.add(self.name, self.gen)


class InProcessPilot:
    """Pilot with one extra generator plugin, in its own thread and event loop."""

    def __init__(self, data_dir: Path, gen: Any, name: str = "acme.bad-routes") -> None:
        host = pilot_host()
        host.register(_Plugin(gen, name), Provenance(name, "acme-test", "0"))
        self.pilot = Pilot(
            parse(
                {
                    "xds": {"address": "127.0.0.1:0"},
                    "api": {"address": "127.0.0.1:0"},
                    "data_dir": str(data_dir),
                    "debounce": {"quiet_ms": 20, "max_delay_ms": 200},
                    "grace_s": 0.2,
                }
            ),
            host,
        )
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self.pilot.start()
        self._ready.set()
        await self._stop.wait()
        await self.pilot.stop()

    def __enter__(self) -> InProcessPilot:
        self._thread.start()
        assert self._ready.wait(20), "pilot did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        self.loop.close()

    def push(self) -> None:
        self.loop.call_soon_threadsafe(self.pilot.ads.push)

    def api(self, method: str, path: str, **body: Any) -> Any:
        r = httpx.request(method, f"http://127.0.0.1:{self.pilot.api_port}{path}", json=body or None, timeout=5)
        r.raise_for_status()
        return r.json()


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("web-1") as up:
        yield up


def test_a_route_from_pilot_naming_an_unknown_cluster_is_nacked_and_the_previous_config_keeps_serving(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    gen = BadRoutes()
    with InProcessPilot(tmp_path / "data", gen) as pilot:
        host, port = upstream.address.rsplit(":", 1)
        pilot.api("PUT", "/v1/services/web/instances/w1", address=host, port=int(port), protocol="http")
        with Sidecar(pilot.pilot.xds_port, "app-nack") as sc:
            wait_for(lambda: sc.endpoints("|web") == {upstream.address}, 10, "web's endpoint")
            assert http_get(sc.egress("http"), "web")[1].split()[0] == b"web-1"
            applied = sc.dump()["xds"]["types"]["lds"]["version"]
            gen.armed = True
            pilot.push()
            nack = wait_for(lambda: sc.dump()["xds"]["last_nack"], 10, "the sidecar's NACK")
            assert nack["type"] == "lds"
            assert nack["error"] == "Listener 'acme-bad': route 'all/0': unknown cluster 'nope'"
            syncz = pilot.api("GET", "/debug/syncz")
            (node,) = [n for n in syncz["nodes"] if n["node"] == "app-nack"]
            assert node["types"]["lds"]["status"] == "NACKED"
            assert "unknown cluster 'nope'" in node["types"]["lds"]["last_nack"]["error"]
            # The previous config keeps serving: same LDS version, web still answers, no acme listener.
            xds = sc.dump()["xds"]
            assert xds["types"]["lds"]["version"] == applied
            assert "acme-bad" not in {lst["name"] for lst in sc.dump()["config"]["listeners"]}
            assert http_get(sc.egress("http"), "web")[1].split()[0] == b"web-1"
