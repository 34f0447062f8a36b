"""A real Envoy 1.40 and a sofamesh proxy as gateway nodes of one Pilot (``router~`` ids, the given
labels, namespace ``default``), each bound to its own loopback address (``sofamesh.gateway_address``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.xds.mesh import Sidecar


def start_gateways(
    stack: contextlib.ExitStack, tmp_path: Path, pilot: PilotProcess, addresses: dict[str, str], labels: dict[str, str]
) -> tuple[Envoy, Sidecar]:
    """Envoy at ``addresses["envoy"]`` and sofamesh at ``addresses["sofamesh"]``, stopped by ``stack``."""
    meta = {k: {"LABELS": labels, "NAMESPACE": "default", "sofamesh.gateway_address": a} for k, a in addresses.items()}
    envoy = Envoy(
        tmp_path,
        pilot,
        "GRPC",
        metadata=meta["envoy"],
        node_id=f"router~{addresses['envoy']}~edge-envoy.default~default.svc.cluster.local",
    )
    stack.callback(envoy.stop)
    gw = Sidecar(
        pilot.xds_port,
        f"router~{addresses['sofamesh']}~edge-sofamesh.default~default.svc.cluster.local",
        metadata=meta["sofamesh"],
    ).start()
    stack.callback(gw.stop)
    return envoy, gw


def assert_accepted(envoy: Envoy, gw: Sidecar) -> None:
    """Neither gateway refused what Pilot sent."""
    assert gw.dump()["xds"]["last_nack"] is None
    assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}
