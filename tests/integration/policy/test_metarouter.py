"""Aeraki's MetaRouter through sofamesh sidecars with real RPC peers: dubbo2.js -> @dubbo.ts with
Aeraki's own ``metaprotocol-dubbo`` samples applied unchanged (serviceentry, destinationrule,
traffic-split with its ``foo: bar`` attribute, traffic-mirroring), and sofa-rpc-node over Bolt
with the same kinds of resources written for a Bolt service. The split holds within 5 points; the
mirror's provider sees every copy while the caller sees only the primary's answers."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tests.conformance import bolt_peers, dubbo_peers
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.policy.apply import AERAKI_DUBBO, apply, follows
from tests.integration.xds.mesh import Sidecar, wait_for

DEMO = "org.apache.dubbo.samples.basic.api.DemoService"
ECHO = "com.example.EchoService"

WORKLOAD = """
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {{name: dubbo-sample-provider-{version}, namespace: meta-dubbo}}
spec:
  address: 127.0.0.1
  ports: {{tcp-metaprotocol-dubbo: {port}}}
  labels: {{app: dubbo-sample-provider, version: {version}}}
"""


def _hello(n: int, attachments: dict[str, str] | None) -> dict[str, object]:
    return dubbo_peers.call("sayHello", dubbo_peers.java("java.lang.String", "mesh"), interface=DEMO,
                            version=None, repeat=n, attachments=attachments)


def _said_hello(provider: dubbo_peers.Provider) -> int:
    [r] = dubbo_peers.consume(provider.address, [dubbo_peers.call("calls", interface=DEMO, version=None)])
    assert r["ok"], r
    return int((r["res"] or {}).get("sayHello", 0))


def _routes(sc: Sidecar, protocol: str) -> str:
    return str([lst["routes"] for lst in sc.dump()["config"]["listeners"] if protocol in lst["protocols"]])


def test_aeraki_dubbo_samples_split_and_mirror_dubbo2js_calls_to_dubbo_ts_providers(tmp_path: Path) -> None:
    dubbo_peers.require_dubbo_peers()
    pilot = PilotProcess(tmp_path / "data").start()
    providers = {v: dubbo_peers.Provider(v) for v in ("v1", "v2")}
    sidecar: Sidecar | None = None
    try:
        apply(pilot.api_url, AERAKI_DUBBO / "serviceentry.yaml", AERAKI_DUBBO / "destinationrule.yaml")
        apply(pilot.api_url, stdin="---".join(WORKLOAD.format(version=v, port=p.port) for v, p in providers.items()))
        sidecar = sc = Sidecar(pilot.xds_port, "dubbo-consumer").start()
        for v, p in providers.items():
            wait_for(lambda v=v, p=p: sc.endpoints(f"|{v}|{DEMO}") == {p.address}, 10, f"subset {v} in EDS")

        t = apply(pilot.api_url, AERAKI_DUBBO / "traffic-split.yaml")
        follows(lambda: "traffic-split" in _routes(sc, "dubbo"), t, "the traffic-split MetaRouter")
        results = dubbo_peers.consume(sc.egress("dubbo"), [_hello(500, {"foo": "bar"})]) + \
            dubbo_peers.consume(sc.egress("dubbo"), [_hello(500, {"foo": "bar"})])
        assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:3]
        served = Counter(str(r["res"]).rsplit(" ", 1)[-1] for r in results)
        assert set(served) == {"v1", "v2"} and 150 <= served["v1"] <= 250, served  # 20 % of 1000, +-5 points
        # the route matches foo=bar only: any other call has no route, as in Aeraki
        [other] = dubbo_peers.consume(sc.egress("dubbo"), [_hello(1, {"foo": "baz"})])
        assert not other["ok"] and "no route" in str(other["err"]), other

        before = _said_hello(providers["v2"])
        t = apply(pilot.api_url, AERAKI_DUBBO / "traffic-mirroring.yaml")
        follows(lambda: "traffic-mirroring" in _routes(sc, "dubbo"), t, "the traffic-mirroring MetaRouter")
        results = dubbo_peers.consume(sc.egress("dubbo"), [_hello(200, None)])
        assert [r["res"] for r in results] == ["Hello mesh, response from v1"] * 200, Counter(
            str(r["res"] if r["ok"] else r["err"]) for r in results)
        wait_for(lambda: _said_hello(providers["v2"]) - before == 200, 10, "v2 to see the 200 mirrored copies")
        xds = sc.dump()["xds"]
        assert xds["last_nack"] is None, xds["last_nack"]
    finally:
        if sidecar is not None:
            sidecar.stop()
        pilot.stop()
        for p in providers.values():
            p.stop()


BOLT_POLICY = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: com.example.EchoService:1.0
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: echo}}
spec:
  hosts: [com.example.EchoService:1.0]
  routes:
  - name: {name}
    match:
      attributes:
        method: {{exact: whoami}}
    route:
{route}
{mirror}
"""
SPLIT = BOLT_POLICY.format(name="bolt-split", mirror="", route="""\
    - {destination: {host: com.example.EchoService:1.0, subset: v1}, weight: 30}
    - {destination: {host: com.example.EchoService:1.0, subset: v2}, weight: 70}""")
MIRROR = BOLT_POLICY.format(name="bolt-mirror", route="""\
    - {destination: {host: com.example.EchoService:1.0, subset: v1}}""", mirror="""\
    mirror: {host: com.example.EchoService:1.0, subset: v2}
    mirrorPercentage: {value: 50.0}""")


class _BoltProvider:
    def __init__(self, tag: str) -> None:
        self.port = bolt_peers.free_port()
        self.peer = bolt_peers.Peer(["node", "-r", str(bolt_peers.PEERS / "loopback.js"),
                                     str(bolt_peers.PEERS / "provider.js"), str(self.port), ECHO, tag], self.port)
        self.address = self.peer.address

    def calls(self) -> int:
        [r] = bolt_peers.node_consumer(self.address, ECHO, [{"method": "calls"}])
        assert r["ok"], r
        return int(str(r["result"]))


def test_sofa_rpc_node_bolt_calls_split_and_mirror_by_metarouter(tmp_path: Path) -> None:
    bolt_peers.require_node()
    pilot = PilotProcess(tmp_path / "data").start()
    providers: dict[str, _BoltProvider] = {}
    sidecar: Sidecar | None = None
    try:
        for v in ("v1", "v2"):
            p = providers[v] = _BoltProvider(v)
            pilot.register(f"{ECHO}:1.0", f"echo-{v}", address="127.0.0.1", port=p.port, protocol="bolt",
                           labels={"version": v})
        t = apply(pilot.api_url, stdin=SPLIT)
        sidecar = sc = Sidecar(pilot.xds_port, "bolt-consumer").start()
        follows(lambda: "bolt-split" in _routes(sc, "bolt") and bool(sc.endpoints(f"|v2|{ECHO}:1.0")), t,
                "the split MetaRouter and its subsets", timeout=15)
        results = bolt_peers.node_consumer(sc.egress("bolt"), ECHO, [{"method": "whoami"}] * 1000)
        assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:3]
        served = Counter(str(r["result"]) for r in results)
        assert set(served) == {"v1", "v2"} and 250 <= served["v1"] <= 350, served  # 30 % of 1000, +-5 points

        before = providers["v2"].calls()
        t = apply(pilot.api_url, stdin=MIRROR)
        follows(lambda: "bolt-mirror" in _routes(sc, "bolt"), t, "the mirror MetaRouter")
        results = bolt_peers.node_consumer(sc.egress("bolt"), ECHO, [{"method": "whoami"}] * 1000)
        assert Counter(str(r["result"]) for r in results) == {"v1": 1000}
        wait_for(lambda: providers["v2"].calls() - before >= 450, 10, "v2 to see about half the calls mirrored")
        copies = providers["v2"].calls() - before
        assert 450 <= copies <= 550, copies  # mirrorPercentage 50 of 1000, +-5 points
        xds = sc.dump()["xds"]
        assert xds["last_nack"] is None, xds["last_nack"]
    finally:
        if sidecar is not None:
            sidecar.stop()
        pilot.stop()
        for p in providers.values():
            p.peer.stop()


@contextlib.contextmanager
def dubbo_mesh(
    tmp_path: Path, versions: tuple[str, ...] = ("v1",), namespaces: tuple[str | None, ...] = (None,),
    rules: bool = True,
) -> Iterator[tuple[PilotProcess, dict[str, dubbo_peers.Provider], list[Sidecar]]]:
    """Pilot with Aeraki's Dubbo serviceentry (and its destinationrule when ``rules``), one @dubbo.ts
    provider per version as a WorkloadEntry labelled with it, and a sidecar per namespace (node
    metadata ``NAMESPACE``; ``None``: none); all stopped on exit."""
    dubbo_peers.require_dubbo_peers()
    pilot = PilotProcess(tmp_path / "data").start()
    providers = {v: dubbo_peers.Provider(v) for v in versions}
    sidecars: list[Sidecar] = []
    try:
        apply(pilot.api_url, AERAKI_DUBBO / "serviceentry.yaml", *([AERAKI_DUBBO / "destinationrule.yaml"] * rules))
        apply(pilot.api_url, stdin="---".join(WORKLOAD.format(version=v, port=p.port) for v, p in providers.items()))
        for ns in namespaces:
            meta = {"NAMESPACE": ns} if ns else {}
            sidecars.append(Sidecar(pilot.xds_port, f"dubbo-{ns or 'consumer'}", metadata=meta).start())
        yield pilot, providers, sidecars
    finally:
        for sc in sidecars:
            sc.stop()
        pilot.stop()
        for p in providers.values():
            p.stop()


@contextlib.contextmanager
def dubbo_v1_mesh(tmp_path: Path) -> Iterator[tuple[PilotProcess, dubbo_peers.Provider, Sidecar]]:
    """:func:`dubbo_mesh` with provider v1 and one sidecar that has its endpoint in subset v1."""
    with dubbo_mesh(tmp_path) as (pilot, providers, [sc]):
        wait_for(lambda: sc.endpoints(f"|v1|{DEMO}") == {providers["v1"].address}, 10, "subset v1 in EDS")
        yield pilot, providers["v1"], sc


@contextlib.contextmanager
def bolt_v1_mesh(tmp_path: Path, policy: str, route: str) -> Iterator[tuple[_BoltProvider, Sidecar]]:
    """Pilot with one sofa-rpc-node provider of ``ECHO:1.0`` (label version v1) and ``policy`` applied, and
    a sidecar that has the route named ``route`` and the provider's endpoint; all stopped on exit."""
    bolt_peers.require_node()
    pilot = PilotProcess(tmp_path / "data").start()
    provider = _BoltProvider("v1")
    sidecar: Sidecar | None = None
    try:
        pilot.register(f"{ECHO}:1.0", "echo-v1", address="127.0.0.1", port=provider.port, protocol="bolt",
                       labels={"version": "v1"})
        t = apply(pilot.api_url, stdin=policy)
        sidecar = sc = Sidecar(pilot.xds_port, "bolt-consumer").start()
        follows(lambda: route in _routes(sc, "bolt") and bool(sc.endpoints(f"{ECHO}:1.0")), t,
                f"the MetaRouter route {route}", timeout=15)
        yield provider, sc
    finally:
        if sidecar is not None:
            sidecar.stop()
        pilot.stop()
        provider.peer.stop()
