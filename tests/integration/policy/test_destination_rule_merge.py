"""Several DestinationRules of one namespace for one host, merged as Istio merges them, through a
sofamesh sidecar with real Dubbo peers (dubbo2.js -> @dubbo.ts, Aeraki's ServiceEntry): the older
rule's subset ``v1`` wins over the newer rule's clashing one, the newer rule's ``v2`` is appended
and routable by a MetaRouter; ``sofamesh analyze`` names the ignored subset (SOFA0003)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conformance import dubbo_peers
from tests.integration.pilot.conftest import REPO
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_metarouter import DEMO, _routes, dubbo_mesh
from tests.integration.xds.mesh import Sidecar, wait_for

HOST = "org.apache.dubbo.samples.basic.api.demoservice"
RULES = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a-canary, namespace: meta-dubbo, creationTimestamp: "2024-05-02T00:00:00Z"}}
spec:
  host: {HOST}
  subsets:
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v1, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b-stable, namespace: meta-dubbo, creationTimestamp: 2024-05-01T00:00:00Z}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: by-subset, namespace: meta-dubbo}}
spec:
  hosts: [{HOST}]
  routes:
  - name: to-v1
    match: {{attributes: {{subset: {{exact: v1}}}}}}
    route: [{{destination: {{host: {HOST}, subset: v1}}}}]
  - name: to-v2
    match: {{attributes: {{subset: {{exact: v2}}}}}}
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
"""


def _served(sc: Sidecar, subset: str) -> Counter[str]:
    call = dubbo_peers.call(
        "sayHello",
        dubbo_peers.java("java.lang.String", "mesh"),
        interface=DEMO,
        version=None,
        repeat=20,
        attachments={"subset": subset},
    )
    results = dubbo_peers.consume(sc.egress("dubbo"), [call])
    return Counter(str(r["res"]).rsplit(" ", 1)[-1] if r["ok"] else str(r["err"]) for r in results)


def test_destination_rules_of_one_namespace_merge_their_subsets_for_an_rpc_host(tmp_path: Path) -> None:
    with dubbo_mesh(tmp_path, ("v1", "v2"), ("meta-dubbo",), rules=False) as (pilot, providers, [sc]):
        t = apply(pilot.api_url, stdin=RULES)
        follows(lambda: "to-v2" in _routes(sc, "dubbo"), t, "the MetaRouter", timeout=10)
        for v, p in providers.items():
            wait_for(lambda v=v, p=p: sc.endpoints(f"|{v}|{DEMO}") == {p.address}, 10, f"subset {v} in EDS")
        assert _served(sc, "v1") == {"v1": 20}  # the older rule's v1, not the newer rule's clashing one
        assert _served(sc, "v2") == {"v2": 20}  # appended from the newer rule
        assert sc.dump()["xds"]["last_nack"] is None
        done = subprocess.run(
            [sys.executable, "-m", "sofamesh", "analyze", "--pilot", pilot.api_url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        [finding] = [ln for ln in done.stdout.splitlines() if "SOFA0003" in ln]
        assert "DestinationRule meta-dubbo/a-canary" in finding and "'v1'" in finding, finding
        assert "already defined by DestinationRule meta-dubbo/b-stable" in finding, finding
