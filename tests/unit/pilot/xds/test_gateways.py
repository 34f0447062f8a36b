"""Istio Gateways + bound VirtualServices -> a gateway node's listeners and route configs."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.xds.gateways import GatewayListenerGenerator, GatewayRouteGenerator
from sofamesh.pilot.xds.generator import NodeInfo
from sofamesh.pilot.xds.generators import OutboundListenerGenerator
from sofamesh.pilot.xds.rpc import RpcListenerGenerator
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed
from tests.unit.pilot.xds.test_policy_generation import _docs

GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/a.pem, privateKey: /certs/a-key.pem}
  - port: {number: 8443, name: https-b, protocol: HTTPS}
    hosts: ["*/b.example.com"]
    tls: {mode: MUTUAL, serverCertificate: /certs/b.pem, privateKey: /certs/b-key.pem, caCertificates: /certs/ca.pem}
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [a.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 8080, name: http-b, protocol: HTTP}
    hosts: [b.example.com]
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ["*.db.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 7443, name: vault, protocol: HTTPS}
    hosts: [vault.example.com]
    tls: {mode: SIMPLE, credentialName: vault-cert}
"""
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [default/edge]
  http:
  - match: [{uri: {prefix: /v2}, gateways: [edge]}]
    route: [{destination: {host: web, port: {number: 80}}}]
  - match: [{uri: {prefix: /mesh-only}, gateways: [mesh]}]
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: ["*.db.example.com", other.example.com]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [one.db.example.com]}]
    route: [{destination: {host: db, port: {number: 5432}}}]
  - match: [{sniHosts: [other.example.com]}]
    route: [{destination: {host: db, port: {number: 5432}}}]
"""
GATEWAY_NODE = NodeInfo(
    "router~127.0.0.1~edge.default~default.svc.cluster.local",
    metadata={"LABELS": {"istio": "ingressgateway"}, "NAMESPACE": "default", "sofamesh.gateway_address": "127.0.0.1"},
)


def _setup(*docs: str) -> tuple[MeshModel, AppliedPolicy]:
    insts = [ServiceInstance("web", "w1", "127.0.0.1", 7001), ServiceInstance("db", "d1", "127.0.0.1", 7002)]
    mesh = MeshModel([Fixed([Service("web", ports=(80,)), Service("db", protocol="tcp", ports=(5432,))], insts)])
    mesh.refresh()
    policy = PolicyModel()
    policy.sync(_docs("\n---\n".join(docs)))
    assert not [v for v in policy.rejections()], [v.to_dict() for v in policy.rejections()]
    return mesh, AppliedPolicy(policy)


def _generate(gen: Any, policy: AppliedPolicy, mesh: MeshModel, node: NodeInfo = GATEWAY_NODE) -> dict[str, Any]:
    if hasattr(gen, "use_policy"):
        gen.use_policy(policy)
    return {r.name: r.message for r in gen.generate(mesh, node)}


def _tls(chain: Any) -> tls_pb2.DownstreamTlsContext:
    ctx = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(ctx)
    return ctx


def test_each_port_of_the_selected_gateway_gets_a_listener_with_a_chain_per_tls_server() -> None:
    mesh, policy = _setup(GATEWAY, VS)
    got = _generate(GatewayListenerGenerator(), policy, mesh)
    assert sorted(got) == ["127.0.0.1_8080", "127.0.0.1_8443", "127.0.0.1_9443"]  # 7443: credentialName left out
    https = got["127.0.0.1_8443"]
    assert [list(c.filter_chain_match.server_names) for c in https.filter_chains] == [
        ["a.example.com"],
        ["b.example.com"],
    ]
    a, b = (_tls(c) for c in https.filter_chains)
    assert a.common_tls_context.tls_certificates[0].certificate_chain.filename == "/certs/a.pem"
    assert list(a.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    assert not a.require_client_certificate.value and not a.common_tls_context.HasField("validation_context")
    assert b.require_client_certificate.value
    assert b.common_tls_context.validation_context.trusted_ca.filename == "/certs/ca.pem"
    hcm = hcm_pb2.HttpConnectionManager()
    assert https.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.rds.route_config_name == "https.8443"
    assert [f.name for f in https.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    plain = got["127.0.0.1_8080"]
    assert len(plain.filter_chains) == 1 and not plain.filter_chains[0].HasField("transport_socket")
    passthrough = got["127.0.0.1_9443"]
    # only the sniHosts the server's hosts cover
    assert [list(c.filter_chain_match.server_names) for c in passthrough.filter_chains] == [["one.db.example.com"]]
    assert not passthrough.filter_chains[0].HasField("transport_socket")
    assert passthrough.filter_chains[0].filters[0].name == "envoy.filters.network.tcp_proxy"


def test_route_configs_hold_the_bound_virtual_service_hosts_with_the_gateway_matches() -> None:
    mesh, policy = _setup(GATEWAY, VS)
    got = _generate(GatewayRouteGenerator(), policy, mesh)
    assert sorted(got) == ["http.8080", "https.8443"]
    http = {vh.name: vh for vh in got["http.8080"].virtual_hosts}
    assert list(http["a.example.com:8080"].domains) == ["a.example.com", "a.example.com:*"]
    assert http["a.example.com:8080"].require_tls == http["a.example.com:8080"].ALL  # httpsRedirect
    assert http["b.example.com:8080"].require_tls == http["b.example.com:8080"].NONE
    routes = http["b.example.com:8080"].routes
    # the mesh-only match is left out; the gateway's own short name applies in its namespace
    assert [r.match.prefix for r in routes] == ["/v2", "/"]
    assert routes[0].route.cluster == "outbound|80|web"
    assert sorted(vh.name for vh in got["https.8443"].virtual_hosts) == ["a.example.com:8443", "b.example.com:8443"]


def test_a_gateway_the_node_labels_do_not_select_gives_nothing_and_sidecars_get_no_gateway_listeners() -> None:
    mesh, policy = _setup(GATEWAY, VS)
    other = NodeInfo("router~127.0.0.1~x.default~default.svc.cluster.local", metadata={"LABELS": {"istio": "egress"}})
    assert _generate(GatewayListenerGenerator(), policy, mesh, other) == {}
    sidecar = NodeInfo(
        "sidecar~127.0.0.1~web.default~default.svc.cluster.local", metadata={"LABELS": {"istio": "ingressgateway"}}
    )
    assert _generate(GatewayListenerGenerator(), policy, mesh, sidecar) == {}
    assert _generate(GatewayRouteGenerator(), policy, mesh, sidecar) == {}


def test_a_gateway_node_gets_no_sidecar_listeners() -> None:
    mesh, policy = _setup(GATEWAY, VS)
    assert _generate(OutboundListenerGenerator(), policy, mesh) == {}
    assert _generate(OutboundListenerGenerator(), policy, mesh, NodeInfo("sidecar~a")) != {}
    rpc = RpcListenerGenerator("bolt", 12200, always_listen=True)
    assert _generate(rpc, policy, mesh, NodeInfo("router~a", user_agent="sofamesh/1")) == {}


def test_a_virtual_service_of_another_namespace_binds_only_where_the_server_host_allows_it() -> None:
    gw = GATEWAY.replace('hosts: ["*/b.example.com"]', "hosts: [default/b.example.com]")
    vs = VS.replace("name: web, namespace: default", "name: web, namespace: team").replace(
        "gateways: [edge]}", "gateways: [default/edge]}"
    )
    mesh, policy = _setup(gw, vs)
    got = _generate(GatewayRouteGenerator(), policy, mesh)
    # a.example.com (any namespace) takes the team's VirtualService, default/b.example.com does not
    assert sorted(vh.name for vh in got["https.8443"].virtual_hosts) == ["a.example.com:8443"]


def test_a_credential_name_is_admitted_without_a_warning() -> None:
    """The Secret it names is looked up when listeners are built (tests/unit/pilot/xds/test_gateway_credentials.py);
    admission says nothing of it, as Istio's webhook."""
    from sofamesh.pilot.policy.validate import validate

    verdict = validate(_docs(GATEWAY)[0].body, _docs(GATEWAY)[0].source)
    assert verdict.accepted and not verdict.issues


def test_the_sidecar_reads_a_gateway_port_as_tls_servers_sharing_one_connection_manager() -> None:
    from sofamesh.core.errors import ConfigError
    from sofamesh.core.xds.translate import translate_listener, translate_route_configuration

    mesh, policy = _setup(GATEWAY, VS)
    listeners = _generate(GatewayListenerGenerator(), policy, mesh)
    got = translate_listener(listeners["127.0.0.1_8443"], ("http1", "http2"))
    assert got is not None and got.rds == "https.8443"
    assert got.config["tls_servers"] == [
        {
            "server_names": ["a.example.com"],
            "tls": {"cert": "/certs/a.pem", "key": "/certs/a-key.pem", "alpn": ["h2", "http/1.1"]},
        },
        {
            "server_names": ["b.example.com"],
            "tls": {
                "cert": "/certs/b.pem",
                "key": "/certs/b-key.pem",
                "ca": "/certs/ca.pem",
                "require_client_cert": True,
                "alpn": ["h2", "http/1.1"],
            },
        },
    ]
    passthrough = translate_listener(listeners["127.0.0.1_9443"])
    assert passthrough is not None and [r["match"] for r in passthrough.config["routes"]] == [
        {"host": {"exact": "one.db.example.com"}}
    ]
    # a passthrough chain next to terminating ones: a passthrough server routed by the same name
    mixed = listeners["127.0.0.1_8443"]
    mixed.filter_chains.append(listeners["127.0.0.1_9443"].filter_chains[0])
    both = translate_listener(mixed)
    assert both is not None and both.rds == "https.8443" and both.config["protocols"][-1] == "tcp"
    assert both.config["tls_servers"][2] == {
        "server_names": ["one.db.example.com"],
        "passthrough": {"name": "default.db.tls.0", "cluster": "outbound|5432|db", "timeout_ms": 0},
    }
    mixed.filter_chains[2].filter_chain_match.ClearField("server_names")
    with pytest.raises(ConfigError, match=r"filter_chains\[2\]\.filters: a chain without TLS next to chains"):
        translate_listener(mixed)

    routes = _generate(GatewayRouteGenerator(), policy, mesh)
    kernel = translate_route_configuration(routes["http.8080"])
    redirect = [r for r in kernel if "redirect" in r]
    assert [r["match"]["host"] for r in redirect] == [{"exact": "a.example.com"}, {"prefix": "a.example.com:"}]
    assert {r["name"] for r in redirect} == {"a.example.com:8080/require_tls"}
    assert all(r["redirect"] == {"scheme": "https", "code": 301, "keep_port": True} for r in redirect)


def test_connection_managers_allow_websocket_and_the_sidecar_reads_it_as_upgrade_types() -> None:
    from envoy.config.route.v3 import route_components_pb2

    from sofamesh.core.errors import ConfigError
    from sofamesh.core.xds.translate import translate_listener, translate_route_configuration

    mesh, policy = _setup(GATEWAY, VS)
    listeners = _generate(GatewayListenerGenerator(), policy, mesh)
    got = translate_listener(listeners["127.0.0.1_8080"])
    assert got is not None and got.config["upgrade_types"] == ["websocket"]
    outbound = _generate(OutboundListenerGenerator(), policy, mesh, NodeInfo("sidecar~a"))
    sidecar = translate_listener(next(iter(outbound.values())))
    assert sidecar is not None and sidecar.config["upgrade_types"] == ["websocket"]
    # a disabled upgrade is left out; per-route upgrades are refused naming the field
    hcm = hcm_pb2.HttpConnectionManager()
    listeners["127.0.0.1_8080"].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    hcm.upgrade_configs[0].enabled.value = False
    listeners["127.0.0.1_8080"].filter_chains[0].filters[0].typed_config.Pack(hcm)
    got = translate_listener(listeners["127.0.0.1_8080"])
    assert got is not None and "upgrade_types" not in got.config
    routes = _generate(GatewayRouteGenerator(), policy, mesh)["https.8443"]
    routes.virtual_hosts[0].routes[0].route.upgrade_configs.append(
        route_components_pb2.RouteAction.UpgradeConfig(upgrade_type="websocket")
    )
    with pytest.raises(ConfigError, match=r"routes\[0\]\.route\.upgrade_configs: per-route upgrades"):
        translate_route_configuration(routes)


EDGE_SECURITY = """apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: edge-jwt, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules: [{issuer: https://issuer.example, jwks: '{"keys": []}'}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-authz, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules: [{from: [{source: {requestPrincipals: ["*"]}}], to: [{operation: {ports: ["8080"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{}]
"""
RATE_LIMITED = GATEWAY.replace(
    "metadata: {name: edge, namespace: default}",
    "metadata:\n  name: edge\n  namespace: default\n  annotations:\n"
    "    sofamesh.io/local-rate-limit: '{tokenBucket: {maxTokens: 5, tokensPerFill: 2, fillInterval: 10s}}'",
)
SOFAMESH_GATEWAY_NODE = NodeInfo(GATEWAY_NODE.id, user_agent="sofamesh/0", metadata=GATEWAY_NODE.metadata)


def _http_filters(listener: Any) -> list[hcm_pb2.HttpFilter]:
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return list(hcm.http_filters)


def test_envoy_gateways_get_the_jwt_rbac_and_rate_limit_filters_of_the_policies_selecting_them() -> None:
    from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

    mesh, policy = _setup(RATE_LIMITED, VS, EDGE_SECURITY)
    got = _generate(GatewayListenerGenerator(), policy, mesh)
    names = [f.name for f in _http_filters(got["127.0.0.1_8080"])]
    assert names == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]
    # every TLS chain of the port carries the same filters
    assert all(
        [f.name for f in _http_filters(type(got["127.0.0.1_8443"])(filter_chains=[c]))] == names
        for c in got["127.0.0.1_8443"].filter_chains
    )
    lrl = local_rate_limit_pb2.LocalRateLimit()
    assert _http_filters(got["127.0.0.1_8080"])[4].typed_config.Unpack(lrl)
    assert (lrl.token_bucket.max_tokens, lrl.token_bucket.tokens_per_fill.value) == (5, 2)
    assert lrl.token_bucket.fill_interval.seconds == 10 and lrl.filter_enforced.default_value.numerator == 100
    # the operation's port: the rule grants on 8080 only, so 8443's ALLOW policy has no rule left
    rbac = rbac_pb2.RBAC()
    assert _http_filters(got["127.0.0.1_8080"])[1].typed_config.Unpack(rbac)
    assert list(rbac.rules.policies) == ["default.edge-authz[0]"]
    https_rbac = rbac_pb2.RBAC()
    assert _http_filters(got["127.0.0.1_8443"])[1].typed_config.Unpack(https_rbac)
    assert not https_rbac.rules.policies

    # without the selector's labels: no security filters, no rate limit without the annotation
    node = NodeInfo(
        GATEWAY_NODE.id, metadata={**GATEWAY_NODE.metadata, "LABELS": {"istio": "ingressgateway", "x": "y"}}
    )
    mesh, policy = _setup(GATEWAY, VS)
    plain = _generate(GatewayListenerGenerator(), policy, mesh, node)
    assert [f.name for f in _http_filters(plain["127.0.0.1_8080"])] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_sofamesh_gateways_get_kernel_authn_authz_quota_and_telemetry_and_read_them_back() -> None:
    from sofamesh.core.xds.translate import translate_listener

    mesh, policy = _setup(RATE_LIMITED, VS, EDGE_SECURITY)
    got = _generate(GatewayListenerGenerator(), policy, mesh, SOFAMESH_GATEWAY_NODE)
    kernel = translate_listener(got["127.0.0.1_8080"])
    assert kernel is not None
    filters = kernel.config["filters"]
    assert [f["type"] for f in filters] == ["authn.jwt", "authz.rbac", "quota.local", "telemetry"]
    assert filters[0]["config"]["providers"][0]["issuer"] == "https://issuer.example"
    assert filters[1]["config"]["policies"][0]["name"] == "default.edge-authz"  # not other-workload's
    assert filters[2]["config"] == {"limit": {"rate": 0.2, "burst": 5}}
    assert filters[3]["config"] == {"reporter": "source", "workload": "edge"}
    tls = translate_listener(got["127.0.0.1_8443"])
    assert tls is not None and [f["type"] for f in tls.config["filters"]] == [
        "authn.jwt",
        "authz.rbac",
        "quota.local",
        "telemetry",
    ]


def test_a_bad_rate_limit_annotation_is_refused_naming_the_field() -> None:
    bad = GATEWAY.replace(
        "metadata: {name: edge, namespace: default}",
        "metadata:\n  name: edge\n  namespace: default\n  annotations:\n"
        "    sofamesh.io/local-rate-limit: '{tokenBucket: {maxTokens: 0, fillInterval: 10s}}'",
    )
    policy = PolicyModel()
    policy.sync(_docs(bad))
    issues = [i for v in policy.rejections() for i in v.to_dict()["issues"]]
    assert any("sofamesh.io/local-rate-limit].tokenBucket.maxTokens" in str(i) for i in issues), issues
