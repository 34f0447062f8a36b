"""The mesh with real RPC peers: Pilot + two sofamesh sidecars configured over xDS; sofa-rpc-node
and dubbo2.js consumers call by service name through their sidecar's egress listener (Bolt,
Dubbo) while @dubbo.ts / sofa-rpc-node providers scale up and down and Pilot goes away."""

from __future__ import annotations

from pathlib import Path

from tests.conformance import bolt_peers, dubbo_peers
from tests.integration.xds.mesh import Sidecar, scaling_scenario

ECHO = "com.example.EchoService"


class _BoltProvider:
    def __init__(self, name: str) -> None:
        bolt_peers.require_node()
        port = bolt_peers.free_port()
        self.name = name
        self.peer = bolt_peers.Peer(["node", "-r", str(bolt_peers.PEERS / "loopback.js"),
                                     str(bolt_peers.PEERS / "provider.js"), str(port), ECHO, name], port)
        self.address = self.peer.address

    def stop(self) -> None:
        self.peer.stop()


class _DubboProvider:
    def __init__(self, name: str) -> None:
        dubbo_peers.require_dubbo_peers()
        self.name = name
        self.provider = dubbo_peers.Provider(name)
        self.address = self.provider.address

    def stop(self) -> None:
        self.provider.stop()


def _bolt_batch(sidecars: list[Sidecar]) -> tuple[list[str], list[str]]:
    servers, failures = [], []
    for sc in sidecars:
        for r in bolt_peers.node_consumer(sc.egress("bolt"), ECHO, [{"method": "whoami"}] * 6):
            if r.get("ok"):
                servers.append(str(r["result"]))
            else:
                failures.append(f"{sc.egress('bolt')}: {r}")
    return servers, failures


def _dubbo_batch(sidecars: list[Sidecar]) -> tuple[list[str], list[str]]:
    servers, failures = [], []
    for sc in sidecars:
        for r in dubbo_peers.consume(sc.egress("dubbo"), [dubbo_peers.call("whoami", repeat=6)]):
            if r.get("ok"):
                servers.append(str(r["res"]["provider"]))
            else:
                failures.append(f"{sc.egress('dubbo')}: {r}")
    return servers, failures


# Each ADS mode with each protocol would double a slow test; the HTTP test runs both modes.
def test_sofa_rpc_node_calls_by_service_name_survive_scaling_and_a_pilot_restart(tmp_path: Path) -> None:
    bolt_peers.require_node()
    stream = scaling_scenario(tmp_path / "data", "sotw", f"{ECHO}:1.0", "bolt", _BoltProvider, _bolt_batch)
    assert stream.failures == []
    assert set(stream.served) == {"p1", "p2", "p3", "p4"}


def test_dubbo2js_calls_by_service_name_survive_scaling_and_a_pilot_restart_over_delta_xds(tmp_path: Path) -> None:
    dubbo_peers.require_dubbo_peers()
    stream = scaling_scenario(tmp_path / "data", "delta", dubbo_peers.SERVICE, "dubbo", _DubboProvider,
                              _dubbo_batch, register={"version": "1.0.0"})
    assert stream.failures == []
    assert set(stream.served) == {"p1", "p2", "p3", "p4"}


def test_dubbo2js_calls_reach_only_the_providers_of_the_version_they_ask_for(tmp_path: Path) -> None:
    from tests.integration.pilot.conftest import PilotProcess
    from tests.integration.xds.mesh import wait_for

    dubbo_peers.require_dubbo_peers()
    pilot = PilotProcess(tmp_path / "data").start()
    providers = {v: _DubboProvider(f"v{v}") for v in ("1.0.0", "2.0.0")}
    try:
        for v, p in providers.items():
            host, port = p.address.rsplit(":", 1)
            pilot.register(dubbo_peers.SERVICE, p.name, address=host, port=int(port), protocol="dubbo", version=v)
        with Sidecar(pilot.xds_port, "app-versions") as sc:
            wait_for(lambda: len([c for c in sc.dump()["config"]["clusters"] if dubbo_peers.SERVICE in c["name"]]) == 3,
                     10, "the service's cluster and its two version subsets")
            calls = [dubbo_peers.call("whoami", version=v, repeat=6) for v in ("1.0.0", "2.0.0")]
            results = dubbo_peers.consume(sc.egress("dubbo"), calls)
        assert all(r["ok"] for r in results), results
        served = [(r["res"]["version"], r["res"]["provider"]) for r in results]
        assert served == [("1.0.0", "v1.0.0")] * 6 + [("2.0.0", "v2.0.0")] * 6
    finally:
        pilot.stop()
        for p in providers.values():
            p.stop()
