"""VirtualService ``tcp`` routes -> outbound TCP listeners with ``tcp_proxy``, and how the sofamesh
sidecar's xDS client reads them."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sofamesh.core.errors import ConfigError
from sofamesh.core.xds.translate import translate_listener
from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.policy.entries import loopback_address
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.xds.generator import NodeInfo
from sofamesh.pilot.xds.generators import ClusterGenerator
from sofamesh.pilot.xds.tcp_routes import TcpListenerGenerator
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed
from tests.unit.pilot.xds.test_policy_generation import _docs

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def _vs(tcp: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db]
  tcp:
{tcp}
"""


SPLIT = _vs("""  - match: [{port: 5432}]
    route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, subset: v2}, weight: 20}""")


def _setup(*docs: str, vip: str = "") -> tuple[MeshModel, AppliedPolicy]:
    insts = [ServiceInstance("db", f"d{v}", "127.0.0.1", 7000 + v, labels={"version": f"v{v}"}) for v in (1, 2)]
    meta = {"vip": vip} if vip else {}
    mesh = MeshModel(
        [Fixed([Service("db", protocol="tcp", ports=(5432, 5433), metadata=meta), Service("web", ports=(80,))], insts)]
    )
    mesh.refresh()
    policy = PolicyModel()
    policy.sync(_docs("\n---\n".join(docs)))
    assert not policy.rejections(), [v.to_dict() for v in policy.rejections()]
    return mesh, AppliedPolicy(policy)


def _listeners(mesh: MeshModel, policy: AppliedPolicy, meta: dict[str, Any]) -> dict[str, Any]:
    gen = TcpListenerGenerator()
    gen.use_policy(policy)
    return {r.name: r.message for r in gen.generate(mesh, NodeInfo("n", metadata=meta))}


def _proxy(listener_or_chain: Any) -> tcp_proxy_pb2.TcpProxy:
    """The tcp_proxy of a filter chain (a listener's first)."""
    chain = listener_or_chain.filter_chains[0] if hasattr(listener_or_chain, "filter_chains") else listener_or_chain
    tp = tcp_proxy_pb2.TcpProxy()
    assert chain.filters[0].typed_config.Unpack(tp)
    return tp


def test_a_tcp_service_port_gets_a_listener_at_the_node_tcp_address_with_the_weighted_split() -> None:
    mesh, policy = _setup(DR, SPLIT)
    got = _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9"})
    assert set(got) == {"outbound|tcp|5432|db", "outbound|tcp|5433|db"}  # no listener for the HTTP service
    sa = got["outbound|tcp|5432|db"].address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.9", 5432)
    tp = _proxy(got["outbound|tcp|5432|db"])
    assert [(w.name, w.weight) for w in tp.weighted_clusters.clusters] == [
        ("outbound|5432|v1|db", 80),
        ("outbound|5432|v2|db", 20),
    ]
    assert _proxy(got["outbound|tcp|5433|db"]).cluster == "outbound|5433|db"  # the port match skips it
    # the sidecar reads it as a tcp listener whose one route splits the same way
    kernel = translate_listener(got["outbound|tcp|5432|db"]).config  # type: ignore[union-attr]
    assert kernel["protocols"] == ["tcp"] and kernel["address"] == "127.0.0.9:5432"
    assert kernel["routes"][0]["weighted_clusters"] == [
        {"name": "outbound|5432|v1|db", "weight": 80},
        {"name": "outbound|5432|v2|db", "weight": 20},
    ]


def test_the_service_vip_is_the_address_without_a_node_address_and_nothing_without_either() -> None:
    mesh, policy = _setup(DR, SPLIT)
    assert _listeners(mesh, policy, {}) == {}
    mesh, policy = _setup(DR, SPLIT, vip="127.0.0.7")
    got = _listeners(mesh, policy, {})
    assert got["outbound|tcp|5432|db"].address.socket_address.address == "127.0.0.7"
    assert loopback_address(["10.0.0.1", "192.168.0.0/24", "127.0.0.8/32"]) == "127.0.0.8"
    assert loopback_address(["10.0.0.1", "127.0.0.0/8"]) == ""
    assert loopback_address(["::1"]) == "::1"


@pytest.mark.parametrize(
    ("match", "meta", "split"),
    [
        ("{sourceLabels: {app: canary}}", {"LABELS": {"app": "canary"}}, True),
        ("{sourceLabels: {app: canary}}", {"LABELS": {"app": "other"}}, False),
        ("{sourceNamespace: team}", {"NAMESPACE": "team"}, True),
        ("{sourceNamespace: team}", {"NAMESPACE": "ops"}, False),
        ("{destinationSubnets: [127.0.0.0/24]}", {}, True),
        ("{destinationSubnets: [10.0.0.0/8]}", {}, False),
        ("{gateways: [istio-system/gw]}", {}, False),
    ],
)
def test_l4_matches_are_decided_for_the_node_and_the_listener_address(
    match: str, meta: dict[str, Any], split: bool
) -> None:
    vs = _vs(f"""  - match: [{match}]
    route: [{{destination: {{host: db, subset: v2}}}}]""")
    mesh, policy = _setup(DR, vs)
    got = _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9", **meta})
    want = "outbound|5432|v2|db" if split else "outbound|5432|db"
    assert _proxy(got["outbound|tcp|5432|db"]).cluster == want


def test_a_route_without_a_served_destination_leaves_the_port_without_a_listener() -> None:
    mesh, policy = _setup(DR, _vs("""  - route: [{destination: {host: db, subset: v9}}]"""))
    assert _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9"}) == {}


def test_tcp_services_get_their_clusters_and_subset_clusters() -> None:
    mesh, policy = _setup(DR, SPLIT)
    gen = ClusterGenerator()
    gen.use_policy(policy)
    names = {r.name for r in gen.generate(mesh, NodeInfo("n"))}
    assert {"outbound|5432|db", "outbound|5432|v1|db", "outbound|5432|v2|db", "outbound|80|web"} <= names


def test_the_sidecar_nacks_a_filter_chain_match_it_cannot_apply_by_name() -> None:
    mesh, policy = _setup(DR, SPLIT)
    listener = _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9"})["outbound|tcp|5432|db"]
    listener.filter_chains[0].filter_chain_match.prefix_ranges.add(address_prefix="10.0.0.0")
    with pytest.raises(ConfigError, match=r"filter_chains\[0\].filter_chain_match.prefix_ranges"):
        translate_listener(listener)


TLS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db, "*.example.com"]
  tls:
  - match: [{sniHosts: ["*.example.com"]}, {sniHosts: [ops.example.com], sourceNamespace: ops}]
    route: [{destination: {host: db, subset: v1}}]
  - match: [{sniHosts: [a.example.com, "*.example.com"]}]
    route:
    - {destination: {host: db, subset: v1}, weight: 50}
    - {destination: {host: db, subset: v2}, weight: 50}
  tcp:
  - route: [{destination: {host: db, subset: v2}}]
"""


def test_tls_routes_become_filter_chains_by_server_name_ahead_of_the_tcp_chain() -> None:
    mesh, policy = _setup(DR, TLS)
    listener = _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9"})["outbound|tcp|5432|db"]
    assert [li.name for li in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    chains = listener.filter_chains
    # the wildcard stays with the first route; the ops-only name is not for this node
    assert [list(c.filter_chain_match.server_names) for c in chains] == [["*.example.com"], ["a.example.com"], []]
    assert _proxy(chains[0]).cluster == "outbound|5432|v1|db"
    assert [w.name for w in _proxy(chains[1]).weighted_clusters.clusters] == [
        "outbound|5432|v1|db",
        "outbound|5432|v2|db",
    ]
    assert _proxy(chains[2]).cluster == "outbound|5432|v2|db"  # the tcp route: no or another server name
    ops = _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9", "NAMESPACE": "ops"})["outbound|tcp|5432|db"]
    assert list(ops.filter_chains[0].filter_chain_match.server_names) == ["*.example.com", "ops.example.com"]

    # the sidecar: one tcp listener, routes by the ClientHello's SNI, exact names before wildcards
    kernel = translate_listener(listener).config  # type: ignore[union-attr]
    assert [(r["match"] if "match" in r else None) for r in kernel["routes"]] == [
        {"host": {"exact": "a.example.com"}},
        {"host": {"suffix": ".example.com"}},
        None,
    ]
    assert kernel["routes"][0]["weighted_clusters"][1] == {"name": "outbound|5432|v2|db", "weight": 50}


def test_the_sidecar_nacks_what_it_cannot_do_on_chains_chosen_by_server_name() -> None:
    mesh, policy = _setup(DR, TLS)
    listener = _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9"})["outbound|tcp|5432|db"]
    listener.filter_chains[1].filter_chain_match.application_protocols.append("h2")
    with pytest.raises(ConfigError, match=r"filter_chains\[1\].filter_chain_match.application_protocols"):
        translate_listener(listener)
    listener = _listeners(mesh, policy, {"sofamesh.tcp_address": "127.0.0.9"})["outbound|tcp|5432|db"]
    listener.filter_chains[0].transport_socket.name = "envoy.transport_sockets.tls"
    # a chain terminating TLS by server name must end in an HTTP connection manager (tls_servers)
    with pytest.raises(ConfigError, match=r"filter_chains\[0\]\.filters: a chain terminating TLS by server name"):
        translate_listener(listener)
