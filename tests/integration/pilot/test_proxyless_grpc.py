"""A real proxyless gRPC client (grpcio, xds:/// target) gets its config from Pilot."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from sofamesh.testing import free_port

from .conftest import GrpcBackend, LineReader, PilotProcess, on_both_transports

pytest_generate_tests = on_both_transports  # Envoy / gRPC clients on grpcio and native Pilot

CLIENT = Path(__file__).with_name("proxyless_client.py")


def _bootstrap(tmp_path: Path, pilot: PilotProcess, node_id: str, server: dict[str, Any] | None = None) -> Path:
    """``server``: the xds_servers entry (default: Pilot's plaintext port, insecure)."""
    path = tmp_path / f"bootstrap-{node_id}.json"
    path.write_text(json.dumps({
        "xds_servers": [server or {"server_uri": f"127.0.0.1:{pilot.xds_port}",
                                   "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
        "node": {"id": node_id, "cluster": "proxyless", "locality": {}},
    }))
    return path


class Client:
    def __init__(self, tmp_path: Path, pilot: PilotProcess, target: str, node_id: str,
                 metadata: dict[str, str] | None = None, interval_s: float = 0.02,
                 server: dict[str, Any] | None = None) -> None:
        self.csds_port = free_port()
        env = {"GRPC_XDS_BOOTSTRAP": str(_bootstrap(tmp_path, pilot, node_id, server)), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen([sys.executable, str(CLIENT), target, str(self.csds_port),
                                      json.dumps(metadata or {}), str(interval_s)], stdout=subprocess.PIPE, env=env)
        self.reader = LineReader(self.proc)
        assert self.reader.next_json(timeout=20) == {"csds": self.csds_port}

    def answers(self, n: int, timeout: float) -> list[str]:
        """The next ``n`` successful answers (backend names), waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        out: list[str] = []
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} answers within {timeout}s"
            line = self.reader.next_json(timeout=left)
            if "ok" in line:
                out.append(line["ok"])
        return out

    def csds(self) -> csds_pb2.ClientStatusResponse:
        with grpc.insecure_channel(f"127.0.0.1:{self.csds_port}") as ch:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(ch)
            return stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.close()


@pytest.fixture
def echo_client(
    tmp_path: Path, pilot: PilotProcess, grpc_backends: list[GrpcBackend]
) -> Iterator[Callable[[str], Client]]:
    """Registers the two backends as grpc service ``echo``; calling it starts an xds:///echo client."""
    for b in grpc_backends:
        pilot.register("echo", b.name, address="127.0.0.1", port=b.port, protocol="grpc")
    clients: list[Client] = []

    def start(node_id: str) -> Client:
        clients.append(Client(tmp_path, pilot, "xds:///echo", node_id))
        return clients[-1]

    try:
        yield start
    finally:
        for c in clients:
            c.stop()


def test_proxyless_client_round_robins_over_registered_backends_and_follows_deregistration(
    pilot: PilotProcess, echo_client: Callable[[str], Client]
) -> None:
    client = echo_client("proxyless-rr")

    first = client.answers(40, timeout=30)
    counts = collections.Counter(first[10:])
    assert set(counts) == {"b1", "b2"}, counts
    assert abs(counts["b1"] - counts["b2"]) <= 2, f"not round robin: {counts}"

    pilot.deregister("echo", "b1")
    moved_at = time.monotonic()
    while True:
        assert time.monotonic() - moved_at < 5, "calls still reach b1 5 s after its deregistration"
        if client.answers(10, timeout=5) == ["b2"] * 10:
            break
    assert client.answers(20, timeout=5) == ["b2"] * 20


def test_csds_shows_every_resource_acked_and_pilot_shows_the_node(
    pilot: PilotProcess, echo_client: Callable[[str], Client]
) -> None:
    client = echo_client("proxyless-csds")
    client.answers(4, timeout=30)

    status = client.csds()
    configs = [g for c in status.config for g in c.generic_xds_configs]
    status_name = config_dump_shared_pb2.ClientResourceStatus.Name
    seen = {(g.type_url.rsplit(".", 1)[-1], g.name): status_name(g.client_status) for g in configs}
    assert seen == {("Listener", "echo"): "ACKED", ("Cluster", "outbound|80|echo"): "ACKED",
                    ("ClusterLoadAssignment", "outbound|80|echo"): "ACKED"}, seen

    nodes = {n["node"]: n for n in pilot.get("/debug/syncz")["nodes"]}
    types = nodes["proxyless-csds"]["types"]
    assert {t: types[t]["status"] for t in types} == {"lds": "ACKED", "cds": "ACKED", "eds": "ACKED"}
    assert types["lds"]["names"] == ["echo"]


def test_a_client_started_after_a_pilot_restart_gets_the_same_backends(
    pilot: PilotProcess, echo_client: Callable[[str], Client]
) -> None:
    client = echo_client("proxyless-restart")
    assert set(client.answers(20, timeout=30)) == {"b1", "b2"}

    pilot.stop()
    pilot.start()  # same ports, same data dir
    assert [i["id"] for i in pilot.get("/v1/services/echo/instances")["instances"]] == ["b1", "b2"]
    wait_for = time.monotonic() + 30
    while not any(n["node"] == "proxyless-restart" for n in pilot.get("/debug/syncz")["nodes"]):
        assert time.monotonic() < wait_for, "the client did not reconnect to the restarted Pilot"
        time.sleep(0.1)
    client.reader.drain()
    pilot.deregister("echo", "b2")
    deadline = time.monotonic() + 5
    while client.answers(10, timeout=5) != ["b1"] * 10:
        assert time.monotonic() < deadline, "the reconnected client does not follow Pilot's updates"
