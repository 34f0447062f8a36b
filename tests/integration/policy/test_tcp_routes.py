"""VirtualService ``tcp`` routes enforced alike by a real Envoy and a sofamesh sidecar: a TCP
ServiceEntry's port gets an outbound listener on each proxy (its node's ``sofamesh.tcp_address``,
else the entry's loopback address), whose connections are split 80/20 between two real TCP servers."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sofamesh.testing import free_port
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows
from tests.integration.xds.mesh import Sidecar
from tests.unit.core.proxy.test_sni import client_hello


class TcpServer:
    """Answers each connection's first line with ``NAME:LINE`` (a TLS ClientHello with
    ``NAME:tls``) and closes."""

    def __init__(self, name: str) -> None:
        self.name = name
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                first = self.rfile.read(5)
                if first[:1] == b"\x16":  # a TLS record (passed through): its bytes are not echoed
                    self.wfile.write(owner.name.encode() + b":tls\n")
                    return
                line = (first + self.rfile.readline()).strip()
                self.wfile.write(owner.name.encode() + b":" + line + b"\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ask(address: str, port: int, line: bytes = b"hello", sni: str | None = None) -> str:
    """One connection through a listener: the name of the server that answered, ``""`` when none did.
    With ``sni`` the connection starts with a real ClientHello asking for that name."""
    if sni is not None:
        line = b"tls"
    try:
        with socket.create_connection((address, port), timeout=5) as s:
            s.sendall(client_hello(sni) if sni is not None else line + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return ""
    name, _, echoed = data.decode().strip().partition(":")
    return name if echoed == line.decode() else ""


def entry(port: int, servers: dict[str, TcpServer], addresses: str = "") -> str:
    endpoints = ", ".join(
        f"{{address: 127.0.0.1, ports: {{tcp-db: {s.port}}}, labels: {{version: {v}}}}}" for v, s in servers.items()
    )
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.example.com]
  {f"addresses: [{addresses}]" if addresses else ""}
  ports: [{{number: {port}, name: tcp-db, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{endpoints}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: default}}
spec:
  host: db.example.com
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


TCP_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  tcp:
"""


def split(port: int, w1: int, w2: int) -> str:
    return (
        TCP_VS
        + f"""\
  - match: [{{port: {port}}}]
    route:
    - {{destination: {{host: db.example.com, subset: v1}}, weight: {w1}}}
    - {{destination: {{host: db.example.com, subset: v2}}, weight: {w2}}}
"""
    )


@pytest.fixture
def servers() -> Iterator[dict[str, TcpServer]]:
    made = {v: TcpServer(v) for v in ("v1", "v2")}
    try:
        yield made
    finally:
        for s in made.values():
            s.stop()


def _counts(address: str, port: int, n: int) -> Counter[str]:
    return Counter(ask(address, port) for _ in range(n))


@contextlib.contextmanager
def pilot_envoy_sidecar(
    tmp_path: Path, api_type: str, addresses: dict[str, str], metadata: dict[str, dict[str, object]] | None = None
) -> Iterator[tuple[PilotProcess, Envoy, Sidecar]]:
    """Pilot, an Envoy and a sofamesh sidecar, each proxy listening for TCP services on its own
    loopback address (node metadata ``sofamesh.tcp_address``, plus ``metadata[proxy]``); on
    leaving, neither NACKed."""
    meta = {k: {"sofamesh.tcp_address": v, **(metadata or {}).get(k, {})} for k, v in addresses.items()}
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        envoy = Envoy(tmp_path, pilot, api_type, metadata=meta["envoy"])
        stack.callback(envoy.stop)
        sidecar = Sidecar(pilot.xds_port, f"sidecar-{api_type.lower()}", metadata=meta["sidecar"]).start()
        stack.callback(sidecar.stop)
        yield pilot, envoy, sidecar
        assert sidecar.dump()["xds"]["last_nack"] is None
        assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}


def test_tcp_connections_are_split_80_20_by_envoy_and_by_the_sidecar(
    tmp_path: Path, servers: dict[str, TcpServer]
) -> None:
    port = free_port()
    proxies = {"envoy": "127.0.0.2", "sidecar": "127.0.0.3"}  # each proxy's own loopback address
    with pilot_envoy_sidecar(tmp_path, "DELTA_GRPC", proxies) as (pilot, _envoy, _sidecar):
        t = apply(pilot.api_url, stdin=entry(port, servers))
        for name, address in proxies.items():  # no VirtualService yet: the service's cluster, both servers
            follows(lambda a=address: set(_counts(a, port, 20)) == {"v1", "v2"}, t, name, timeout=30)

        t = apply(pilot.api_url, stdin=split(port, 100, 0))
        for name, address in proxies.items():
            follows(lambda a=address: set(_counts(a, port, 20)) == {"v1"}, t, name, timeout=30)

        t = apply(pilot.api_url, stdin=split(port, 80, 20))
        for name, address in proxies.items():
            follows(lambda a=address: "v2" in _counts(a, port, 20), t, name, timeout=30)
            got = _counts(address, port, 200)
            assert got[""] == 0, (name, got)  # every connection reached a server
            assert 135 <= got["v1"] <= 185 and got["v1"] + got["v2"] == 200, (name, got)


def test_without_a_node_address_the_sidecar_listens_on_the_service_entry_loopback_address(
    tmp_path: Path,
    servers: dict[str, TcpServer],
) -> None:
    port = free_port()
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        sidecar = Sidecar(pilot.xds_port, "tcp-vip-sidecar").start()
        stack.callback(sidecar.stop)
        t = apply(pilot.api_url, stdin=entry(port, servers, addresses="127.0.0.4") + "---" + split(port, 0, 100))
        follows(lambda: set(_counts("127.0.0.4", port, 20)) == {"v2"}, t, "the sidecar at the VIP", timeout=30)
        assert sidecar.dump()["xds"]["last_nack"] is None


def tls_routes(port: int, servers: dict[str, TcpServer]) -> str:
    return (
        entry(port, servers)
        .replace("protocol: TCP", "protocol: TLS")
        .replace("name: tcp-db", "name: tls-db")
        .replace("tcp-db:", "tls-db:")
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com, "*.db.example.com"]
  tls:
  - match: [{sniHosts: ["*.db.example.com"]}]
    route: [{destination: {host: db.example.com, subset: v1}}]
  - match: [{sniHosts: [v2.db.example.com]}]
    route: [{destination: {host: db.example.com, subset: v2}}]
"""
    )


def _by_sni(address: str, port: int, sni: str, n: int = 20) -> set[str]:
    return set(Counter(ask(address, port, sni=sni) for _ in range(n)))


def test_tls_routes_choose_by_the_client_hello_server_name_on_envoy_and_the_sidecar(
    tmp_path: Path,
    servers: dict[str, TcpServer],
) -> None:
    port = free_port()
    proxies = {"envoy": "127.0.0.5", "sidecar": "127.0.0.6"}
    with pilot_envoy_sidecar(tmp_path, "GRPC", proxies) as (pilot, _envoy, _sidecar):
        t = apply(pilot.api_url, stdin=tls_routes(port, servers))
        for name, address in proxies.items():
            follows(lambda a=address: _by_sni(a, port, "v2.db.example.com") == {"v2"}, t, name, timeout=30)
            # an exact name wins over a wildcard listed before it (Envoy's server_names order)
            assert _by_sni(address, port, "v2.db.example.com") == {"v2"}, name
            assert _by_sni(address, port, "x.db.example.com") == {"v1"}, name
            assert _by_sni(address, port, "a.b.db.example.com") == {"v1"}, name
            # a name no route lists, and a connection without SNI: the service's own cluster
            assert _by_sni(address, port, "db.example.com") == {"v1", "v2"}, name
            assert set(_counts(address, port, 20)) == {"v1", "v2"}, name


def scoped_routes(port: int) -> str:
    return (
        TCP_VS
        + f"""\
  - match: [{{sourceLabels: {{app: canary}}, port: {port}}}]
    route: [{{destination: {{host: db.example.com, subset: v2}}}}]
  - match: [{{destinationSubnets: [127.0.0.7/32], sourceNamespace: other}}]
    route: [{{destination: {{host: db.example.com, subset: v2}}}}]
  - match: [{{destinationSubnets: [127.0.0.0/24], sourceNamespace: team}}]
    route: [{{destination: {{host: db.example.com, subset: v1}}}}]
"""
    )


def test_tcp_matches_on_source_labels_namespace_and_destination_subnet_pick_the_route_per_proxy(
    tmp_path: Path, servers: dict[str, TcpServer]
) -> None:
    port = free_port()
    proxies = {"envoy": "127.0.0.7", "sidecar": "127.0.0.8"}
    metadata: dict[str, dict[str, object]] = {
        "envoy": {"NAMESPACE": "team"},
        "sidecar": {"LABELS": {"app": "canary"}, "NAMESPACE": "ops"},
    }
    with pilot_envoy_sidecar(tmp_path, "GRPC", proxies, metadata) as (pilot, _envoy, _sidecar):
        t = apply(pilot.api_url, stdin=entry(port, servers) + "---" + scoped_routes(port))
        # the sidecar (app=canary) takes the first route; Envoy (namespace team, at 127.0.0.7) the
        # third: the second names its subnet but another namespace
        follows(lambda: set(_counts(proxies["sidecar"], port, 20)) == {"v2"}, t, "the sidecar", timeout=30)
        follows(lambda: set(_counts(proxies["envoy"], port, 20)) == {"v1"}, t, "Envoy", timeout=30)
        assert set(_counts(proxies["sidecar"], port, 40)) == {"v2"}
        assert set(_counts(proxies["envoy"], port, 40)) == {"v1"}
