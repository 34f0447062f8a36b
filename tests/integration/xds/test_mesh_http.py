"""Pilot + two sidecars configured over xDS + real HTTP upstreams and grpcio servers: calls by
service name (Host / :authority) keep working while providers scale up and down and while Pilot
is away."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sofamesh.testing import UpstreamServer
from tests.integration.xds.mesh import Sidecar, http_get, scaling_scenario

SERVICE = "hello"


class _Upstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.server = UpstreamServer(name).__enter__()
        self.address = self.server.address
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.__exit__()


def _batch(sidecars: list[Sidecar]) -> tuple[list[str], list[str]]:
    servers, failures = [], []
    for sc in sidecars:
        for _ in range(5):
            try:
                status, body = http_get(sc.egress("http"), SERVICE, "/who")
            except OSError as exc:
                failures.append(f"{sc.egress('http')}: {exc}")
                continue
            if status != 200:
                failures.append(f"{status} {body!r}")
            else:
                servers.append(body.split()[0].decode())
    return servers, failures


@pytest.mark.parametrize(("mode", "transport"), [("sotw", "grpcio"), ("delta", "grpcio"), ("delta", "native")])
def test_http_calls_by_service_name_survive_scaling_and_a_pilot_restart(tmp_path: Path, mode: str, transport: str) -> None:
    stream = scaling_scenario(tmp_path / "data", mode, SERVICE, "http", _Upstream, _batch, transport=transport)
    assert stream.failures == []
    assert stream.batches > 10
    assert set(stream.served) == {"p1", "p2", "p3", "p4"}


GRPC_SERVICE = "greeter"


class _GrpcProvider:
    """A grpcio server answering ``/demo.Greeter/WhoAmI`` with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def who(request: bytes, context: Any) -> bytes:
            return name.encode()

        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "demo.Greeter", {"WhoAmI": grpc.unary_unary_rpc_method_handler(who)}),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(1).wait(5)


def _grpc_batch(sidecars: list[Sidecar]) -> tuple[list[str], list[str]]:
    servers, failures = [], []
    for sc in sidecars:
        with grpc.insecure_channel(sc.egress("http"), options=[("grpc.default_authority", GRPC_SERVICE)]) as ch:
            call = ch.unary_unary("/demo.Greeter/WhoAmI")
            for _ in range(5):
                try:
                    servers.append(call(b"", timeout=5).decode())
                except grpc.RpcError as exc:
                    failures.append(f"{sc.egress('http')}: {exc.code().name} {exc.details()}")
    return servers, failures


def test_grpcio_calls_by_authority_survive_scaling_and_a_pilot_restart(tmp_path: Path) -> None:
    stream = scaling_scenario(tmp_path / "data", "delta", GRPC_SERVICE, "grpc", _GrpcProvider, _grpc_batch)
    assert stream.failures == []
    assert set(stream.served) == {"p1", "p2", "p3", "p4"}
