"""Security policy from Pilot enforced where the server is, with identities Pilot's CA issued.

Every sidecar gets its certificate from Pilot (``--token-file``, no hand-made certificate) and its
listeners and clusters over xDS. The provider's sidecar gets one inbound listener per port of its
workload's instances (HTTP, gRPC, Bolt, Dubbo), on the address consumers dial, forwarding to the
app on 127.0.0.1. Consumers' sidecars reach it over auto mTLS:

    client -> consumer sidecar (egress, plaintext) -> provider sidecar (inbound, mTLS) -> app

PeerAuthentication decides the inbound TLS (STRICT refuses a plaintext client, PERMISSIVE takes
both); AuthorizationPolicy allows one method of each service to the ``consumer`` identity, and
neither method to ``intruder``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from sofamesh.core.config.model import TlsConfig
from sofamesh.core.net.secrets import SecretStore
from sofamesh.core.net.tls import TlsSource
from sofamesh.core.security.agent import AgentSettings, WorkloadAgent
from sofamesh.testing import ProxyProcess, free_port
from tests.conformance import bolt_peers, dubbo_peers
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_http_route_fields import Echo
from tests.unit.pilot.security.test_jwks import JwksServer

from .conftest import REPO, PilotProcess, stop_process, wait_until
from .test_envoy import HttpBackend, _envoy_binary
from .test_workload_certs import _client_cert, _served, _token

ECHO = "com.example.EchoService"
MESHED = {"security.istio.io/tlsMode": "istio", "sofamesh.io/service-account": "provider", "app": "provider"}
GRPC_SERVICE = "sofamesh.test.Who"


class MeshSidecar(ProxyProcess):
    """A sidecar with its agent (identity from the token) and its config from Pilot over xDS."""

    def __init__(self, pilot: PilotProcess, tmp: Path, sa: str, instances: tuple[str, ...] = (),
                 validity_s: int = 0, args: tuple[str, ...] = ()) -> None:
        self.ports = {"http": free_port(), "bolt": free_port(), "dubbo": free_port()}
        meta: dict[str, Any] = {"sofamesh.outbound_port": self.ports["http"], "sofamesh.bolt_port": self.ports["bolt"],
                                "sofamesh.dubbo_port": self.ports["dubbo"]}
        if instances:
            meta["sofamesh.instances"] = ",".join(instances)
        super().__init__({
            "agent": {"ca_address": f"127.0.0.1:{pilot.xds_port}", "token_file": str(_token(pilot, sa, tmp / sa)),
                      "validity_s": validity_s},
            "xds": {"address": f"127.0.0.1:{pilot.xds_port}", "node_id": sa, "metadata": meta,
                    "backoff_initial_ms": 100, "backoff_max_ms": 500, "initial_fetch_timeout_ms": 10000},
            "drain_timeout_ms": 1000,
        }, timeout=30, args=args)

    def egress(self, protocol: str) -> str:
        return f"127.0.0.1:{self.ports[protocol]}"

    def xds_config(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/config_dump"))["config"])

    def listener(self, name: str) -> dict[str, Any] | None:
        return next((lst for lst in self.xds_config()["listeners"] if lst["name"] == name), None)


class GrpcApp:
    """A gRPC server with two methods of one service, ``Allowed`` and ``Denied``, each answering its name."""

    def __init__(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(GRPC_SERVICE, {
            m: grpc.unary_unary_rpc_method_handler(lambda req, ctx, m=m: m.encode()) for m in ("Allowed", "Denied")})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait(5)


def _grpc_call(target: str, method: str) -> tuple[str, str]:
    with grpc.insecure_channel(target, options=[("grpc.default_authority", "who")]) as ch:
        call = ch.unary_unary(f"/{GRPC_SERVICE}/{method}")
        try:
            return "OK", call(b"", timeout=5).decode()
        except grpc.RpcError as exc:
            return exc.code().name, str(exc.details())


def _http(url: str, host: str | None = None) -> int | str:
    try:
        return httpx.get(url, timeout=5, headers={"Host": host} if host else {}).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[dict[str, Any]]:
    pilot = PilotProcess(tmp_path / "data", config={"ca": {"min_workload_ttl_s": 2},
                                                    "jwks": {"refresh_s": 1, "retry_s": 0.5}}).start()
    started: list[Any] = [pilot]
    try:
        http, grpc_app = HttpBackend("app"), GrpcApp()
        started += [http, grpc_app]
        inbound = {k: free_port() for k in ("http", "grpc", "bolt", "dubbo")}
        # each instance is registered at the sidecar's inbound port; the app's own port is a label
        pilot.register("web", "web-1", address="127.0.0.1", port=inbound["http"], protocol="http",
                       labels={**MESHED, "sofamesh.io/app-port": str(http.port)})
        pilot.register("who", "who-1", address="127.0.0.1", port=inbound["grpc"], protocol="grpc",
                       labels={**MESHED, "sofamesh.io/app-port": str(grpc_app.port)})
        yield {"pilot": pilot, "tmp": tmp_path, "inbound": inbound, "started": started}
    finally:
        failed: list[BaseException] = []
        for s in reversed(started):
            try:
                s.stop()  # a sidecar whose log shows a problem raises here
            except Exception as exc:
                failed.append(exc)
        if failed:
            raise failed[0]


def _peer_authentication(mode: str) -> str:
    return f"""apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: {mode}}}}}
"""


def _mode(sc: MeshSidecar, port: int) -> str | None:
    """The inbound listener's authn.mtls mode; None when it has none (DISABLE) or is not there."""
    lst = sc.listener(f"inbound|{port}|127.0.0.1")
    if lst is None:
        return None
    return next((str(f["config"]["mode"]) for f in lst["filters"] if f["type"] == "authn.mtls"), None)


def test_strict_refuses_a_plaintext_client_and_permissive_takes_both(mesh: dict[str, Any]) -> None:
    pilot, tmp, port = mesh["pilot"], mesh["tmp"], mesh["inbound"]["http"]
    apply(pilot.api_url, stdin=_peer_authentication("STRICT"))
    provider = MeshSidecar(pilot, tmp, "provider", ("web-1", "who-1")).start()
    mesh["started"].append(provider)
    consumer = MeshSidecar(pilot, tmp, "consumer").start()
    mesh["started"].append(consumer)
    wait_until(lambda: _mode(provider, port) == "STRICT", 15, what="the STRICT inbound listener")
    via_consumer = f"http://{consumer.egress('http')}/"
    wait_until(lambda: _http(via_consumer, "web") == 200, 15, what="consumer -> provider over auto mTLS")
    tls = next(c for c in consumer.xds_config()["clusters"] if c["name"].endswith("|web"))["tls"]
    assert tls["match_sans"] == ["spiffe://cluster.local/ns/default/sa/provider"]
    # a plaintext client straight to the provider's inbound port: the TLS listener refuses it
    assert _http(f"http://127.0.0.1:{port}/") in ("RemoteProtocolError", "ReadError", "ConnectError")
    with socket.create_connection(("127.0.0.1", mesh["inbound"]["grpc"]), timeout=5) as s:  # gRPC port too
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert s.recv(100) == b""

    t = apply(pilot.api_url, stdin=_peer_authentication("PERMISSIVE"))
    follows(lambda: _mode(provider, port) == "PERMISSIVE", t, "PERMISSIVE", timeout=15)
    wait_until(lambda: _http(f"http://127.0.0.1:{port}/") == 200, 10, what="plaintext under PERMISSIVE")
    assert _http(via_consumer, "web") == 200
    stats = provider.stats()["filters"][f"inbound|{port}|127.0.0.1|authn.mtls"]
    assert stats["mtls_authenticated"] >= 1 and stats["mtls_plaintext"] >= 1, stats

    # the workload's own PeerAuthentication wins over the mesh's, and its port level over its own mode
    grpc_port = mesh["inbound"]["grpc"]
    t = apply(pilot.api_url, stdin=f"""apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: provider}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls: {{"{port}": {{mode: DISABLE}}}}
""")
    follows(lambda: _mode(provider, grpc_port) == "STRICT" and _mode(provider, port) is None, t,
            "workload STRICT, port DISABLE", timeout=15)
    lst = provider.listener(f"inbound|{port}|127.0.0.1")
    assert lst is not None and lst.get("tls") is None and lst["filters"] == []
    wait_until(lambda: _http(f"http://127.0.0.1:{port}/") == 200, 10, what="plaintext on the DISABLEd port")
    assert _http(via_consumer, "web") == 200  # auto mTLS steps aside for a DISABLEd destination
    tls_now = next(c for c in consumer.xds_config()["clusters"] if c["name"].endswith("|web")).get("tls")
    assert tls_now is None, tls_now


AUTHZ = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: provider-callers}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  action: ALLOW
  rules:
    - from: [{{source: {{principals: ["cluster.local/ns/default/sa/consumer"]}}}}]
      to:
        - operation: {{methods: [echo], ports: ["{bolt}", "{dubbo}"]}}
        - operation: {{paths: ["/allowed"], ports: ["{http}"]}}
        - operation: {{paths: ["/{grpc_service}/Allowed"], ports: ["{grpc}"]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-add}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  action: DENY
  rules: [{{to: [{{operation: {{methods: [add, plus]}}}}]}}]
"""


def test_authorization_policy_allows_one_method_and_denies_another_by_caller_identity(mesh: dict[str, Any]) -> None:
    bolt_peers.require_node()
    dubbo_peers.require_dubbo_peers()
    pilot, tmp, inbound = mesh["pilot"], mesh["tmp"], mesh["inbound"]
    with bolt_peers.node_provider(ECHO, "A") as bolt_app, dubbo_peers.Provider("p1") as dubbo_app:
        pilot.register(f"{ECHO}:1.0", "echo-1", address="127.0.0.1", port=inbound["bolt"], protocol="bolt",
                       labels={**MESHED, "sofamesh.io/app-port": str(bolt_app.port)})
        pilot.register(dubbo_peers.SERVICE, "dubbo-1", address="127.0.0.1", port=inbound["dubbo"], protocol="dubbo",
                       labels={**MESHED, "sofamesh.io/app-port": str(dubbo_app.port)})
        apply(pilot.api_url, stdin=_peer_authentication("STRICT") + "---\n" + AUTHZ.format(
            grpc_service=GRPC_SERVICE, **inbound))
        provider = MeshSidecar(pilot, tmp, "provider", ("web-1", "who-1", "echo-1", "dubbo-1")).start()
        mesh["started"].append(provider)
        callers = {sa: MeshSidecar(pilot, tmp, sa).start() for sa in ("consumer", "intruder")}
        mesh["started"].extend(callers.values())
        # many processes start at once here (three sidecars, Node providers): allow for a loaded machine
        for name in ("http", "grpc", "bolt", "dubbo"):
            wait_until(lambda name=name: _mode(provider, inbound[name]) == "STRICT", 45, what=f"inbound {name}")
        for sa, sc in callers.items():
            seen: list[int | str] = []
            try:
                wait_until(lambda sc=sc, seen=seen: seen.append(_http(f"http://{sc.egress('http')}/healthz", "web"))
                           or seen[-1] in (200, 403), 45, what=f"{sa}'s egress to the provider")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; its last answers: {seen[-5:]}") from None

        out: dict[str, dict[str, Any]] = {}
        j = dubbo_peers.java
        for sa, sc in callers.items():
            http_base = f"http://{sc.egress('http')}"
            bolt = bolt_peers.node_consumer(sc.egress("bolt"), ECHO, [{"method": "echo", "args": ["hi"]},
                                                                      {"method": "plus", "args": [2, 3]}])
            dubbo = dubbo_peers.consume(sc.egress("dubbo"), [dubbo_peers.call("echo", j("java.lang.String", "hi")),
                                                             dubbo_peers.call("add", j("int", 2), j("int", 40))])
            out[sa] = {
                "http": [_http(f"{http_base}/allowed", "web"), _http(f"{http_base}/denied", "web")],
                "grpc": [_grpc_call(sc.egress("http"), "Allowed"), _grpc_call(sc.egress("http"), "Denied")],
                "bolt": [(r["ok"], r.get("result") or r.get("message")) for r in bolt],
                "dubbo": [(r["ok"], r.get("res") or r.get("err")) for r in dubbo],
            }
        rbac = {name: provider.stats()["filters"][f"inbound|{inbound[name]}|127.0.0.1|authz.rbac"]
                for name in ("http", "grpc", "bolt", "dubbo")}
    ok, no = out["consumer"], out["intruder"]
    assert ok["http"] == [200, 403], ok
    assert ok["grpc"][0] == ("OK", "Allowed") and ok["grpc"][1][0] == "PERMISSION_DENIED", ok
    assert ok["bolt"][0] == (True, "A:hi") and ok["bolt"][1][0] is False, ok
    assert ok["dubbo"][0] == (True, "hi") and ok["dubbo"][1][0] is False, ok
    assert "RBAC: access denied by policy default.no-add" in str(ok["dubbo"][1][1])
    assert no["http"] == [403, 403], no
    assert [c for c, _ in no["grpc"]] == ["PERMISSION_DENIED"] * 2, no
    assert [r[0] for r in no["bolt"]] == [False, False] and [r[0] for r in no["dubbo"]] == [False, False], no
    for name, stats in rbac.items():
        assert stats["rbac_allowed"] >= 1 and stats["rbac_denied"] >= 3, (name, stats)


class BackgroundAgent:
    """This process's own agent (a rotating Pilot certificate in a ``SecretStore``), on a thread's
    event loop; ``handshake`` opens a fresh mTLS connection with what it holds now."""

    def __init__(self, pilot: PilotProcess, tmp: Path, sa: str, validity_s: int) -> None:
        self.store = SecretStore()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.agent = WorkloadAgent(AgentSettings(f"127.0.0.1:{pilot.xds_port}", token_file=str(_token(
            pilot, sa, tmp / sa)), validity_s=validity_s), self.store)
        asyncio.run_coroutine_threadsafe(self.agent.start(), self.loop).result(30)
        self.tls = TlsSource(TlsConfig(secret="default", ca_secret="ROOTCA"), server=False, secrets=self.store)

    def get(self, url: str) -> int:
        with httpx.Client(verify=self.tls.context(), timeout=5) as c:  # a new connection: a new handshake
            return c.get(url).status_code

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.agent.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _rotate(pilot: PilotProcess, step: str) -> dict[str, Any]:
    r = httpx.post(f"{pilot.api_url}/v1/ca/root-rotation", json={"step": step}, headers=pilot.admin_headers(),
                   timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_root_rotation_under_load_fails_no_request(mesh: dict[str, Any]) -> None:
    pilot, tmp, port = mesh["pilot"], mesh["tmp"], mesh["inbound"]["http"]
    validity = 4  # renewed at about 2 s: one lifetime between steps lets every workload renew
    apply(pilot.api_url, stdin=_peer_authentication("STRICT"))
    provider = MeshSidecar(pilot, tmp, "provider", ("web-1",), validity_s=validity).start()
    mesh["started"].append(provider)
    consumer = MeshSidecar(pilot, tmp, "consumer", validity_s=validity).start()
    mesh["started"].append(consumer)
    tester = BackgroundAgent(pilot, tmp, "tester", validity)
    mesh["started"].append(tester)
    via_consumer, direct = f"http://{consumer.egress('http')}/", f"https://127.0.0.1:{port}/"
    wait_until(lambda: _http(via_consumer, "web") == 200, 15, what="consumer -> provider over auto mTLS")
    old_root = pilot.get("/debug/ca")["ca"]["roots"][0]["serial"]
    results: dict[str, list[int | str]] = {"sidecars": [], "direct": []}
    stop = threading.Event()

    def through_sidecars() -> None:
        with httpx.Client(timeout=5, headers={"Host": "web"}) as keepalive:
            while not stop.is_set():
                for get in (lambda: keepalive.get(via_consumer), lambda: httpx.get(via_consumer, timeout=5,
                                                                                   headers={"Host": "web"})):
                    try:
                        results["sidecars"].append(get().status_code)
                    except httpx.HTTPError as exc:
                        results["sidecars"].append(repr(exc))

    def new_handshakes() -> None:  # the provider's inbound port, a fresh mTLS handshake each time
        while not stop.is_set():
            try:
                results["direct"].append(tester.get(direct))
            except Exception as exc:  # a refused handshake, a reset: a failed request either way
                results["direct"].append(repr(exc))

    threads = [threading.Thread(target=through_sidecars), threading.Thread(target=new_handshakes),
               threading.Thread(target=new_handshakes)]
    for t in threads:
        t.start()
    phases = []
    try:
        time.sleep(validity)
        for step in ("prepare", "activate", "finish"):
            ca = _rotate(pilot, step)
            phases.append((step, ca["root_rotation"], [r["serial"] for r in ca["roots"]]))
            time.sleep(validity * 1.5)
    finally:
        stop.set()
        alive = [t for t in threads if (t.join(20), t.is_alive())[1]]
    assert not alive, alive
    counts = {name: (len(codes), [r for r in codes if r != 200]) for name, codes in results.items()}
    assert all(not failed and n >= 50 for n, failed in counts.values()), counts  # 0 failed requests
    (_, prepared, trusted1), (_, activated, trusted2), (_, done, trusted3) = phases
    assert (prepared, activated, done) == ("prepared", "activated", "none"), phases
    new_root = trusted2[0]
    assert trusted1 == [old_root, new_root] and trusted2 == [new_root, old_root] and trusted3 == [new_root], phases
    # every workload now holds a certificate from the new root and trusts only it
    for sc in (provider, consumer):
        certs = json.loads(sc.get("/certs"))
        assert len(certs["ROOTCA"]) == 1 and certs["ROOTCA"][0]["serial"] == new_root, certs["ROOTCA"]


class EnvoySidecar:
    """A real Envoy as the provider's sidecar: its certificate from ``sofamesh agent`` over SDS, its
    listeners (the inbound one with Envoy's RBAC filters) and clusters from Pilot over ADS."""

    def __init__(self, pilot: PilotProcess, tmp: Path, sa: str, instances: tuple[str, ...],
                 node_id: str = "", metadata: dict[str, Any] | None = None) -> None:
        """``node_id`` (default ``envoy-SA``; ``router~...`` for a gateway) and more node ``metadata``."""
        self.sock = tmp / f"{sa}-sds.sock"
        token = _token(pilot, sa, tmp / sa)
        self.agent_log = tmp / f"{sa}-agent.log"
        with self.agent_log.open("wb") as out:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "sofamesh", "agent", "--pilot", f"127.0.0.1:{pilot.xds_port}",
                 "--token-file", str(token), "--sds-socket", str(self.sock)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        wait_until(lambda: self.sock.exists() or self.agent.poll() is not None, 20, what="the agent's SDS socket")
        self.admin_port, self.outbound_port = free_port(), free_port()
        h2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        bootstrap = {
            "node": {"id": node_id or f"envoy-{sa}", "cluster": sa, "metadata": {
                "sofamesh.mtls": True, "sofamesh.instances": ",".join(instances),
                "sofamesh.outbound_port": self.outbound_port, **(metadata or {})}},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "dynamic_resources": {
                "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                               "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"}},
            "static_resources": {"clusters": [
                {"name": name, "type": "STATIC", "connect_timeout": "1s",
                 "typed_extension_protocol_options": {h2: {"@type": f"type.googleapis.com/{h2}",
                                                           "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                     "address": address}}]}]}}
                for name, address in (("sds-grpc", {"pipe": {"path": str(self.sock)}}),
                                      ("xds", {"socket_address": {"address": "127.0.0.1",
                                                                  "port_value": pilot.xds_port}}))]}}
        path = tmp / f"envoy-{sa}.json"
        path.write_text(json.dumps(bootstrap))
        self.log = tmp / f"envoy-{sa}.log"
        with self.log.open("wb") as out:
            self.envoy = subprocess.Popen([str(_envoy_binary()), "-c", str(path), "--disable-hot-restart",
                                           "--concurrency", "1", "-l", "warning"], stdout=out, stderr=subprocess.STDOUT)

    def stats(self) -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", timeout=2).text
        except httpx.HTTPError:
            return ""

    def stop(self) -> None:
        stop_process(self.envoy)
        stop_process(self.agent)


ENVOY_AUTHZ = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-callers}
spec: {selector: {matchLabels: {app: provider}}, action: ALLOW, rules: [{
  from: [{source: {principals: ["cluster.local/ns/default/sa/consumer"], notNamespaces: [other]}}],
  to: [{operation: {paths: ["/allowed*"], methods: [GET]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-secret}
spec:
  selector: {matchLabels: {app: provider}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/allowed/secret"]}}]}]
"""


def test_an_envoy_sidecar_enforces_authorization_policy_with_envoys_rbac_filter(mesh: dict[str, Any]) -> None:
    pilot, tmp, port = mesh["pilot"], mesh["tmp"], mesh["inbound"]["http"]
    apply(pilot.api_url, stdin=_peer_authentication("STRICT") + "---\n" + ENVOY_AUTHZ)
    envoy = EnvoySidecar(pilot, tmp, "provider", ("web-1",))
    mesh["started"].append(envoy)
    callers = {sa: MeshSidecar(pilot, tmp, sa).start() for sa in ("consumer", "intruder")}
    mesh["started"].extend(callers.values())
    ok, no = (f"http://{callers[sa].egress('http')}" for sa in ("consumer", "intruder"))
    wait_until(lambda: _http(f"{ok}/allowed", "web") == 200, 30,
               what=f"consumer -> Envoy inbound ({envoy.log.read_text()[-2000:]})")
    assert [_http(f"{ok}/allowed/more", "web"), _http(f"{ok}/denied", "web"),
            _http(f"{ok}/allowed/secret", "web")] == [200, 403, 403]
    assert [_http(f"{no}/allowed", "web"), _http(f"{no}/denied", "web")] == [403, 403]
    assert _http(f"http://127.0.0.1:{port}/allowed") in ("RemoteProtocolError", "ReadError", "ConnectError")
    stats = envoy.stats()
    assert re.search(r"rbac\.allowed: [1-9]", stats) and re.search(r"rbac\.denied: [1-9]", stats), stats


def test_request_authentication_claims_decide_an_authorization_policy_on_the_inbound_side(mesh: dict[str, Any]) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "alg": "ES256"})

    def token(sub: str, group: str, signer: Any = key) -> str:
        return jwt.encode({"iss": "https://idp.example", "sub": sub, "group": group, "exp": int(time.time()) + 300},
                          signer, algorithm="ES256", headers={"kid": "k1"})

    pilot, tmp = mesh["pilot"], mesh["tmp"]
    policy = f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: idp}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  jwtRules: [{{issuer: "https://idp.example", jwks: '{json.dumps({"keys": [jwk]})}'}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: admins}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  rules: [{{from: [{{source: {{requestPrincipals: ["https://idp.example/alice"]}}}}],
            when: [{{key: "request.auth.claims[group]", values: [admins]}}]}}]
"""
    apply(pilot.api_url, stdin=policy)
    provider = MeshSidecar(pilot, tmp, "provider", ("web-1",)).start()
    mesh["started"].append(provider)
    consumer = MeshSidecar(pilot, tmp, "consumer").start()
    mesh["started"].append(consumer)
    url = f"http://{consumer.egress('http')}/"

    def status(bearer: str | None) -> int | str:
        headers = {"Host": "web", **({"Authorization": f"Bearer {bearer}"} if bearer else {})}
        try:
            return httpx.get(url, headers=headers, timeout=5).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    wait_until(lambda: status(token("alice", "admins")) == 200, 15, what="alice (admins) through both sidecars")
    assert [status(token("alice", "users")), status(token("bob", "admins")), status(None),
            status(token("alice", "admins", other))] == [403, 403, 403, 401]


# ``targetRef`` to the Service ``web`` selects the provider's workload (it serves ``web``); the DENY
# naming a Service the provider does not serve must not reach it. ``serviceAccounts`` grants the
# consumer's identity only; ``remoteIpBlocks`` is the caller's address as the provider sees it (the
# consumer's sidecar on 127.0.0.1), so one block grants and one not containing it does not.
SOURCES_AUTHZ = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-sources}
spec:
  targetRef: {kind: Service, group: "", name: web}
  action: ALLOW
  rules:
    - from: [{source: {serviceAccounts: [consumer]}}]
      to: [{operation: {paths: ["/sa*"]}}]
    - from: [{source: {remoteIpBlocks: ["127.0.0.1/32"]}}]
      to: [{operation: {paths: ["/ip-in*"]}}]
    - from: [{source: {remoteIpBlocks: ["10.0.0.0/8", "::1/128"]}}]
      to: [{operation: {paths: ["/ip-out*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere}
spec:
  targetRef: {kind: Service, group: "", name: elsewhere}
  action: DENY
  rules: [{to: [{operation: {paths: ["/sa*", "/ip-in*"]}}]}]
"""


@pytest.mark.parametrize("provider_kind", ["sofamesh", "envoy"])
def test_service_accounts_remote_ip_blocks_and_target_ref_decide_through_real_sidecars(
        mesh: dict[str, Any], provider_kind: str) -> None:
    pilot, tmp, port = mesh["pilot"], mesh["tmp"], mesh["inbound"]["http"]
    apply(pilot.api_url, stdin=_peer_authentication("STRICT") + "---\n" + SOURCES_AUTHZ)
    provider: MeshSidecar | EnvoySidecar
    if provider_kind == "envoy":
        provider = EnvoySidecar(pilot, tmp, "provider", ("web-1",))
        mesh["started"].append(provider)
    else:
        provider = MeshSidecar(pilot, tmp, "provider", ("web-1",)).start()
        mesh["started"].append(provider)
        wait_until(lambda: _mode(provider, port) == "STRICT", 30, what="the STRICT inbound listener")
    callers = {sa: MeshSidecar(pilot, tmp, sa).start() for sa in ("consumer", "intruder")}
    mesh["started"].extend(callers.values())
    ok, no = (f"http://{callers[sa].egress('http')}" for sa in ("consumer", "intruder"))
    wait_until(lambda: _http(f"{ok}/sa", "web") == 200, 45, what=f"consumer -> {provider_kind} inbound")
    wait_until(lambda: _http(f"{no}/ip-in", "web") == 200, 30, what=f"intruder -> {provider_kind} inbound")
    paths = ("/sa", "/sa/more", "/ip-in", "/ip-out", "/other")
    got = {sa: [_http(f"{base}{p}", "web") for p in paths] for sa, base in (("consumer", ok), ("intruder", no))}
    assert got == {"consumer": [200, 200, 200, 403, 403], "intruder": [403, 403, 200, 403, 403]}, got
    if isinstance(provider, EnvoySidecar):
        stats = provider.stats()
        assert re.search(r"rbac\.allowed: [1-9]", stats) and re.search(r"rbac\.denied: [1-9]", stats), stats
    else:
        rbac = provider.stats()["filters"][f"inbound|{port}|127.0.0.1|authz.rbac"]
        assert rbac["rbac_allowed"] >= 5 and rbac["rbac_denied"] >= 5, rbac


def test_request_authentication_on_an_envoy_sidecar_with_envoys_jwt_filter(mesh: dict[str, Any]) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "alg": "ES256"})

    def token(sub: str, signer: Any = key, aud: str = "web") -> str:
        return jwt.encode({"iss": "https://idp.example", "sub": sub, "aud": aud, "exp": int(time.time()) + 300},
                          signer, algorithm="ES256", headers={"kid": "k1"})

    pilot, tmp = mesh["pilot"], mesh["tmp"]
    apply(pilot.api_url, stdin=f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: idp}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  jwtRules: [{{issuer: "https://idp.example", audiences: [web], jwks: '{json.dumps({"keys": [jwk]})}'}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: alice-only}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  rules:
    - from: [{{source: {{requestPrincipals: ["https://idp.example/alice"]}}}}]
    - from: [{{source: {{requestPrincipals: ["https://idp.example/svc-*"]}}}}]
      to: [{{operation: {{paths: ["/svc*"]}}}}]
""")
    envoy = EnvoySidecar(pilot, tmp, "provider", ("web-1",))
    mesh["started"].append(envoy)
    consumer = MeshSidecar(pilot, tmp, "consumer").start()
    mesh["started"].append(consumer)
    base = f"http://{consumer.egress('http')}"

    def status(bearer: str | None, path: str = "/") -> int | str:
        headers = {"Host": "web", **({"Authorization": f"Bearer {bearer}"} if bearer else {})}
        try:
            return httpx.get(base + path, headers=headers, timeout=5).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    wait_until(lambda: status(token("alice")) == 200, 45,
               what=f"alice through the consumer sidecar and Envoy ({envoy.log.read_text()[-2000:]})")
    got = [status(token("alice", other)), status(None), status(token("bob")), status(token("alice", aud="other")),
           status(token("svc-a"), "/svc/x"), status(token("svc-a"), "/"), status(token("svc-a", other), "/svc/x")]
    # another key: 401; no token: no request principal, the policy refuses (403); a token for another
    # audience verifies under "allow missing" without becoming a request principal: refused too (403)
    assert got == [401, 403, 403, 403, 200, 403, 401], got
    stats = envoy.stats()
    assert re.search(r"jwt_authn\.allowed: [1-9]", stats) and re.search(r"jwt_authn\.denied: [1-9]", stats), stats
    assert re.search(r"rbac\.denied: [1-9]", stats), stats


def test_an_envoy_sidecar_verifies_tokens_with_keys_pilot_fetched_from_a_jwks_uri(mesh: dict[str, Any]) -> None:
    """jwksUri (fetched by Pilot, inlined, refreshed, the last good keys kept when a fetch fails),
    fromHeaders / fromParams, outputPayloadToHeader, and request.auth.* conditions and ``*/sub``
    request principals decided by a real Envoy."""
    import base64

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    pilot, tmp = mesh["pilot"], mesh["tmp"]
    idp, app = JwksServer(), Echo("api")
    mesh["started"] += [idp, app]
    k1, k2 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def jwks(*keys: tuple[str, Any]) -> str:
        out = []
        for kid, k in keys:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key()))
            jwk.update({"kid": kid, "alg": "ES256"})
            out.append(jwk)
        return json.dumps({"keys": out})

    def token(sub: str, key: Any = k1, kid: str = "k1", **claims: Any) -> str:
        return jwt.encode({"iss": "https://remote.example", "sub": sub, "exp": int(time.time()) + 300, **claims},
                          key, algorithm="ES256", headers={"kid": kid})

    idp.status = 503  # the IdP is down when the policy arrives
    inbound = free_port()
    pilot.register("api", "api-1", address="127.0.0.1", port=inbound, protocol="http",
                   labels={**MESHED, "sofamesh.io/app-port": str(app.port)})
    apply(pilot.api_url, stdin=f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: remote}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  jwtRules:
    - issuer: "https://remote.example"
      jwksUri: "{idp.url}"
      fromHeaders: [{{name: x-jwt, prefix: "Token "}}]
      fromParams: [token]
      outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: claims}}
spec:
  selector: {{matchLabels: {{app: provider}}}}
  rules:
    - from: [{{source: {{requestPrincipals: ["*/alice"]}}}}]
      to: [{{operation: {{paths: ["/any*"]}}}}]
    - to: [{{operation: {{paths: ["/admin*"]}}}}]
      when: [{{key: "request.auth.claims[groups]", values: [admins]}}]
    - to: [{{operation: {{paths: ["/aud*"]}}}}]
      when: [{{key: request.auth.audiences, values: [web]}}, {{key: request.auth.presenter, values: [portal]}},
             {{key: "request.auth.claims[org][team]", values: ["core-*"]}}]
    - from: [{{source: {{requestPrincipals: ["https://remote.example/*"]}}}}]
      to: [{{operation: {{paths: ["/echo*"]}}}}]
""")
    envoy = EnvoySidecar(pilot, tmp, "provider", ("api-1",))
    mesh["started"].append(envoy)
    consumer = MeshSidecar(pilot, tmp, "consumer").start()
    mesh["started"].append(consumer)
    base = f"http://{consumer.egress('http')}"

    def call(path: str, tok: str | None = None, how: str = "x-jwt") -> httpx.Response | str:
        headers = {"Host": "api"}
        if tok is not None and how == "x-jwt":
            headers["x-jwt"] = f"Token {tok}"
        elif tok is not None and how == "bearer":
            headers["Authorization"] = f"Bearer {tok}"
        elif tok is not None:
            path += f"?token={tok}"
        try:
            return httpx.get(base + path, headers=headers, timeout=5)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def status(path: str, tok: str | None = None, how: str = "x-jwt") -> int | str:
        r = call(path, tok, how)
        return r if isinstance(r, str) else r.status_code

    # no keys fetched yet: the inlined key is one nobody holds, a token is refused, not let through
    wait_until(lambda: status("/any", token("alice")) == 401, 45,
               what=f"Envoy's inbound with the unfetched keys ({envoy.log.read_text()[-2000:]})")
    state = pilot.get("/debug/jwks")["uris"][idp.url]
    assert not state["fetched"] and "no keys yet" in state["error"] and "503" in state["error"], state
    idp.status, idp.body = 200, jwks(("k1", k1))
    wait_until(lambda: status("/any", token("alice")) == 200, 30, what="the fetched keys reaching Envoy")
    assert pilot.get("/debug/jwks")["uris"][idp.url]["kids"] == ["k1"]
    got = [
        status("/any", token("alice"), "param"),  # fromParams
        status("/any", token("alice"), "bearer"),  # fromHeaders replaces Authorization: no token, no principal
        status("/any", token("bob")),  # "*/alice" is alice's only
        status("/any", token("alice", k2)),  # another key: 401
        status("/admin", token("carol", groups=["users", "admins"])),  # a list claim holding the value
        status("/admin", token("carol", groups="admins")),  # a string claim
        status("/admin", token("carol", groups=["users"])),
        status("/aud", token("dan", aud=["web", "x"], azp="portal", org={"team": "core-api"})),
        status("/aud", token("dan", aud="web", azp="portal", org={"team": "core-api"})),
        status("/aud", token("dan", aud="web", azp="other", org={"team": "core-api"})),
        status("/aud", token("dan", aud="web", azp="portal", org={"team": "edge"})),
        status("/aud", token("dan", aud="mobile", azp="portal", org={"team": "core-api"})),
    ]
    assert got == [200, 403, 403, 401, 200, 200, 403, 200, 200, 403, 403, 403], got
    # outputPayloadToHeader: the app gets the verified payload; the token header itself is removed
    echoed = call("/echo", token("erin"))
    assert not isinstance(echoed, str) and echoed.status_code == 200, echoed
    seen = echoed.json()["headers"]
    payload = seen["x-jwt-payload"]
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"] == "erin"
    assert "x-jwt" not in seen, seen
    # the IdP rotates to k2: Pilot's refresh brings it to Envoy; k1 tokens stop verifying
    idp.body = jwks(("k2", k2))
    wait_until(lambda: status("/any", token("alice", k2, "k2")) == 200, 30, what="the rotated keys")
    assert status("/any", token("alice")) == 401
    # the IdP fails: the last good keys stay, and the failure is shown
    idp.status = 500
    wait_until(lambda: (pilot.get("/debug/jwks")["uris"][idp.url]["error"] or "").find("keeping") >= 0, 30,
               what="the failed refresh in /debug/jwks")
    time.sleep(1.5)  # past a refresh period
    assert status("/any", token("alice", k2, "k2")) == 200
    stats = envoy.stats()
    assert re.search(r"jwt_authn\.allowed: [1-9]", stats) and re.search(r"jwt_authn\.denied: [1-9]", stats), stats


def test_destination_rule_subsets_with_istio_mutual_and_disable_against_a_strict_sidecar(
        mesh: dict[str, Any]) -> None:
    """A subset with ``tls: ISTIO_MUTUAL`` reaches a STRICT sofamesh sidecar's inbound with the
    workload certificate (SDS ``default`` / ``ROOTCA``); a subset with ``DISABLE`` sends plaintext, which
    STRICT refuses and PERMISSIVE takes: through a sofamesh sidecar and a real Envoy as consumers."""
    pilot, tmp, port = mesh["pilot"], mesh["tmp"], mesh["inbound"]["http"]
    apply(pilot.api_url, stdin=_peer_authentication("STRICT") + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-subsets}
spec:
  host: web
  subsets:
    - {name: secure, labels: {app: provider}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
    - {name: plain, labels: {app: provider}, trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-by-subset}
spec:
  hosts: [web]
  http:
    - match: [{headers: {x-subset: {exact: plain}}}]
      route: [{destination: {host: web, subset: plain}}]
    - route: [{destination: {host: web, subset: secure}}]
""")
    provider = MeshSidecar(pilot, tmp, "provider", ("web-1",)).start()
    mesh["started"].append(provider)
    consumer = MeshSidecar(pilot, tmp, "consumer").start()
    envoy = EnvoySidecar(pilot, tmp, "envoy-consumer", ())
    mesh["started"] += [consumer, envoy]
    urls = {"sofamesh": f"http://{consumer.egress('http')}/", "envoy": f"http://127.0.0.1:{envoy.outbound_port}/"}

    def by(subset: str) -> dict[str, int | str]:
        out: dict[str, int | str] = {}
        for name, url in urls.items():
            try:
                out[name] = httpx.get(url, headers={"Host": "web", "x-subset": subset}, timeout=5).status_code
            except httpx.HTTPError as exc:
                out[name] = type(exc).__name__
        return out

    def mtls_stats() -> dict[str, int]:
        return dict(provider.stats()["filters"][f"inbound|{port}|127.0.0.1|authn.mtls"])

    wait_until(lambda: _mode(provider, port) == "STRICT" and by("secure") == {"sofamesh": 200, "envoy": 200}, 45,
               what=f"ISTIO_MUTUAL through both consumers ({envoy.log.read_text()[-2000:]})")
    secure = next(c for c in consumer.xds_config()["clusters"] if c["name"].endswith("|secure|web"))
    # ISTIO_MUTUAL naming no subjectAltNames checks the destination's identity, as istiod writes it
    assert secure["tls"]["match_sans"] == ["spiffe://cluster.local/ns/default/sa/provider"], secure
    before = mtls_stats()
    assert before["mtls_authenticated"] >= 2 and before.get("mtls_plaintext", 0) == 0, before
    # DISABLE: plaintext to a STRICT inbound fails, from both consumers
    plain = by("plain")
    assert all(v != 200 for v in plain.values()), plain
    assert mtls_stats().get("mtls_plaintext", 0) == 0
    # the same subset under PERMISSIVE: the plaintext arrives, and is counted as such
    t = apply(pilot.api_url, stdin=_peer_authentication("PERMISSIVE"))
    follows(lambda: _mode(provider, port) == "PERMISSIVE", t, "PERMISSIVE", timeout=15)
    wait_until(lambda: by("plain") == {"sofamesh": 200, "envoy": 200}, 20, what="DISABLE under PERMISSIVE")
    after = mtls_stats()
    assert after["mtls_plaintext"] >= 2, after
    assert by("secure") == {"sofamesh": 200, "envoy": 200}


def test_a_sidecar_with_two_workers_serves_mtls_with_the_certificate_its_parent_renews(mesh: dict[str, Any]) -> None:
    """``--workers 2`` with the agent: the parent gets the certificate (4 s lifetime) and sends it, and
    each renewal, to both workers; consumers and fresh mTLS clients reach either worker, and none
    ever serves an expired certificate."""
    pilot, tmp, port = mesh["pilot"], mesh["tmp"], mesh["inbound"]["http"]
    apply(pilot.api_url, stdin=_peer_authentication("STRICT"))
    provider = MeshSidecar(pilot, tmp, "provider", ("web-1",), validity_s=4, args=("--workers", "2")).start()
    mesh["started"].append(provider)
    consumer = MeshSidecar(pilot, tmp, "consumer").start()
    mesh["started"].append(consumer)
    wait_until(lambda: _http(f"http://{consumer.egress('http')}/", "web") == 200, 30,
               what=f"consumer -> the two-worker provider over mTLS ({provider.log()[-2000:]})")
    roots = tmp / "roots.pem"
    roots.write_text(httpx.get(f"{pilot.api_url}/v1/ca/roots", timeout=5).text)
    client = _client_cert(pilot, tmp, "tester")
    serials, statuses = [], []
    deadline = time.monotonic() + 10  # 2.5 lifetimes: a worker left with an old certificate fails the handshake
    while time.monotonic() < deadline:
        peer, status = _served(port, str(roots), client)
        statuses.append(status)
        serials.append(peer["serialNumber"])
        assert dict(peer["subjectAltName"]) == {"URI": "spiffe://cluster.local/ns/default/sa/provider"}, peer
        time.sleep(0.05)
    assert set(statuses) == {200} and len(statuses) >= 20, statuses
    assert len(set(serials)) >= 3, serials  # renewed at about half of 4 s, every renewal served
    workers = provider.stats()["workers"]
    counts = [w["filters"][f"inbound|{port}|127.0.0.1|authn.mtls"]["mtls_authenticated"] for w in workers]
    assert len(counts) == 2 and min(counts) >= 1, counts
    assert _http(f"http://{consumer.egress('http')}/", "web") == 200
