"""A proxyless grpcio client (``xds:///echo``) follows a VirtualService from Pilot: a header match
to one subset, a weighted split between two subsets for every other call, and fault injection
(aborts with a gRPC status and with an HTTP status, at a percentage; fixed delays, at a percentage)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tests.integration.pilot.conftest import GrpcBackend, PilotProcess, grpc_backends, pilot
from tests.integration.pilot.test_proxyless_grpc import Client
from tests.integration.policy.apply import apply

__all__ = ["grpc_backends", "pilot"]

SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
POLICY = SUBSETS + """---
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
    with _clients(tmp_path, pilot, grpc_backends, POLICY, "split") as (plain, jason):
        assert set(jason.answers(50, timeout=30)) == {"b2"}
        served = Counter(plain.answers(1000, timeout=60))
        assert set(served) == {"b1", "b2"} and 700 <= served["b1"] <= 800, served  # 75 % +-5 points


@contextlib.contextmanager
def _clients(tmp_path: Path, pilot: PilotProcess, backends: list[GrpcBackend], policy: str,
             name: str) -> Iterator[tuple[Client, Client]]:
    """``policy`` applied over the backends as v1 and v2; a plain client and one sending ``end-user: jason``."""
    for b, version in zip(backends, ("v1", "v2"), strict=True):
        pilot.register("echo", b.name, address="127.0.0.1", port=b.port, protocol="grpc", labels={"version": version})
    apply(pilot.api_url, stdin=policy)
    with contextlib.ExitStack() as stack:
        plain = Client(tmp_path, pilot, "xds:///echo", f"proxyless-{name}", interval_s=0.002)
        stack.callback(plain.stop)
        jason = Client(tmp_path, pilot, "xds:///echo", f"proxyless-{name}-jason", metadata={"end-user": "jason"})
        stack.callback(jason.stop)
        yield plain, jason


FAULTS = SUBSETS + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {grpcStatus: PERMISSION_DENIED, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v2}}]
  - fault: {abort: {httpStatus: 404, percentage: {value: 30}}}
    route: [{destination: {host: echo, subset: v1}}]
"""


def _outcomes(client: Client, n: int, timeout: float) -> Counter[str]:
    """The next ``n`` calls: the backend's name, or the gRPC status code name of a failed call."""
    deadline = time.monotonic() + timeout
    out: Counter[str] = Counter()
    while sum(out.values()) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {out} within {timeout}s"
        line = client.reader.next_json(timeout=left)
        out[line.get("ok") or line.get("error", "?")] += 1
    return out


def test_proxyless_grpc_injects_the_virtual_service_faults(
        tmp_path: Path, pilot: PilotProcess, grpc_backends: list[GrpcBackend]) -> None:
    with _clients(tmp_path, pilot, grpc_backends, FAULTS, "faults") as (plain, jason):
        plain.answers(1, timeout=30)  # the first answer: the client holds the routes
        assert _outcomes(jason, 50, timeout=30) == {"PERMISSION_DENIED": 50}
        served = _outcomes(plain, 600, timeout=60)
        # the 404 abort reaches the caller as UNIMPLEMENTED (gRPC's HTTP status mapping), 30 % +- 10 points
        assert set(served) == {"b1", "UNIMPLEMENTED"} and 120 <= served["UNIMPLEMENTED"] <= 240, served


DELAYS = SUBSETS + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {delay: {fixedDelay: 500ms, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v2}}]
  - fault: {delay: {fixedDelay: 400ms, percentage: {value: 40}}}
    route: [{destination: {host: echo, subset: v1}}]
"""


def _timed(client: Client, n: int, timeout: float) -> list[tuple[str, int]]:
    """The next ``n`` calls: (backend name or gRPC status name, milliseconds the call took)."""
    deadline = time.monotonic() + timeout
    out = []
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {out} within {timeout}s"
        line = client.reader.next_json(timeout=left)
        out.append((line.get("ok") or line.get("error", "?"), int(line["ms"])))
    return out


def test_proxyless_grpc_delays_calls_as_the_virtual_service_fault_says(
        tmp_path: Path, pilot: PilotProcess, grpc_backends: list[GrpcBackend]) -> None:
    with _clients(tmp_path, pilot, grpc_backends, DELAYS, "delays") as (plain, jason):
        plain.answers(1, timeout=30)  # the first answer: the client holds the routes
        jason.answers(1, timeout=30)
        jason_calls = _timed(jason, 10, timeout=30)
        assert {who for who, _ in jason_calls} == {"b2"}
        assert all(500 <= ms < 1900 for _, ms in jason_calls), jason_calls
        calls = _timed(plain, 80, timeout=60)
        assert {who for who, _ in calls} == {"b1"}
        delayed = sum(ms >= 400 for _, ms in calls)
        assert 12 <= delayed <= 52, calls  # 40 % of 80 = 32 expected
        assert sum(ms < 300 for _, ms in calls) >= 20, calls  # the others are not held
