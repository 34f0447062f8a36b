"""A real Envoy 1.40 and a sofamesh sidecar fed by one Pilot, in front of the same upstreams: the
fixture shape of the tests that hold both proxies to the same answers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows, status
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.xds.mesh import Sidecar


def web_policy(versions: tuple[str, ...], http: str) -> str:
    """A DestinationRule with one subset per version of ``web`` and a VirtualService for ``web``
    whose ``http`` routes are ``http`` (YAML list items, indented by two spaces)."""
    subsets = "".join(f"  - {{name: {v}, labels: {{version: {v}}}}}\n" for v in versions)
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\n"
        f"spec:\n  host: web\n  subsets:\n{subsets}---\n"
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n"
        f"spec:\n  hosts: [web]\n  http:\n{http}"
    )


@contextlib.contextmanager
def side_by_side(
    tmp_path: Path,
    policy: str,
    versions: tuple[str, ...],
    name: str,
    metadata: dict[str, Any] | None = None,
    servers: Mapping[str, Any] | None = None,
) -> Iterator[tuple[dict[str, int], dict[str, Echo]]]:
    """Service ``web`` served by one ``Echo`` per version (label ``version``) and by each of
    ``servers`` (version -> an HTTP server with ``port`` and ``stop()``), ``policy`` applied;
    yields the outbound ports of both proxies (``envoy``, ``sofamesh``) once both answer ``GET /ready``
    with 204 (the policy must have that route), and the echoes. Neither proxy may have NACKed at the end."""
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        echoes = {v: Echo(v) for v in versions}
        for v, e in {**echoes, **(servers or {})}.items():
            stack.callback(e.stop)
            pilot.register("web", v, address="127.0.0.1", port=e.port, protocol="http", labels={"version": v})
        envoy = Envoy(tmp_path, pilot, "GRPC", metadata=metadata)
        stack.callback(envoy.stop)
        sidecar = Sidecar(pilot.xds_port, name, metadata=metadata).start()
        stack.callback(sidecar.stop)
        ports = {"envoy": envoy.outbound_port, "sofamesh": sidecar.ports["http"]}
        t = apply(pilot.api_url, stdin=policy)
        follows(lambda: all(status(p, "/ready") == 204 for p in ports.values()), t, "the VirtualService", timeout=30)
        yield ports, echoes
        assert sidecar.dump()["xds"]["last_nack"] is None
        assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}


__all__ = ["side_by_side", "web_policy"]
