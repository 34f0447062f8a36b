"""Real clients of the Eureka, Nacos and Consul registry APIs, driven from tests: PyPI
py-eureka-client and py-consul (tests/conformance/peers/registry_apis/py_clients.py in their own
venv) and npm nacos (nacos_client.js). Installed by scripts/setup.d/37-registry-api-peers.sh; a
missing client skips locally and fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.sofaregistry_peers import RegistryClient
from tests.integration.xds.mesh import Sidecar, http_get, wait_for

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
VENV_PYTHON = CACHE / "venv-registry-apis" / "bin" / "python"
NACOS_GRPC_PYTHON = CACHE / "venv-nacos-grpc" / "bin" / "python"  # nacos-sdk-python 3.x, in a venv of its own
NODE_MODULES = CACHE / "npm" / "registry-apis" / "node_modules"
PEERS = Path(__file__).resolve().parent / "peers" / "registry_apis"


def require_clients(nacos_grpc: bool = False, others: bool = True) -> None:
    """The clients' installs (``others``: py-eureka-client, py-consul, npm nacos; ``nacos_grpc``:
    nacos-sdk-python); missing ones skip locally and fail when ``CI`` is set."""
    missing = []
    if others and not VENV_PYTHON.exists():
        missing.append(str(VENV_PYTHON))
    if others and (not (NODE_MODULES / "nacos" / "package.json").exists() or not shutil.which("node")):
        missing.append(str(NODE_MODULES / "nacos"))
    if nacos_grpc and not NACOS_GRPC_PYTHON.exists():
        missing.append(str(NACOS_GRPC_PYTHON))
    if not missing:
        return
    msg = f"registry API clients not installed ({', '.join(missing)}): run scripts/setup.d/37-registry-api-peers.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def metadata_versions(rows: list[dict[str, Any]]) -> set[str]:
    """The ``version`` metadata of the instances a client discovered."""
    return {r["metadata"].get("version", "") for r in rows}


def nacos_ports() -> tuple[int, int]:
    """A free port P whose P + 1000 is free too: the HTTP and gRPC ports a Nacos 2 client assumes."""
    import socket

    from sofamesh.testing import free_port

    for _ in range(200):
        port = free_port()
        if port + 1000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1000))
            except OSError:
                continue
        return port, port + 1000
    raise RuntimeError("no free port pair P, P + 1000")


class Client(RegistryClient):
    """One client process registering one instance; JSON-line commands in, events out (the
    SOFARegistry client's driver protocol, whose event pump and waits it shares)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._err = log.open("ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_for(lambda e: e["event"] == "ready", 30, "client ready")

    @classmethod
    def python(cls, kind: str, server: str, name: str, iid: str, port: int, version: str, log: Path) -> Client:
        return cls([str(VENV_PYTHON), str(PEERS / "py_clients.py"), kind, server, name, iid, str(port), version], log)

    @classmethod
    def nacos(cls, server: str, service: str, port: int, version: str, log: Path) -> Client:
        return cls(
            ["node", str(PEERS / "nacos_client.js"), str(NODE_MODULES), server, service, str(port), version], log
        )

    @classmethod
    def nacos_grpc(cls, server: str, service: str, port: int, version: str, log: Path) -> Client:
        """nacos-sdk-python 3.x (gRPC) registering ``service`` at 127.0.0.1:``port`` (0: nothing)."""
        return cls(
            [str(NACOS_GRPC_PYTHON), str(PEERS / "nacos_grpc_client.py"), server, service, str(port), version], log
        )

    def ask(self, timeout: float = 15, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.wait_for(lambda e: e["event"] in (cmd["cmd"], "error"), timeout, f"answer to {cmd}")

    def die(self) -> None:
        """Exit without deregistering: the instance's lease must lapse on its own."""
        self.send(cmd="die")
        self.proc.wait(10)
        self._err.close()

    def close(self) -> None:
        """End of stdin: the client deregisters and exits; killed after 10 s."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()
        if not self._err.closed:
            self._err.close()


def reach_through_sidecar(xds_port: int, service: str, expect: set[str]) -> None:
    """A sofamesh sidecar of the Pilot at ``xds_port`` gets ``service``'s endpoints and reaches each of
    the upstreams named in ``expect`` (by the first word of their answer)."""
    with Sidecar(xds_port, f"{service}-consumer") as sidecar:
        wait_for(lambda: len(sidecar.endpoints(f"|{service}")) == len(expect), 20, "endpoints in the sidecar")
        seen = set()
        for _ in range(12):
            status, body = http_get(sidecar.egress("http"), service, "/who")
            assert status == 200
            seen.add(body.split()[0].decode())
        assert seen == expect


@contextmanager
def python_pair(kind: str, server: str, service: str, tmp: Path) -> Iterator[tuple[Client, Client, int, int]]:
    """Two upstreams answering ``<service>-v1`` / ``-v2`` and two ``kind`` clients registering them as
    ``<service>-1`` / ``-2`` with metadata version v1 / v2: (client 1, client 2, port 1, port 2)."""
    from sofamesh.testing import UpstreamServer

    with UpstreamServer(f"{service}-v1") as up1, UpstreamServer(f"{service}-v2") as up2:
        p1, p2 = (int(u.address.rsplit(":", 1)[1]) for u in (up1, up2))
        c1 = Client.python(kind, server, service, f"{service}-1", p1, "v1", tmp / f"{service}-1.log")
        try:
            c2 = Client.python(kind, server, service, f"{service}-2", p2, "v2", tmp / f"{service}-2.log")
        except BaseException:
            c1.close()
            raise
        try:
            yield c1, c2, p1, p2
        finally:
            c1.close()
            c2.close()


class StandIn:
    """Two Pilots: ``cluster`` serves a registry API (``served``, e.g. ``{"name": "eureka"}``) in place
    of a real server of that kind; ``mesh`` reads it through its ``corp`` registry (``corp``: the type
    and options of a ``*-cluster`` adapter, given the cluster's API URL), in two-way sync with its
    writable ``embedded`` registry."""

    def __init__(self, tmp: Path, served: dict[str, Any], corp: Callable[[str], dict[str, Any]]) -> None:
        from tests.integration.registries.servers import PilotWithConfig

        self.tmp = tmp
        self.cluster = PilotWithConfig(tmp / "cluster", [{"name": "embedded"}, served])
        self.mesh = PilotWithConfig(
            tmp / "mesh",
            [{"name": "embedded", "writable": True}, {"name": "corp", **corp(self.cluster.api_url)}],
            sync={"pairs": [{"from": "embedded", "to": "corp", "two_way": True}], "resync_interval_s": 1},
        )

    @contextmanager
    def running(self) -> Iterator[StandIn]:
        require_clients()
        self.cluster.start()
        try:
            self.mesh.start()
        except BaseException:
            self.cluster.stop()
            raise
        try:
            yield self
        finally:
            self.mesh.stop()
            self.cluster.stop()

    def put_mesh_instance(self, port: int) -> None:
        """``mesh-app/m-1`` at ``port`` (label version v3) through the mesh Pilot's OSR API."""
        import httpx

        resp = httpx.put(
            f"{self.mesh.api_url}/v1/services/mesh-app/instances/m-1",
            json={"address": "127.0.0.1", "port": port, "labels": {"version": "v3"}},
            timeout=5,
        )
        assert resp.status_code == 200, resp.text

    def instances(self, service: str) -> list[dict[str, Any]]:
        import httpx

        resp = httpx.get(f"{self.mesh.api_url}/v1/services/{service}/instances", timeout=5)
        return list(resp.json()["instances"]) if resp.status_code == 200 else []

    def healthy_versions(self, service: str) -> set[str]:
        return {i["labels"].get("version", "") for i in self.instances(service) if i["health"] == "healthy"}

    def corp(self) -> dict[str, Any]:
        return dict(next(r for r in self.mesh.get("/debug/registry")["registries"] if r["name"] == "corp"))
