"""Aeraki's MetaRouter ``requestMutation`` / ``responseMutation`` applied with ``sofamesh apply``,
pushed by Pilot to a sofamesh sidecar and enforced there on real peers: the @dubbo.ts provider sees
the attachment the route set on each dubbo2.js call (and dubbo2.js the response attachment), the
sofa-rpc-node provider sees the Bolt header-map key. No NACK on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance import bolt_peers, dubbo_peers
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_metarouter import DEMO, ECHO, _routes, bolt_v1_mesh, dubbo_v1_mesh

DUBBO_MUTATION = """
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: test-metaprotocol-dubbo-route, namespace: meta-dubbo}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  routes:
  - name: header-mutation
    match:
      attributes:
        interface: {exact: org.apache.dubbo.samples.basic.api.DemoService}
    route:
    - destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}
    requestMutation:
    - {key: foo, value: bar}
    - {key: x-tenant, value: "租户-1"}
    responseMutation:
    - {key: served-by, value: sofamesh}
"""

BOLT_MUTATION = f"""
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: echo}}
spec:
  hosts: [{ECHO}:1.0]
  routes:
  - name: bolt-mutation
    route:
    - destination: {{host: {ECHO}:1.0}}
    requestMutation:
    - {{key: x-tenant, value: acme}}
"""


def test_metarouter_request_and_response_mutation_reach_dubbo_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dubbo_v1_mesh(tmp_path) as (pilot, _provider, sc):
        t = apply(pilot.api_url, stdin=DUBBO_MUTATION)
        follows(lambda: "header-mutation" in _routes(sc, "dubbo"), t, "the header-mutation MetaRouter")
        monkeypatch.setenv("DUBBO_RESPONSE_ATTACHMENTS", "1")
        results = dubbo_peers.consume(
            sc.egress("dubbo"),
            [
                dubbo_peers.call("whoami", interface=DEMO, version=None, repeat=3, attachments={"foo": "baz"}),
                dubbo_peers.call(
                    "sayHello", dubbo_peers.java("java.lang.String", "mesh"), interface=DEMO, version=None
                ),
            ],
        )
        xds = sc.dump()["xds"]
    *who, hello = results
    for r in who:
        assert r["ok"], r
        att = r["res"]["attachments"]
        assert (att.get("foo"), att.get("x-tenant"), att.get("path")) == ("bar", "租户-1", DEMO), att
        assert r["attachments"].get("served-by") == "sofamesh", r
    assert (hello["res"], hello["attachments"].get("served-by")) == ("Hello mesh, response from v1", "sofamesh")
    assert xds["last_nack"] is None, xds["last_nack"]


def test_metarouter_request_mutation_reaches_a_sofa_rpc_node_provider(tmp_path: Path) -> None:
    with bolt_v1_mesh(tmp_path, BOLT_MUTATION, "bolt-mutation") as (_provider, sc):
        [seen] = bolt_peers.node_consumer(sc.egress("bolt"), ECHO, [{"method": "headers"}])
        xds = sc.dump()["xds"]
    assert seen == {"ok": True, "result": {"service": f"{ECHO}:1.0", "x-tenant": "acme"}}, json.dumps(seen)
    assert xds["last_nack"] is None, xds["last_nack"]
