"""Aeraki's MetaRouter ``localRateLimit`` applied with ``sofamesh apply``, pushed by Pilot to a sofamesh
sidecar's RPC egress listener and enforced there on real peers: of a burst of N + k calls to a
bucket of N tokens (refilled once a minute, so the burst sees no refill) exactly k get the
protocol's own "rate limited" reply; a condition on an attribute (a Dubbo attachment, a Bolt call's
method) has its own bucket and limits only the calls it matches. No NACK on the way."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conformance import bolt_peers, dubbo_peers
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_metarouter import DEMO, ECHO, _routes, bolt_v1_mesh, dubbo_v1_mesh
from tests.integration.xds.mesh import Sidecar

DUBBO_LIMIT = """
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: test-metaprotocol-dubbo-route, namespace: meta-dubbo}}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  routes:
  - name: {name}
    route:
    - destination: {{host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}}
  localRateLimit:
{bucket}
    conditions:
    - match:
        attributes:
          foo: {{exact: gold}}
      tokenBucket: {{maxTokens: 3, tokensPerFill: 1, fillInterval: 60s}}
"""
SERVICE_BUCKET = "    tokenBucket: {maxTokens: 5, tokensPerFill: 5, fillInterval: 60s}"

BOLT_LIMIT = f"""
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: echo}}
spec:
  hosts: [{ECHO}:1.0]
  routes:
  - name: bolt-limited
    route:
    - destination: {{host: {ECHO}:1.0}}
  localRateLimit:
    tokenBucket: {{maxTokens: 4, tokensPerFill: 4, fillInterval: 60s}}
    conditions:
    - match:
        attributes:
          method: {{exact: whoami}}
      tokenBucket: {{maxTokens: 2, fillInterval: 60s}}
"""


def _listener_filters(sc: Sidecar, protocol: str) -> str:
    return str([lst.get("filters") for lst in sc.dump()["config"]["listeners"] if protocol in lst["protocols"]])


def _bolt_calls(address: str, calls: list[dict[str, object]]) -> tuple[list[Any], list[int]]:
    """sofa-rpc-node calls (all at once); (results, the Bolt status of each response as it arrived)."""
    out = subprocess.run(
        ["node", str(bolt_peers.PEERS / "consumer.js"), address, ECHO, json.dumps(calls)],
        capture_output=True,
        timeout=60,
        cwd=bolt_peers.PEERS,
        check=False,
        env={**os.environ, "SOFAMESH_CACHE": str(bolt_peers.CACHE), "BOLT_RESPONSE_HEADERS": "1"},
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    lines = out.stdout.decode().splitlines()
    status = next(json.loads(ln) for ln in lines if ln.startswith("{"))["response_status"]
    return json.loads([ln for ln in lines if ln.startswith("[")][-1]), status


def _hello(n: int, attachments: dict[str, str] | None = None) -> dict[str, object]:
    return dubbo_peers.call(
        "sayHello",
        dubbo_peers.java("java.lang.String", "mesh"),
        interface=DEMO,
        version=None,
        repeat=n,
        attachments=attachments,
    )


def _outcomes(results: list[dict[str, object]]) -> Counter[str]:
    return Counter("ok" if r["ok"] else str(r["err"]) for r in results)


def test_dubbo_local_rate_limit_answers_rate_limited_beyond_the_bucket_and_per_condition(tmp_path: Path) -> None:
    with dubbo_v1_mesh(tmp_path) as (pilot, _provider, sc):
        # conditions only: calls the condition does not match are never limited
        t = apply(pilot.api_url, stdin=DUBBO_LIMIT.format(name="conditions-only", bucket=""))
        follows(
            lambda: "conditions-only" in _routes(sc, "dubbo") and "quota.local" in _listener_filters(sc, "dubbo"),
            t,
            "the rate-limited MetaRouter",
        )
        plain = dubbo_peers.consume(sc.egress("dubbo"), [_hello(30, {"foo": "silver"})])
        assert _outcomes(plain) == {"ok": 30}, _outcomes(plain)
        gold = dubbo_peers.consume(sc.egress("dubbo"), [_hello(8, {"foo": "gold"})])
        outcomes = _outcomes(gold)
        assert outcomes["ok"] == 3 and sum(outcomes.values()) == 8, outcomes
        limited = {k for k in outcomes if k != "ok"}
        assert len(limited) == 1 and "rate limited" in next(iter(limited)), outcomes

        # a service-wide bucket as well: 5 + 4 plain calls, 4 limited; gold calls keep their own bucket
        t = apply(pilot.api_url, stdin=DUBBO_LIMIT.format(name="service-bucket", bucket=SERVICE_BUCKET))
        follows(lambda: "service-bucket" in _routes(sc, "dubbo"), t, "the service-wide bucket")
        plain = dubbo_peers.consume(sc.egress("dubbo"), [_hello(9)])
        outcomes = _outcomes(plain)
        assert outcomes["ok"] == 5 and sum(outcomes.values()) == 9, outcomes
        gold = dubbo_peers.consume(sc.egress("dubbo"), [_hello(4, {"foo": "gold"})])
        assert _outcomes(gold)["ok"] == 3, _outcomes(gold)
        xds = sc.dump()["xds"]
    assert xds["last_nack"] is None, xds["last_nack"]


def test_bolt_local_rate_limit_answers_server_threadpool_busy_to_sofa_rpc_node(tmp_path: Path) -> None:
    with bolt_v1_mesh(tmp_path, BOLT_LIMIT, "bolt-limited") as (_provider, sc):
        assert "quota.local" in _listener_filters(sc, "bolt")
        whoami, whoami_status = _bolt_calls(sc.egress("bolt"), [{"method": "whoami"}] * 6)
        echo, echo_status = _bolt_calls(sc.egress("bolt"), [{"method": "echo", "args": ["hi"]}] * 7)
        xds = sc.dump()["xds"]
    assert sum(bool(r["ok"]) for r in whoami) == 2, whoami  # the method condition's bucket of 2
    assert sum(bool(r["ok"]) for r in echo) == 4, echo  # the service-wide bucket of 4, untouched by whoami
    # SERVER_THREADPOOL_BUSY (4), as MOSN answers a rate-limited Bolt call; sofa-rpc-node reports it
    # as a server error (resultCode 01)
    assert Counter(whoami_status) == {0: 2, 4: 4} and Counter(echo_status) == {0: 4, 4: 3}, (whoami_status, echo_status)
    assert {r["resultCode"] for r in whoami + echo if not r["ok"]} == {"01"}
    assert xds["last_nack"] is None, xds["last_nack"]
