"""A proxyless grpcio client (``xds:///echo``) follows a VirtualService from Pilot: a header match
to one subset, a weighted split between two subsets for every other call."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.integration.pilot.conftest import GrpcBackend, PilotProcess, grpc_backends, pilot
from tests.integration.pilot.test_proxyless_grpc import Client
from tests.integration.policy.apply import apply

__all__ = ["grpc_backends", "pilot"]

POLICY = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: echo, subset: v2}
  - route:
    - {destination: {host: echo, subset: v1}, weight: 75}
    - {destination: {host: echo, subset: v2}, weight: 25}
"""


def test_proxyless_grpc_follows_a_virtual_service_header_match_and_weighted_split(
        tmp_path: Path, pilot: PilotProcess, grpc_backends: list[GrpcBackend]) -> None:
    for b, version in zip(grpc_backends, ("v1", "v2"), strict=True):
        pilot.register("echo", b.name, address="127.0.0.1", port=b.port, protocol="grpc", labels={"version": version})
    apply(pilot.api_url, stdin=POLICY)
    plain = Client(tmp_path, pilot, "xds:///echo", "proxyless-plain", interval_s=0.002)
    jason = Client(tmp_path, pilot, "xds:///echo", "proxyless-jason", metadata={"end-user": "jason"})
    try:
        assert set(jason.answers(50, timeout=30)) == {"b2"}
        served = Counter(plain.answers(1000, timeout=60))
        assert set(served) == {"b1", "b2"} and 700 <= served["b1"] <= 800, served  # 75 % +-5 points
    finally:
        plain.stop()
        jason.stop()
