"""A real Envoy 1.40 fed by Pilot over ADS in front of instances registered by real Eureka, Nacos and
Consul clients (PyPI py-eureka-client, npm nacos over Nacos's v1 HTTP API, PyPI nacos-sdk-python 3
over Nacos 2's gRPC protocol, PyPI py-consul): each endpoint's ``version`` label (the clients'
metadata) is in Envoy's EDS as ``envoy.lb`` metadata, a DestinationRule's subsets select by it, and a
VirtualService sending every request to subset v2, then v1, is followed by Envoy for the services of
all of them."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import UpstreamServer, free_port
from tests.conformance.registry_api_peers import Client, nacos_ports, require_clients
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows
from tests.integration.registries.servers import PilotWithConfig
from tests.integration.xds.mesh import wait_for

SERVICES = ("eu-web", "na-web", "ng-web", "co-web")


def _policy(subset: str) -> str:
    docs = []
    for name in SERVICES:
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: {name}}}\nspec:\n  host: {name}\n  subsets:\n"
            "  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
        )
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}}}\nspec:\n  hosts: [{name}]\n"
            f"  http:\n  - route:\n    - destination: {{host: {name}, subset: {subset}}}\n"
        )
    return "---\n".join(docs)


def _eds(envoy: Envoy) -> dict[str, dict[int, dict[str, Any]]]:
    """cluster -> port -> the endpoint's ``envoy.lb`` metadata, from Envoy's own config dump."""
    dump = httpx.get(f"http://127.0.0.1:{envoy.admin_port}/config_dump?include_eds", timeout=5).json()
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for section in dump["configs"]:
        for row in section.get("dynamic_endpoint_configs", []):
            cla = row["endpoint_config"]
            hosts = out.setdefault(cla["cluster_name"], {})
            for group in cla.get("endpoints", []):
                for lb in group.get("lb_endpoints", []):
                    port = lb["endpoint"]["address"]["socket_address"]["port_value"]
                    hosts[port] = lb.get("metadata", {}).get("filter_metadata", {}).get("envoy.lb", {})
    return out


def _answers(envoy: Envoy, host: str, n: int = 10) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = envoy.get(host)
        seen[resp.text.split()[0] if resp is not None and resp.status_code == 200 else "error"] += 1
    return seen


def _routes_to(envoy: Envoy, subset: str, since: float) -> None:
    """Envoy follows the VirtualService applied at ``since``: every request to each service reaches
    the upstream of ``subset``."""
    follows(
        lambda: all(_answers(envoy, n, 4) == Counter({f"{n}-{subset}": 4}) for n in SERVICES),
        since,
        f"Envoy routing to subset {subset}",
        timeout=30,
    )
    for name in SERVICES:
        assert _answers(envoy, name) == Counter({f"{name}-{subset}": 10})


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[PilotWithConfig, dict[str, dict[str, int]], Path]]:
    require_clients(nacos_grpc=True)
    nacos, consul = f"127.0.0.1:{nacos_ports()[0]}", f"127.0.0.1:{free_port()}"
    nacos_opts = {"address": nacos, "heartbeat_timeout_s": 11, "ip_delete_timeout_s": 13, "beat_interval_s": 1}
    pilot = PilotWithConfig(
        tmp_path / "pilot",
        [
            {"name": "embedded"},
            {"name": "eureka", "options": {"max_lease_s": 3}},
            {"name": "nacos", "options": nacos_opts},
            {"name": "consul", "options": {"address": consul}},
        ],
    )
    with contextlib.ExitStack() as stack:
        pilot.start()
        stack.callback(pilot.stop)
        ports: dict[str, dict[str, int]] = {}
        for name in SERVICES:
            for v in ("v1", "v2"):
                up = stack.enter_context(UpstreamServer(f"{name}-{v}"))
                port = int(up.address.rsplit(":", 1)[1])
                ports.setdefault(name, {})[v] = port
                log = tmp_path / f"{name}-{v}.log"
                if name == "eu-web":
                    client = Client.python("eureka", f"{pilot.api_url}/eureka/", name, f"{name}-{v}", port, v, log)
                elif name == "na-web":
                    client = Client.nacos(nacos, name, port, v, log)
                elif name == "ng-web":
                    client = Client.nacos_grpc(nacos, name, port, v, log)
                else:
                    client = Client.python("consul", consul, name, f"{name}-{v}", port, v, log)
                stack.callback(client.close)
        yield pilot, ports, tmp_path


def test_envoy_reads_the_version_label_from_eds_and_routes_by_subset_over_the_three_registries(
    mesh: tuple[PilotWithConfig, dict[str, dict[str, int]], Path],
) -> None:
    pilot, ports, tmp = mesh

    def healthy(name: str) -> set[str]:
        resp = httpx.get(f"{pilot.api_url}/v1/services/{name}/instances", timeout=5)
        rows = resp.json()["instances"] if resp.status_code == 200 else []
        return {i["labels"].get("version", "") for i in rows if i["health"] == "healthy"}

    for name in SERVICES:
        wait_for(lambda n=name: healthy(n) == {"v1", "v2"}, 15, f"{name}'s two instances")
    envoy = Envoy(tmp, pilot, "GRPC")
    try:
        t = apply(pilot.api_url, stdin=_policy("v2"))

        def eds_has_versions() -> bool:
            eds = _eds(envoy)
            for name in SERVICES:
                # outbound|PORT|NAME, and a subset outbound|PORT|SUBSET|NAME (Istio's names)
                base = [c for c in eds if c.split("|")[0::2] == ["outbound", name]]
                if not base:
                    return False
                want = {ports[name]["v1"]: "v1", ports[name]["v2"]: "v2"}
                if {p: m.get("version") for p, m in eds[base[0]].items()} != want:
                    return False
            return True

        follows(eds_has_versions, t, "the version labels in Envoy's EDS", timeout=30)
        eds = _eds(envoy)
        for name in SERVICES:
            # each subset cluster holds the endpoints whose version label it selects
            for v in ("v1", "v2"):
                subset = [c for c in eds if c.split("|")[0::2] == ["outbound", v] and c.endswith(f"|{name}")]
                assert subset and list(eds[subset[0]]) == [ports[name][v]], (name, v, eds)
        _routes_to(envoy, "v2", t)
        _routes_to(envoy, "v1", apply(pilot.api_url, stdin=_policy("v1")))
        assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}
    finally:
        envoy.stop()
