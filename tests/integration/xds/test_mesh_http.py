"""Pilot + two sidecars configured over xDS + real HTTP upstreams: calls by service name keep
working while providers scale up and down and while Pilot is away."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_http_calls_by_service_name_survive_scaling_and_a_pilot_restart(tmp_path: Path, mode: str) -> None:
    stream = scaling_scenario(tmp_path / "data", mode, SERVICE, "http", _Upstream, _batch)
    assert stream.failures == []
    assert stream.batches > 10
    assert set(stream.served) == {"p1", "p2", "p3", "p4"}
