"""A Dubbo provider registered in Nacos the way Dubbo does it is the same Dubbo service as one from
the ZooKeeper Dubbo layout, and a Dubbo consumer reaches both through a sidecar.

Two npm @dubbo.ts providers of one interface, version and group: ``zkts`` publishes itself in a
real ZooKeeper through @dubbo.ts/zookeeper (the framework's own registry); ``nacosts`` is
registered in Pilot's Nacos v1 API by the npm nacos naming client as Dubbo's NacosRegistry does
(service ``providers:<interface>:<version>:<group>``, the provider URL's parameters as metadata),
since @dubbo.ts has no Nacos registry of its own. One Pilot reads both; a npm dubbo2.js consumer
that knows only its sidecar calls the interface and is answered by both providers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from sofamesh.plugins.registries.dubbo_params import parameter
from sofamesh.testing import free_port
from tests.conformance import dubbo_peers
from tests.conformance.registry_api_peers import NODE_MODULES as NACOS_MODULES
from tests.conformance.registry_api_peers import require_clients
from tests.integration.registries.servers import PilotWithConfig, ZooKeeperServer, wait_for, zookeeper
from tests.integration.xds.mesh import Sidecar

__all__ = ["zookeeper"]  # the fixture

IFACE = dubbo_peers.SERVICE
VERSION, GROUP = "1.0.0", "g1"
NACOS_NAME = f"providers:{IFACE}:{VERSION}:{GROUP}"
# parameters that differ between two providers by nature, not by the registry they came through
_PER_PROCESS = {"application", "pid", "timestamp"}


def instances(pilot: PilotWithConfig) -> dict[str, dict[str, Any]]:
    """The interface's instances in Pilot's model, by origin registry."""
    resp = httpx.get(f"{pilot.api_url}/v1/services/{IFACE}/instances", timeout=5)
    return {i["origin"]: i for i in resp.json()["instances"]} if resp.status_code == 200 else {}


def nacos_hosts(nacos: str) -> dict[int, dict[str, Any]]:
    """What a Nacos client listing the Dubbo service gets, by port."""
    resp = httpx.get(f"http://{nacos}/nacos/v1/ns/instance/list", params={"serviceName": NACOS_NAME}, timeout=5)
    resp.raise_for_status()
    return {h["port"]: h for h in resp.json()["hosts"]}


def whoami_providers(sidecar: Sidecar, n: int) -> list[str]:
    results = dubbo_peers.consume(
        sidecar.egress("dubbo"), [dubbo_peers.call("whoami", version=VERSION, group=GROUP, repeat=n)]
    )
    assert all(r["ok"] for r in results), results
    assert {(r["res"]["interface"], r["res"]["version"], r["res"]["group"]) for r in results} == {
        (IFACE, VERSION, GROUP)
    }
    return [str(r["res"]["provider"]) for r in results]


def test_a_dubbo_ts_provider_registered_in_nacos_the_dubbo_way_joins_the_zookeeper_one_behind_a_sidecar(
    tmp_path: Path, zookeeper: ZooKeeperServer
) -> None:
    dubbo_peers.require_dubbo_peers()
    require_clients()
    nacos = f"127.0.0.1:{free_port()}"
    pilot = PilotWithConfig(
        tmp_path / "pilot",
        [
            # leases far beyond the test: a provider is gone only by its deregistration (a loaded machine
            # can hold a beat back past the default 15 s)
            {"name": "nacos", "options": {"address": nacos, "heartbeat_timeout_s": 90, "ip_delete_timeout_s": 180}},
            {"name": "zk-dubbo", "type": "zookeeper", "options": {"hosts": zookeeper.hosts, "layout": "dubbo"}},
        ],
    )
    pilot.start()
    try:
        with (
            dubbo_peers.Provider("zkts", zookeeper=zookeeper.hosts, version=VERSION, group=GROUP) as zk_provider,
            dubbo_peers.Provider(
                "nacosts", nacos=nacos, nacos_modules=NACOS_MODULES, version=VERSION, group=GROUP
            ) as nacos_provider,
        ):
            seen = wait_for(lambda: len(instances(pilot)) == 2 and instances(pilot), 20, "both providers in Pilot")
            from_zk, from_nacos = seen["zk-dubbo"], seen["nacos"]
            assert (from_zk["port"], from_nacos["port"]) == (zk_provider.port, nacos_provider.port)
            # one Dubbo service, whichever registry the provider came through
            services = {s["name"]: s for s in httpx.get(f"{pilot.api_url}/v1/services", timeout=5).json()["services"]}
            assert services[IFACE]["protocol"] == "dubbo"
            assert NACOS_NAME not in services and f"{IFACE}:{VERSION}:{GROUP}" not in services
            for inst in (from_zk, from_nacos):
                assert (inst["service"], inst["address"], inst["version"], inst["group"]) == (
                    IFACE,
                    "127.0.0.1",
                    VERSION,
                    GROUP,
                )
                assert (inst["health"], inst["weight"]) == ("healthy", 100)
                assert inst["labels"]["protocol"] == "dubbo" and inst["labels"]["side"] == "provider"
            assert (from_zk["labels"]["application"], from_nacos["labels"]["application"]) == ("zkts", "nacosts")
            # the same labels from both layouts (what differs is per process: application, pid, timestamp)
            assert {k: v for k, v in from_nacos["labels"].items() if k not in _PER_PROCESS} == {
                k: v for k, v in from_zk["labels"].items() if k not in _PER_PROCESS
            }

            # the Nacos view: a Dubbo consumer on Nacos finds both, each as Dubbo's NacosRegistry reads it
            hosts = nacos_hosts(nacos)
            assert set(hosts) == {zk_provider.port, nacos_provider.port}
            for port, app in ((zk_provider.port, "zkts"), (nacos_provider.port, "nacosts")):
                meta = hosts[port]["metadata"]
                assert hosts[port]["healthy"] is True
                assert (meta["application"], meta["interface"], meta["path"], meta["protocol"]) == (
                    app,
                    IFACE,
                    IFACE,
                    "dubbo",
                )
                # (read as Dubbo's URL.getParameter does: @dubbo.ts writes the group as default.group)
                assert (parameter(meta, "version"), parameter(meta, "group"), meta["side"], meta["category"]) == (
                    VERSION,
                    GROUP,
                    "provider",
                    "providers",
                )
            assert hosts[zk_provider.port]["weight"] == hosts[nacos_provider.port]["weight"]

            # a dubbo2.js consumer that knows only its sidecar reaches both
            with Sidecar(pilot.xds_port, "dubbo-nacos-consumer") as sidecar:
                both = {zk_provider.address, nacos_provider.address}
                wait_for(lambda: sidecar.endpoints(f"|{IFACE}") == both, 20, "both in the sidecar's endpoints")
                assert set(whoami_providers(sidecar, 12)) == {"zkts", "nacosts"}
                # the Nacos-registered provider stops: it deregisters, and only the ZooKeeper one answers
                nacos_provider.stop()
                wait_for(lambda: set(instances(pilot)) == {"zk-dubbo"}, 20, "the deregistered provider gone")
                wait_for(lambda: sidecar.endpoints(f"|{IFACE}") == {zk_provider.address}, 10, "the sidecar follows")
                assert set(whoami_providers(sidecar, 6)) == {"zkts"}
                assert set(nacos_hosts(nacos)) == {zk_provider.port}
    finally:
        pilot.stop()
