"""Three Pilot replicas sharing one store (a real etcd, a real ZooKeeper): registrations, policy and
CA state in the store, a real Envoy and two sofamesh sidecars given all three xDS addresses, HTTP
calls through all of them while each replica in turn is killed with SIGKILL and restarted."""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import UpstreamServer
from tests.integration.pilot.conftest import PilotProcess, wait_until
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.registries.servers import EtcdServer, ZooKeeperServer, etcd, zookeeper
from tests.integration.xds.mesh import Sidecar, Stream, http_get

__all__ = ["etcd", "zookeeper"]
SERVICE = "hello"
SUFFIX = f"|{SERVICE}"


def _store_config(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        ep = server.endpoint
        return {
            "registries": [
                {
                    "name": "mesh",
                    "type": "etcd",
                    "writable": True,
                    "options": {"endpoint": ep, "prefix": "/mesh/registry/", "leases": "instance"},
                }
            ],
            "config_store": {"type": "etcd", "options": {"endpoint": ep, "prefix": "/mesh/policy/"}},
            "ca": {"storage": {"type": "etcd", "options": {"endpoint": ep, "prefix": "/mesh/security/"}}},
        }
    zk: ZooKeeperServer = request.getfixturevalue("zookeeper")
    return {
        "registries": [
            {
                "name": "mesh",
                "type": "zookeeper",
                "writable": True,
                "options": {"hosts": zk.hosts, "layout": "sofa", "root": "/mesh", "registrations": "persistent"},
            }
        ],
        "config_store": {"type": "zookeeper", "options": {"hosts": zk.hosts, "root": "/mesh-policy"}},
        "ca": {"storage": {"type": "zookeeper", "options": {"hosts": zk.hosts, "root": "/mesh-security"}}},
    }


def _who(address: str) -> str:
    status, body = http_get(address, SERVICE, "/who", timeout=5)
    if status != 200:
        raise OSError(f"{status} {body[:200]!r}")
    return body.split()[0].decode()


def _envoy_who(envoy: Envoy) -> str:
    r = httpx.get(f"http://127.0.0.1:{envoy.outbound_port}/who", headers={"Host": SERVICE}, timeout=5)
    if r.status_code != 200:
        raise OSError(f"envoy {r.status_code} {r.text[:200]!r}")
    return r.text.split()[0]


def _envoy_endpoints(envoy: Envoy) -> set[str]:
    try:
        text = httpx.get(f"http://127.0.0.1:{envoy.admin_port}/clusters", timeout=5).text
    except httpx.HTTPError:  # not listening yet
        return set()
    out = set()
    for line in text.splitlines():  # outbound|80|hello::127.0.0.1:4242::health_flags::healthy
        parts = line.split("::")
        if len(parts) == 4 and parts[0].endswith(SUFFIX) and parts[2] == "health_flags":
            out.add(parts[1])
    return out


@pytest.mark.timeout(480)  # three Pilot restarts, Envoy and two sidecars: minutes on a loaded 2-core machine
# each store and each xDS transport once (the four pairs cost minutes each and add no other path)
@pytest.mark.parametrize(("kind", "transport"), [("etcd", "grpcio"), ("zookeeper", "native")])
def test_replicas_killed_one_at_a_time_under_traffic(kind: str, transport: str, request: pytest.FixtureRequest,
                                                     tmp_path: Path) -> None:
    config = _store_config(kind, request)
    pilots = [PilotProcess(tmp_path / f"pilot-{i}", config=config, ready_timeout=90, transport=transport)
              for i in range(3)]
    ports = [p.xds_port for p in pilots]
    providers: dict[str, UpstreamServer] = {}
    sidecars: list[Sidecar] = []
    envoy: Envoy | None = None
    with ExitStack() as stack:
        for p in pilots:
            stack.callback(p.stop)
            p.start()

        def add(name: str, via: PilotProcess) -> str:
            up = providers[name] = UpstreamServer(name).__enter__()
            stack.callback(up.__exit__)
            host, port = up.address.rsplit(":", 1)
            via.register(SERVICE, name, address=host, port=int(port), protocol="http")
            return up.address

        add("p0", pilots[0])
        add("p1", pilots[1])
        # each sidecar is given all three, in a different order; Envoy a cluster of all three
        sidecars = [
            Sidecar(ports[i], f"app-{i}", more_xds_ports=[ports[(i + 1) % 3], ports[(i + 2) % 3]]) for i in (0, 1)
        ]
        for sc in sidecars:
            stack.callback(sc.stop)
            sc.start()
        envoy = Envoy(tmp_path, pilots[2], "GRPC", xds_ports=ports)
        stack.callback(envoy.stop)
        live = {providers[n].address for n in providers}
        for sc in sidecars:
            wait_until(lambda sc=sc: sc.endpoints(SUFFIX) == live, 15, what="both providers in a sidecar")
        wait_until(lambda: _envoy_endpoints(envoy) == live, 30, what=f"both providers in Envoy ({envoy.log})")

        def batch() -> tuple[list[str], list[str]]:
            served, failed = [], []
            for call in [*(lambda sc=sc: _who(sc.egress("http")) for sc in sidecars), lambda: _envoy_who(envoy)]:
                try:
                    served.append(call())
                except (OSError, httpx.HTTPError) as exc:
                    failed.append(f"{type(exc).__name__}: {exc}")
            return served, failed

        reach: list[float] = []
        with Stream(batch) as stream:
            stream.wait_served("p0", "p1")
            for i, victim in enumerate(pilots):
                assert victim.proc is not None
                victim.proc.kill()  # SIGKILL: no goodbye on any stream
                victim.proc.wait(10)
                killed = time.monotonic()
                # every sofamesh sidecar is on another replica within 5 s
                dead = f"127.0.0.1:{victim.xds_port}"
                for sc in sidecars:
                    wait_until(
                        lambda sc=sc, dead=dead: sc.dump()["xds"]["connected"] and sc.dump()["xds"]["server"] != dead,
                        10,
                        what="the sidecar on another replica",
                    )
                assert time.monotonic() - killed < 5
                # a registration through a surviving replica reaches every proxy
                via = pilots[(i + 1) % 3]
                address = add(f"n{i}", via)
                added = time.monotonic()
                live.add(address)
                for sc in sidecars:
                    wait_until(lambda sc=sc: sc.endpoints(SUFFIX) == live, 10, interval=0.02, what=f"n{i} in a sidecar")
                reach.append(time.monotonic() - added)
                wait_until(lambda: _envoy_endpoints(envoy) == live, 30, what=f"n{i} in Envoy")
                victim.start()  # same ports, same store: it reads everything back
                stream.wait_batches(2)
            stream.wait_served(*providers)
        assert stream.failures == [], stream.failures[:10]
        assert stream.batches > 10
        # one registration per kill, each through a surviving replica: sidecars had it within 1 s
        assert statistics.median(reach) < 1.0, reach
        assert max(reach) < 3.0, reach  # margin for a loaded machine; the median is the goal
        # no registered instance lost: every replica lists all of them
        for p in pilots:
            listed = {f"{i['address']}:{i['port']}" for i in p.get(f"/v1/services/{SERVICE}/instances")["instances"]}
            assert listed == live, (p.api_url, listed)

        # every proxy converges to the same config version, whichever replica it is on
        def versions() -> set[tuple[str, str]]:
            return {
                (sc.dump()["xds"]["types"]["cds"]["version"], sc.dump()["xds"]["types"]["eds"]["version"])
                for sc in sidecars
            }

        wait_until(lambda: len(versions()) == 1, 10, what="the sidecars on one config version")
        for sc in sidecars:
            xds = sc.dump()["xds"]
            assert xds["last_nack"] is None, xds["last_nack"]
            assert xds["failovers"] >= 1
        stats = envoy.stats()
        assert {v for k, v in stats.items() if k.endswith(".update_rejected")} == {0}
        # one CA root for all of them
        serials = {p.get("/debug/ca")["ca"]["signer"]["serial"] for p in pilots}
        assert len(serials) == 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_registry_sync_runs_on_the_one_elected_replica(kind: str, request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    server: EtcdServer = request.getfixturevalue("etcd")
    ep = server.endpoint
    if kind == "etcd":
        election: dict[str, Any] = {"type": "etcd", "ttl_s": 3, "options": {"endpoint": ep, "key": "/mesh/leader"}}
    else:
        zk: ZooKeeperServer = request.getfixturevalue("zookeeper")
        election = {"type": "zookeeper", "ttl_s": 3, "options": {"hosts": zk.hosts, "path": "/mesh/leader"}}
    config = {"registries": [
        {"name": "src", "type": "etcd", "writable": True,
         "options": {"endpoint": ep, "prefix": "/src/", "leases": "instance"}},
        {"name": "dst", "type": "etcd", "options": {"endpoint": ep, "prefix": "/dst/", "leases": "instance"}}],
        "sync": {"pairs": [{"from": "src", "to": "dst"}], "resync_interval_s": 1, "election": election}}
    pilots = [PilotProcess(tmp_path / f"pilot-{i}", config=config, ready_timeout=90) for i in range(2)]
    with ExitStack() as stack:
        for p in pilots:
            stack.callback(p.stop)
            p.start()

        def leaders() -> list[PilotProcess]:
            return [p for p in pilots if p.proc is not None and p.get("/debug/sync")["running"]]

        [leader] = wait_until(lambda: len(leaders()) == 1 and leaders(), 15, what="one elected replica")
        assert leader.get("/debug/sync")["election"]["leader"] is True

        def copied(p: PilotProcess, iid: str) -> bool:
            dst = next(r for r in p.get("/debug/registry")["registries"] if r["name"] == "dst")
            return any(i["id"] == iid for insts in dst["services"].values() for i in insts)

        pilots[0].register("web", "a", address="127.0.0.1", port=9001, protocol="http")
        for p in pilots:
            wait_until(lambda p=p: copied(p, "a"), 10, what="the copy in dst, seen by every replica")
        other = next(p for p in pilots if p is not leader)
        assert other.get("/debug/sync")["passes"] == 0  # the one not elected never ran a pass
        assert leader.proc is not None
        leader.proc.kill()  # SIGKILL: its lease (etcd) or session (ZooKeeper) runs out
        leader.proc.wait(10)
        leader.proc = None
        killed = time.monotonic()
        wait_until(lambda: other.get("/debug/sync")["running"], 30, what="the other replica elected")
        took = time.monotonic() - killed
        assert took < 15, took  # the lease TTL / session timeout, plus a loaded machine's margin
        other.register("web", "b", address="127.0.0.1", port=9002, protocol="http")
        wait_until(lambda: copied(other, "b"), 10, what="the new leader copying")
