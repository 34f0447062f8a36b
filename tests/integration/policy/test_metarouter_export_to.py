"""MetaRouter ``exportTo`` and an RPC ServiceEntry's ``exportTo`` applied per proxy namespace: two
sofamesh sidecars, in ``meta-dubbo`` and ``team`` (node metadata ``NAMESPACE``, Istio's key), call
@dubbo.ts providers with dubbo2.js over Aeraki's Dubbo samples. Each namespace's own MetaRouter
(exported to ``.`` only) routes its sidecar's calls, to v1 and v2 respectively; re-exporting the
ServiceEntry to ``meta-dubbo`` only takes the service away from the ``team`` sidecar."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.conformance import dubbo_peers
from tests.integration.policy.apply import AERAKI_DUBBO, apply, follows
from tests.integration.policy.test_metarouter import DEMO, _routes, dubbo_mesh
from tests.integration.xds.mesh import Sidecar, wait_for


def _router(namespace: str, subset: str) -> str:
    return f"""
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: demo, namespace: {namespace}}}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  exportTo: [.]
  routes:
  - name: {namespace}-to-{subset}
    route:
    - destination: {{host: org.apache.dubbo.samples.basic.api.demoservice, subset: {subset}}}
"""


def _served(sc: Sidecar, n: int = 20) -> Counter[str]:
    call = dubbo_peers.call(
        "sayHello", dubbo_peers.java("java.lang.String", "mesh"), interface=DEMO, version=None, repeat=n
    )
    results = dubbo_peers.consume(sc.egress("dubbo"), [call])
    return Counter(str(r["res"]).rsplit(" ", 1)[-1] if r["ok"] else str(r["err"]) for r in results)


def test_each_namespace_sees_its_own_metarouter_and_only_the_rpc_services_exported_to_it(tmp_path: Path) -> None:
    with dubbo_mesh(tmp_path, ("v1", "v2"), ("meta-dubbo", "team")) as (pilot, _providers, [home, team]):
        t = apply(pilot.api_url, stdin=_router("meta-dubbo", "v1") + "---" + _router("team", "v2"))
        follows(lambda: "meta-dubbo-to-v1" in _routes(home, "dubbo"), t, "meta-dubbo's MetaRouter", timeout=10)
        follows(lambda: "team-to-v2" in _routes(team, "dubbo"), t, "team's MetaRouter", timeout=10)
        for sc, v in ((home, "v1"), (team, "v2")):
            wait_for(lambda sc=sc, v=v: sc.endpoints(f"|{v}|{DEMO}"), 10, f"subset {v} in EDS")
        assert "team-to-v2" not in _routes(home, "dubbo") and "meta-dubbo-to-v1" not in _routes(team, "dubbo")
        assert _served(home) == {"v1": 20}
        assert _served(team) == {"v2": 20}

        entry = (AERAKI_DUBBO / "serviceentry.yaml").read_text() + "  exportTo: [meta-dubbo]\n"
        t = apply(pilot.api_url, stdin=entry)
        follows(lambda: DEMO not in _routes(team, "dubbo"), t, "the ServiceEntry leaving team's view", timeout=10)
        assert not team.endpoints(DEMO)
        refused = _served(team, 3)
        assert len(refused) == 1 and "no route" in next(iter(refused)), refused
        assert _served(home) == {"v1": 20}
        for sc in (home, team):
            assert sc.dump()["xds"]["last_nack"] is None
