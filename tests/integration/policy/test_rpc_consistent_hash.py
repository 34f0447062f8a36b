"""DestinationRule ``consistentHash`` for an RPC host, as Aeraki maps it: ``httpHeaderName`` names a
request attribute (a Dubbo attachment). Pilot sends RING_HASH / MAGLEV clusters and a ``hash_policy``
on the sidecar's Dubbo routes; dubbo2.js calls carrying one ``userId`` attachment (an RPC key is
matched in its own case) all reach the same @dubbo.ts provider, and different users spread over
both providers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import dubbo_peers
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_metarouter import DEMO, _routes, dubbo_mesh
from tests.integration.xds.mesh import wait_for

HOST = "org.apache.dubbo.samples.basic.api.demoservice"


def _policy(lb: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dubbo-sample-provider, namespace: meta-dubbo}}
spec:
  host: {HOST}
  trafficPolicy:
    loadBalancer:
      consistentHash: {{httpHeaderName: userId, {lb}}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: sticky, namespace: meta-dubbo}}
spec:
  hosts: [{HOST}]
  routes:
  - name: sticky-{lb.split(":")[0]}
    route: [{{destination: {{host: {HOST}}}}}]
"""


@pytest.mark.parametrize("lb", ["ringHash: {minimumRingSize: 1024}", "maglev: {tableSize: 65537}"])
def test_calls_of_one_user_stick_to_one_dubbo_provider(tmp_path: Path, lb: str) -> None:
    with dubbo_mesh(tmp_path, ("v1", "v2"), rules=False) as (pilot, _providers, [sc]):
        t = apply(pilot.api_url, stdin=_policy(lb))
        follows(lambda: "sticky" in _routes(sc, "dubbo") and "hash_policy" in _routes(sc, "dubbo"), t, "the route")
        wait_for(lambda: len(sc.endpoints(f"|{DEMO}")) == 2, 10, "both providers in EDS")
        users = [f"user-{i}" for i in range(16)]
        calls = [
            dubbo_peers.call(
                "sayHello",
                dubbo_peers.java("java.lang.String", "mesh"),
                interface=DEMO,
                version=None,
                repeat=10,
                attachments={"userId": u},
            )
            for u in users
        ]
        # dubbo2.js keys attachments by interface and method, so each user's calls run in their own consumer
        served = {
            u: {str(r["res"]).rsplit(" ", 1)[-1] for r in dubbo_peers.consume(sc.egress("dubbo"), [c])}
            for u, c in zip(users, calls, strict=True)
        }
        assert sc.dump()["xds"]["last_nack"] is None
    assert all(len(s) == 1 and s <= {"v1", "v2"} for s in served.values()), served  # each user: one provider
    assert set().union(*served.values()) == {"v1", "v2"}, served  # users spread over both (1 in 2**15 to fail)
