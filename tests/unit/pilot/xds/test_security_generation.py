"""Istio's security policy -> what Pilot sends a sidecar: inbound listeners whose TLS follows
PeerAuthentication and whose filters carry AuthorizationPolicy and RequestAuthentication, and auto
mTLS on outbound clusters; checked as the sidecar's xDS client translates them."""

from __future__ import annotations

from typing import Any

import pytest

from sofamesh.core.xds.translate import translate_cluster, translate_listener
from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.xds.generator import NodeInfo
from sofamesh.pilot.xds.generators import ClusterGenerator
from sofamesh.pilot.xds.inbound import InboundClusterGenerator, InboundListenerGenerator
from sofamesh.pilot.xds.rpc import rpc_generators
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed
from tests.unit.pilot.xds.test_policy_generation import _docs

MESHED = {"security.istio.io/tlsMode": "istio", "sofamesh.io/service-account": "provider", "app": "echo"}
PROVIDER = NodeInfo("p1", user_agent="sofamesh/1", metadata={"sofamesh.mtls": True, "sofamesh.instances": "e1,b1"})
CONSUMER = NodeInfo("c1", user_agent="sofamesh/1", metadata={"sofamesh.mtls": True})
PLAIN = NodeInfo("c2", user_agent="sofamesh/1")


def _mesh() -> MeshModel:
    mesh = MeshModel([Fixed(
        [Service("echo", protocol="http", ports=(8080,)), Service("com.acme.Echo:1.0", protocol="bolt", ports=(12200,))],
        [ServiceInstance("echo", "e1", "127.0.0.2", 8080, labels=MESHED),
         ServiceInstance("com.acme.Echo:1.0", "b1", "127.0.0.2", 12200, labels={**MESHED, "sofamesh.io/app-port": "12201"})])])
    mesh.refresh()
    return mesh


def _applied(text: str = "") -> AppliedPolicy:
    policy = PolicyModel()
    if text:
        policy.sync(_docs(text))
        assert not policy.rejections(), policy.rejections()
    return AppliedPolicy(policy, "cluster.local")


def _listeners(applied: AppliedPolicy, node: NodeInfo = PROVIDER) -> dict[str, dict[str, Any]]:
    gen = InboundListenerGenerator()
    gen.use_policy(applied)
    out = {}
    for res in gen.generate(_mesh(), node):
        t = translate_listener(res.message, ("http1", "http2"))
        assert t is not None
        out[res.name] = t.config
    return out


def test_a_workloads_instances_get_inbound_listeners_on_their_address_forwarding_to_the_local_app() -> None:
    listeners = _listeners(_applied())
    assert set(listeners) == {"inbound|8080|127.0.0.2", "inbound|12200|127.0.0.2"}
    http = listeners["inbound|8080|127.0.0.2"]
    assert http["address"] == "127.0.0.2:8080"
    assert http["tls"] == {"secret": "default", "ca_secret": "ROOTCA", "require_client_cert": True, "plaintext": True}
    assert http["filters"] == [{"type": "authn.mtls", "config": {"mode": "PERMISSIVE",
                                                                 "trust_domains": ["cluster.local"]}}]
    bolt = listeners["inbound|12200|127.0.0.2"]
    assert bolt["protocols"] == ["bolt"] and bolt["routes"][0]["cluster"] == "inbound|12200|127.0.0.2"
    clusters = InboundClusterGenerator()
    eps = {r.name: translate_cluster(r.message).config["endpoints"] for r in clusters.generate(_mesh(), PROVIDER)}
    assert eps == {"inbound|8080|127.0.0.2": [{"address": "127.0.0.1:8080"}],
                   "inbound|12200|127.0.0.2": [{"address": "127.0.0.1:12201"}]}
    assert _listeners(_applied(), PLAIN) == {}
    assert _listeners(_applied(), CONSUMER) == {}


@pytest.mark.parametrize(("policy", "http_mode", "bolt_mode"), [
    ("", "PERMISSIVE", "PERMISSIVE"),
    ("kind: PeerAuthentication\nmetadata: {name: mesh, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}",
     "STRICT", "STRICT"),
    ("kind: PeerAuthentication\nmetadata: {name: mesh, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n"
     "kind: PeerAuthentication\nmetadata: {name: ns}\nspec: {mtls: {mode: DISABLE}}", "DISABLE", "DISABLE"),
    ("kind: PeerAuthentication\nmetadata: {name: ns}\nspec: {mtls: {mode: DISABLE}}\n---\n"
     "kind: PeerAuthentication\nmetadata: {name: echo}\nspec: {selector: {matchLabels: {app: echo}}, "
     "mtls: {mode: STRICT}, portLevelMtls: {12200: {mode: PERMISSIVE}}}", "STRICT", "PERMISSIVE"),
])
def test_peer_authentication_at_mesh_namespace_workload_and_port_level_sets_the_inbound_tls(
        policy: str, http_mode: str, bolt_mode: str) -> None:
    text = "\n---\n".join(f"apiVersion: security.istio.io/v1\n{d}" for d in policy.split("\n---\n")) if policy else ""
    listeners = _listeners(_applied(text))
    for name, mode in (("inbound|8080|127.0.0.2", http_mode), ("inbound|12200|127.0.0.2", bolt_mode)):
        lc = listeners[name]
        if mode == "DISABLE":
            assert "tls" not in lc and not lc.get("filters")
        else:
            assert lc["tls"].get("plaintext", False) is (mode == "PERMISSIVE")
            assert lc["filters"][0]["config"]["mode"] == mode


AUTHZ = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-callers}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/consumer"]}}]
      to: [{operation: {methods: [echo], ports: ["12200"]}}]
    - from: [{source: {serviceAccounts: [default/consumer]}}]
    - to: [{operation: {paths: ["/admin*"], notPorts: ["12200"]}}]
      when: [{key: "request.auth.claims[group]", values: [admins]}, {key: destination.ip, values: [10.0.0.1]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: istio-system}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: echo}}
  jwtRules: [{issuer: "https://issuer.example", jwksUri: "https://issuer.example/jwks", audiences: [echo]}]
"""


def test_authorization_policy_becomes_rbac_per_port_and_request_authentication_becomes_jwt() -> None:
    listeners = _listeners(_applied(AUTHZ))
    bolt = {f["type"]: f["config"] for f in listeners["inbound|12200|127.0.0.2"]["filters"]}
    assert list(bolt) == ["authn.mtls", "authn.jwt", "authz.rbac"]
    assert bolt["authn.jwt"] == {"providers": [{"name": "default.jwt.0", "issuer": "https://issuer.example",
                                                "audiences": ["echo"], "jwks_uri": "https://issuer.example/jwks"}]}
    assert bolt["authz.rbac"]["policies"] == [
        {"name": "default.echo-callers", "action": "ALLOW", "dry_run": False, "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/consumer"]}}],
             "to": [{"operation": {"methods": ["echo"]}}]},
            {"from": [{"source": {"principals": ["*/ns/default/sa/consumer"]}}]}]},
        {"name": "istio-system.audit-all", "action": "DENY", "dry_run": True, "rules": [{}]}]
    http = {f["type"]: f["config"] for f in listeners["inbound|8080|127.0.0.2"]["filters"]}
    # the first rule names port 12200 only; the second's serviceAccounts are principals of any
    # trust domain; the third has a condition the sidecar cannot evaluate (destination.ip): as an
    # ALLOW rule it never grants
    assert http["authz.rbac"]["policies"][0]["rules"] == [
        {"from": [{"source": {"principals": ["*/ns/default/sa/consumer"]}}]}]


@pytest.mark.parametrize(("source", "action", "expected"), [
    ("{serviceAccounts: [consumer, prod/web], notServiceAccounts: [bad]}", "ALLOW",
     [{"from": [{"source": {"principals": ["*/ns/default/sa/consumer", "*/ns/prod/sa/web"],
                            "notPrincipals": ["*/ns/default/sa/bad"]}}]}]),
    ("{remoteIpBlocks: [10.0.0.0/8], notRemoteIpBlocks: [10.1.0.0/16]}", "ALLOW",
     [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"], "notIpBlocks": ["10.1.0.0/16"]}}]}]),
    # ipBlocks and remoteIpBlocks at once cannot be written: never grants, denies more
    ("{ipBlocks: [10.0.0.0/8], remoteIpBlocks: [192.168.0.0/16]}", "ALLOW", []),
    ("{ipBlocks: [10.0.0.0/8], remoteIpBlocks: [192.168.0.0/16]}", "DENY",
     [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]),
])
def test_service_accounts_and_remote_ip_blocks_become_principals_and_ip_blocks(
        source: str, action: str, expected: list[dict[str, Any]]) -> None:
    policy = (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p}}\n"
              f"spec: {{selector: {{matchLabels: {{app: echo}}}}, action: {action}, rules: [{{from: [{{source: {source}}}]}}]}}")
    http = {f["type"]: f["config"] for f in _listeners(_applied(policy))["inbound|8080|127.0.0.2"]["filters"]}
    assert http["authz.rbac"]["policies"][0]["rules"] == expected


def test_custom_is_not_enforced_and_target_ref_selects_the_workloads_of_a_service() -> None:
    custom = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext}\n"
              "spec: {action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {paths: [/admin]}}]}]}")
    http = {f["type"]: f["config"] for f in _listeners(_applied(custom))["inbound|8080|127.0.0.2"]["filters"]}
    assert "authz.rbac" not in http  # documented: CUSTOM is accepted and not enforced
    by_ref = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-echo}\n"
              "spec: {targetRefs: [{kind: Service, group: '', name: echo}], action: DENY, rules: [{}]}")
    for lst in _listeners(_applied(by_ref)).values():  # the workload serving `echo`: all its ports, as Istio
        assert {f["type"]: f["config"] for f in lst["filters"]}["authz.rbac"]["policies"][0]["action"] == "DENY"
    other = by_ref.replace("name: echo}", "name: reviews}")
    for lst in _listeners(_applied(other)).values():
        assert "authz.rbac" not in {f["type"] for f in lst["filters"]}


def test_auto_mtls_checks_the_destinations_spiffe_id_for_proxies_holding_a_certificate() -> None:
    mesh = _mesh()
    for protocol_gen in (ClusterGenerator(), rpc_generators("bolt", 12220)["cds.bolt"]):
        protocol_gen.use_policy(_applied())
        [res] = list(protocol_gen.generate(mesh, CONSUMER))
        tls = translate_cluster(res.message).config["tls"]
        assert tls == {"secret": "default", "ca_secret": "ROOTCA",
                       "match_sans": ["spiffe://cluster.local/ns/default/sa/provider"]}
        [plain] = list(protocol_gen.generate(mesh, PLAIN))
        assert "tls" not in translate_cluster(plain.message).config
    gen = ClusterGenerator()
    gen.use_policy(_applied("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: plaintext}\n"
                            "spec: {mtls: {mode: DISABLE}}"))
    [res] = list(gen.generate(mesh, CONSUMER))
    assert "tls" not in translate_cluster(res.message).config


def test_an_envoy_gets_its_http_ports_with_envoys_rbac_filters_deny_first_and_jwt_only_rules_left_out() -> None:
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    envoy = NodeInfo("e1", user_agent="envoy/1.40", metadata={"sofamesh.mtls": True, "sofamesh.instances": "e1,b1"})
    gen = InboundListenerGenerator()
    gen.use_policy(_applied(AUTHZ + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt-only}
spec: {action: ALLOW, rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]}
"""))
    [res] = list(gen.generate(_mesh(), envoy))  # the Bolt port is left out: Envoy has no rpc_proxy
    assert res.name == "inbound|8080|127.0.0.2"
    hcm = hcm_pb2.HttpConnectionManager()
    res.message.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.rbac"] * 2 + ["envoy.filters.http.router"]
    shadow, allow = rbac_pb2.RBAC(), rbac_pb2.RBAC()
    hcm.http_filters[0].typed_config.Unpack(shadow)
    hcm.http_filters[1].typed_config.Unpack(allow)
    assert list(shadow.shadow_rules.policies) == ["istio-system.audit-all[0]"] and not shadow.HasField("rules")
    # echo-callers' only rule for this port is its serviceAccounts one (a principal suffix, any
    # trust domain); jwt-only's rule needs a JWT filter Envoy is not sent
    assert allow.rules.action == allow.rules.ALLOW and list(allow.rules.policies) == ["default.echo-callers[0]"]
    assert "suffix: \"/ns/default/sa/consumer\"" in str(allow.rules.policies["default.echo-callers[0]"])


def test_a_partly_meshed_service_gets_mtls_only_to_its_meshed_endpoints() -> None:
    from sofamesh.core.xds.translate import translate_load_assignment
    from sofamesh.pilot.xds.generators import EndpointGenerator

    mesh = MeshModel([Fixed([Service("echo", protocol="http", ports=(8080,))], [
        ServiceInstance("echo", "e1", "127.0.0.2", 8080, labels=MESHED),
        ServiceInstance("echo", "e2", "127.0.0.3", 8080)])])
    mesh.refresh()
    gen = ClusterGenerator()
    gen.use_policy(_applied())
    [res] = list(gen.generate(mesh, CONSUMER))
    assert not res.message.HasField("transport_socket")
    assert [m.name for m in res.message.transport_socket_matches] == ["tlsMode-istio", "tlsMode-disabled"]
    config = translate_cluster(res.message).config
    assert "tls" not in config
    assert config["tls_matches"] == [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
         "tls": {"secret": "default", "ca_secret": "ROOTCA",
                 "match_sans": ["spiffe://cluster.local/ns/default/sa/provider"]}},
        {"name": "tlsMode-disabled", "match": {}}]
    [cla] = list(EndpointGenerator().generate(mesh, CONSUMER))
    eps = {e["address"]: e.get("labels", {}) for e in translate_load_assignment(cla.message)}
    assert eps == {"127.0.0.2:8080": {"tlsMode": "istio"}, "127.0.0.3:8080": {}}
    # A proxy without a certificate gets neither.
    [plain] = list(gen.generate(mesh, PLAIN))
    assert not plain.message.transport_socket_matches and "tls" not in translate_cluster(plain.message).config


@pytest.mark.parametrize(("tls", "expected"), [
    ("{mode: DISABLE}", None),
    ("{mode: ISTIO_MUTUAL, sni: echo.default, subjectAltNames: [spiffe://cluster.local/ns/default/sa/other]}",
     {"secret": "default", "ca_secret": "ROOTCA", "sni": "echo.default",
      "match_sans": ["spiffe://cluster.local/ns/default/sa/other"]}),
    ("{mode: SIMPLE, caCertificates: /etc/ca.pem, subjectAltNames: [echo.example]}",
     {"ca": "/etc/ca.pem", "match_sans": ["echo.example"]}),
    ("{mode: MUTUAL, clientCertificate: /etc/c.pem, privateKey: /etc/k.pem}", {"cert": "/etc/c.pem", "key": "/etc/k.pem"}),
])
def test_a_destination_rules_tls_replaces_auto_mtls(tls: str, expected: dict[str, Any] | None) -> None:
    gen = ClusterGenerator()
    gen.use_policy(_applied(f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo}}\n"
                            f"spec: {{host: echo, trafficPolicy: {{tls: {tls}}}}}"))
    for node in (CONSUMER, PLAIN):
        [res] = list(gen.generate(_mesh(), node))
        assert translate_cluster(res.message).config.get("tls") == expected


def test_a_subsets_tls_replaces_auto_mtls_for_that_subset_only() -> None:
    gen = ClusterGenerator()
    gen.use_policy(_applied("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets:
    - {name: secure, labels: {app: echo}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
    - {name: plain, labels: {app: echo}, trafficPolicy: {tls: {mode: DISABLE}}}
    - {name: auto, labels: {app: echo}}
"""))
    got = {r.name: translate_cluster(r.message).config.get("tls") for r in gen.generate(_mesh(), CONSUMER)}
    provider = ["spiffe://cluster.local/ns/default/sa/provider"]
    # ISTIO_MUTUAL naming no subjectAltNames checks the destination's identities (as auto mTLS does)
    assert got["outbound|8080|secure|echo"]["match_sans"] == provider
    assert got["outbound|8080|plain|echo"] is None  # DISABLE: plaintext, auto mTLS does not come back
    assert got["outbound|8080|auto|echo"]["match_sans"] == provider
    assert got["outbound|8080|echo"]["match_sans"] == provider


@pytest.mark.parametrize("where", ["trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}",
                                   "trafficPolicy: {portLevelSettings: [{port: {number: 8080}, tls: {mode: ISTIO_MUTUAL}}]}"])
def test_istio_mutual_naming_no_subject_alt_names_checks_the_destinations_identities(where: str) -> None:
    gen = ClusterGenerator()
    gen.use_policy(_applied(f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo}}\n"
                            f"spec: {{host: echo, {where}}}"))
    got = {r.name: translate_cluster(r.message).config.get("tls") for r in gen.generate(_mesh(), CONSUMER)}
    assert got["outbound|8080|echo"]["match_sans"] == ["spiffe://cluster.local/ns/default/sa/provider"]
    assert got["outbound|8080|echo"]["secret"] == "default" and got["outbound|8080|echo"]["ca_secret"] == "ROOTCA"


def test_an_envoy_gets_a_jwt_filter_before_rbac_and_request_principals_match_the_verified_payload() -> None:
    from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    envoy = NodeInfo("e1", user_agent="envoy/1.40", metadata={"sofamesh.mtls": True, "sofamesh.instances": "e1"})
    gen = InboundListenerGenerator()
    gen.use_policy(_applied("""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: idp}
spec:
  jwtRules:
    - {issuer: "https://idp.example", audiences: [web], jwks: '{"keys": []}'}
    - {issuer: "https://remote.example", jwksUri: "https://remote.example/jwks"}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: users}
spec:
  rules:
    - from: [{source: {requestPrincipals: ["https://idp.example/alice", "https://idp.example/svc-*", "*"]}}]
    - from: [{source: {requestPrincipals: ["https://other.example/bob"]}}]
    - from: [{source: {requestPrincipals: ["*/alice"]}}]
"""))
    [res] = list(gen.generate(_mesh(), envoy))
    hcm = hcm_pb2.HttpConnectionManager()
    res.message.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "envoy.filters.http.router"]
    jwt, allow = jwt_pb2.JwtAuthentication(), rbac_pb2.RBAC()
    hcm.http_filters[0].typed_config.Unpack(jwt)
    hcm.http_filters[1].typed_config.Unpack(allow)
    # the jwksUri provider is not sent; "any provider, or no token"
    [(name, provider)] = jwt.providers.items()
    assert name == "default.idp.0" and provider.issuer == "https://idp.example" and list(provider.audiences) == ["web"]
    # the token is removed before the app unless forwardOriginalToken (Istio's default)
    assert provider.local_jwks.inline_string == '{"keys": []}' and not provider.forward
    assert provider.payload_in_metadata == "payload" and not provider.forward_payload_header
    [rule] = jwt.rules
    assert [r.WhichOneof("requires_type") for r in rule.requires.requires_any.requirements] == [
        "provider_name", "allow_missing"]
    policies = allow.rules.policies
    assert sorted(policies) == ["default.users[0]", "default.users[1]", "default.users[2]"]
    first = str(policies["default.users[0]"])
    assert 'exact: "https://idp.example"' in first and 'exact: "alice"' in first and 'prefix: "svc-"' in first
    assert "present_match: true" in first and first.count('key: "payload"') == 5
    # "*/alice": a sub ending in "/alice", or the sub "alice" of a verified issuer
    third = str(policies["default.users[2]"])
    assert 'suffix: "/alice"' in third and 'exact: "alice"' in third and 'exact: "https://idp.example"' in third
    assert "not_id" in str(policies["default.users[1]"]) and "any: true" in str(policies["default.users[1]"])


def test_an_envoy_gets_a_jwks_uri_inlined_token_locations_and_request_auth_conditions() -> None:
    from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    envoy = NodeInfo("e1", user_agent="envoy/1.40", metadata={"sofamesh.mtls": True, "sofamesh.instances": "e1"})
    asked: list[str] = []

    class Keys:
        def keys(self, uri: str) -> str:
            asked.append(uri)
            return '{"keys": ["fetched"]}'

    gen = InboundListenerGenerator()
    gen.use_jwks(Keys())  # type: ignore[arg-type]
    gen.use_policy(_applied("""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: idp}
spec:
  jwtRules:
    - issuer: "https://remote.example"
      jwksUri: "https://remote.example/jwks"
      fromHeaders: [{name: x-jwt, prefix: "Token "}]
      fromParams: [token]
      outputPayloadToHeader: x-jwt-payload
      forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: users}
spec:
  rules:
    - when:
        - {key: "request.auth.claims[groups]", values: [admins]}
        - {key: "request.auth.claims[org][team]", values: ["core-*"]}
        - {key: request.auth.audiences, values: [web]}
        - {key: request.auth.presenter, notValues: [evil]}
        - {key: request.auth.principal, values: ["https://remote.example/alice"]}
"""))
    [res] = list(gen.generate(_mesh(), envoy))
    hcm = hcm_pb2.HttpConnectionManager()
    res.message.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    jwt, allow = jwt_pb2.JwtAuthentication(), rbac_pb2.RBAC()
    hcm.http_filters[0].typed_config.Unpack(jwt)
    hcm.http_filters[1].typed_config.Unpack(allow)
    assert asked == ["https://remote.example/jwks"]
    [provider] = jwt.providers.values()
    assert provider.local_jwks.inline_string == '{"keys": ["fetched"]}'
    assert [(h.name, h.value_prefix) for h in provider.from_headers] == [("x-jwt", "Token ")]
    assert list(provider.from_params) == ["token"]
    assert provider.forward and provider.forward_payload_header == "x-jwt-payload"
    [policy] = allow.rules.policies.values()
    text = str(policy)
    for key in ("groups", "org", "team", "aud", "azp", "iss", "sub"):
        assert f'key: "{key}"' in text, key
    assert 'exact: "admins"' in text and 'prefix: "core-"' in text and "list_match" in text and "not_id" in text
    # the sidecar's authn.jwt gets the fields it applies (it reads headers and forwards the token)
    sofamesh = NodeInfo("s1", user_agent="sofamesh/1", metadata={"sofamesh.mtls": True, "sofamesh.instances": "e1"})
    [res] = list(gen.generate(_mesh(), sofamesh))
    assert "from_params" not in str(res.message) and "output_payload" not in str(res.message)
    assert "jwks_uri" in str(res.message) and "x-jwt" in str(res.message)
