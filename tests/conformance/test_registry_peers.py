"""Registry plugins against real framework clients and a real ZooKeeper:

- a npm sofa-rpc-node 2.10.0 provider publishing itself in ZooKeeper is discovered by Pilot (SOFA RPC
  layout), and the discovered endpoint answers a sofa-rpc-node consumer;
- a npm @dubbo.ts provider publishing itself in ZooKeeper through its own registry
  (@dubbo.ts/zookeeper, Dubbo layout) is discovered by Pilot, and a npm dubbo2.js consumer that
  knows only its sidecar calls it through the sidecar;
- a service registered through Pilot's Open Service Registry API lands in ZooKeeper in the Dubbo
  layout, and a npm dubbo2.js consumer that knows only ZooKeeper finds and calls the provider.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kazoo.client import KazooClient

from sofamesh.plugins.registries.zookeeper.urls import java_decode
from sofamesh.testing import free_port
from tests.conformance import bolt_peers, dubbo_peers
from tests.integration.registries.servers import PilotWithConfig, ZooKeeperServer, wait_for, zookeeper
from tests.integration.xds.mesh import Sidecar

PEERS = Path(__file__).resolve().parent / "peers" / "registries"
__all__ = ["zookeeper"]  # the fixture


@contextmanager
def dubbo_layout(tmp_path: Path, zookeeper: ZooKeeperServer, registry: str
                 ) -> Iterator[tuple[PilotWithConfig, KazooClient]]:
    """A Pilot reading ZooKeeper in the Dubbo layout (registry ``registry``), and a ZooKeeper client to look."""
    dubbo_peers.require_dubbo_peers()
    pilot = PilotWithConfig(tmp_path / "pilot", [
        {"name": registry, "type": "zookeeper", "options": {"hosts": zookeeper.hosts, "layout": "dubbo"}}])
    pilot.start()
    reader = KazooClient(hosts=zookeeper.hosts, timeout=5.0)
    try:
        reader.start(timeout=10)
        yield pilot, reader
    finally:
        reader.stop()
        reader.close()
        pilot.stop()


def instances(pilot: PilotWithConfig, service: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{pilot.api_url}/v1/services/{service}/instances", timeout=5)
    return resp.json()["instances"] if resp.status_code == 200 else []


def test_a_sofa_rpc_node_provider_publishing_in_zookeeper_is_discovered_by_pilot_and_answers_there(
        tmp_path: Path, zookeeper: ZooKeeperServer) -> None:
    bolt_peers.require_node()
    pilot = PilotWithConfig(tmp_path / "pilot", [
        {"name": "zk-sofa", "type": "zookeeper", "options": {"hosts": zookeeper.hosts, "layout": "sofa"}}])
    pilot.start()
    iface = "com.sofamesh.demo.ZkEcho"
    port = free_port()
    provider = subprocess.Popen(["node", str(PEERS / "sofa_zk_provider.js"), zookeeper.hosts, str(port), iface, "zkp"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PEERS,
                                env={**os.environ, "SOFAMESH_CACHE": str(bolt_peers.CACHE)})
    try:
        name = f"{iface}:1.0"  # SOFA's unique service name: what Bolt requests carry
        [inst] = wait_for(lambda: instances(pilot, name), what="the provider in Pilot's model")
        assert (inst["address"], inst["port"], inst["origin"], inst["version"]) == ("127.0.0.1", port, "zk-sofa", "1.0")
        assert inst["labels"]["protocol"] == "bolt" and inst["weight"] == 100
        svc = httpx.get(f"{pilot.api_url}/v1/services", timeout=5).json()["services"]
        assert [s["protocol"] for s in svc if s["name"] == name] == ["bolt"]
        # a consumer that knows only its sidecar calls the provider Pilot found in ZooKeeper
        with Sidecar(pilot.xds_port, "zk-consumer") as sidecar:
            wait_for(lambda: sidecar.endpoints(f"|{name}") == {f"127.0.0.1:{port}"}, 20,
                     "the provider in the sidecar's endpoints")
            results = bolt_peers.node_consumer(sidecar.egress("bolt"), iface,
                                               [{"method": "echo", "args": [f"hi{i}"], "timeout": 3000}
                                                for i in range(3)])
        assert [(r["ok"], r.get("result")) for r in results] == [(True, f"zkp:hi{i}") for i in range(3)]
        # the provider stops: its ephemeral node goes, and so does the instance
        provider.terminate()
        provider.wait(10)
        wait_for(lambda: not instances(pilot, name), timeout=30, what="the instance gone with its provider")
    finally:
        if provider.poll() is None:
            provider.kill()
            provider.wait(5)
        for f in (provider.stdout, provider.stderr):
            if f is not None:
                f.close()
        pilot.stop()


def test_a_dubbo_ts_provider_publishing_in_zookeeper_is_discovered_by_pilot_and_called_by_dubbo2js_via_a_sidecar(
        tmp_path: Path, zookeeper: ZooKeeperServer) -> None:
    iface = dubbo_peers.SERVICE
    with dubbo_layout(tmp_path, zookeeper, "zk-dubbo") as (pilot, reader):
        with dubbo_peers.Provider("zkts", zookeeper=zookeeper.hosts, version="1.0.0") as provider:
            # the provider node is the framework's own (@dubbo.ts/zookeeper writes it, not us)
            [child] = reader.get_children(f"/dubbo/{iface}/providers")
            url = java_decode(child)
            assert url.startswith(f"dubbo://127.0.0.1:{provider.port}/{iface}?"), url
            assert "application=zkts" in url and "side=provider" in url and "version=1.0.0" in url
            _d, stat = reader.get(f"/dubbo/{iface}/providers/{child}")
            assert stat.ephemeralOwner != 0
            [inst] = wait_for(lambda: instances(pilot, iface), what="the provider in Pilot's model")
            assert (inst["address"], inst["port"], inst["origin"], inst["version"]) == (
                "127.0.0.1", provider.port, "zk-dubbo", "1.0.0")
            assert inst["labels"]["protocol"] == "dubbo" and inst["labels"]["application"] == "zkts"
            # a dubbo2.js consumer that knows only its sidecar calls the provider Pilot found
            with Sidecar(pilot.xds_port, "zk-dubbo-consumer") as sidecar:
                wait_for(lambda: sidecar.endpoints(f"|{iface}") == {provider.address}, 20,
                         "the provider in the sidecar's endpoints")
                echo, add, who = dubbo_peers.consume(sidecar.egress("dubbo"), [
                    dubbo_peers.call("echo", dubbo_peers.java("java.lang.String", "via zookeeper")),
                    dubbo_peers.call("add", dubbo_peers.java("int", 2), dubbo_peers.java("int", 40)),
                    dubbo_peers.call("whoami")])
            assert (echo["ok"], echo["res"]) == (True, "via zookeeper")
            assert (add["ok"], add["res"]) == (True, 42)
            assert (who["res"]["provider"], who["res"]["interface"], who["res"]["version"]) == (
                "zkts", iface, "1.0.0")
        # the provider stops: it removes its node, and the instance goes
        assert reader.get_children(f"/dubbo/{iface}/providers") == []
        wait_for(lambda: not instances(pilot, iface), timeout=30, what="the instance gone with its provider")


def test_a_service_registered_through_the_pilot_api_is_found_in_zookeeper_by_a_dubbo2js_consumer(
        tmp_path: Path, zookeeper: ZooKeeperServer) -> None:
    iface = dubbo_peers.SERVICE
    with dubbo_layout(tmp_path, zookeeper, "zk") as (pilot, reader):
        with dubbo_peers.Provider("zkd") as provider:
            httpx.put(f"{pilot.api_url}/v1/services/{iface}/instances/zkd-1", timeout=5, json={
                "address": "127.0.0.1", "port": provider.port, "protocol": "dubbo", "version": "1.0.0",
                "weight": 50, "labels": {"methods": "echo,add,whoami", "application": "zkd-app"},
            }).raise_for_status()
            [child] = reader.get_children(f"/dubbo/{iface}/providers")
            url = java_decode(child)
            assert url.startswith(f"dubbo://127.0.0.1:{provider.port}/{iface}?anyhost=false&application=zkd-app&")
            assert "&interface=com.sofamesh.demo.EchoService&methods=echo,add,whoami&" in url
            assert "&side=provider&" in url and "&version=1.0.0&weight=50" in url
            _d, stat = reader.get(f"/dubbo/{iface}/providers/{child}")
            assert stat.ephemeralOwner != 0
            out = subprocess.run(["node", str(PEERS / "dubbo_zk_consumer.js"), zookeeper.hosts, iface, "1.0.0",
                                  "echo", "via zookeeper"], capture_output=True, cwd=PEERS, timeout=60,
                                 env={**os.environ, "NODE_PATH": str(dubbo_peers.NODE_MODULES)}, check=False)
            assert out.returncode == 0, out.stderr.decode()[-2000:]
            result = json.loads(out.stdout.decode().strip().splitlines()[-1])
            assert result == {"ok": True, "res": "via zookeeper", "err": None}
            # deregistered through the API: the node is gone
            httpx.delete(f"{pilot.api_url}/v1/services/{iface}/instances/zkd-1", timeout=5).raise_for_status()
            assert reader.get_children(f"/dubbo/{iface}/providers") == []
