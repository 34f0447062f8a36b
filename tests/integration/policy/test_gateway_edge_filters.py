"""Security policy, a local rate limit and request metrics at the edge, from Pilot, alike on a real
Envoy 1.40 and a sofamesh proxy (both ``router~`` gateway nodes of one Pilot, labels ``istio:
ingressgateway``): a RequestAuthentication and an AuthorizationPolicy selecting the gateway's labels
(a request without a token 403, a bad token 401, a valid one routed), the Gateway annotation
``sofamesh.io/local-rate-limit`` (429 once its bucket is empty, on its own Gateway's port only),
and the gateway's requests counted on each admin's ``/stats/prometheus``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx

from sofamesh.testing import free_port
from tests.integration.gateway_nodes import assert_accepted, start_gateways
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.test_jwt import ISS, Key, jwks
from tests.integration.xds.mesh import Sidecar

PROXIES = {"envoy": "127.0.0.14", "sofamesh": "127.0.0.15"}
BUCKET = 6  # tokens of the rate-limited port; none comes back during the test (one per hour)


def policy(ports: dict[str, int], keys: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: limited
  namespace: default
  annotations:
    sofamesh.io/local-rate-limit: '{{tokenBucket: {{maxTokens: {BUCKET}, tokensPerFill: 1, fillInterval: 3600s}}}}'
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {ports["limited"]}, name: http-limited, protocol: HTTP}}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: open, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {ports["open"]}, name: http-open, protocol: HTTP}}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [limited, open]
  http:
  - route: [{{destination: {{host: web}}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: edge-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules: [{{issuer: "{ISS}", jwks: '{keys}'}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-authz, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  rules: [{{from: [{{source: {{requestPrincipals: ["*"]}}}}]}}]
"""


def get(address: str, port: int, token: str | None = None) -> httpx.Response:
    headers = {"Host": "shop.example.com"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"http://{address}:{port}/items", headers=headers, timeout=10)


def status(address: str, port: int, token: str | None = None) -> int:
    try:
        return get(address, port, token).status_code
    except httpx.HTTPError:
        return 0


@contextlib.contextmanager
def gateways(tmp_path: Path, key: Key) -> Iterator[tuple[Envoy, Sidecar, dict[str, int]]]:
    ports = {"limited": free_port(), "open": free_port()}
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        echo = Echo("web")
        stack.callback(echo.stop)
        pilot.register("web", "web-1", address="127.0.0.1", port=echo.port, protocol="http")
        envoy, gw = start_gateways(stack, tmp_path, pilot, PROXIES, {"istio": "ingressgateway"})
        t = apply(pilot.api_url, stdin=policy(ports, jwks(key)))
        token = key.token()
        for name, address in PROXIES.items():
            # the open port routes a valid token; the limited one refuses a missing token (before its
            # rate limit, so the readiness check takes no token from the bucket)
            follows(lambda a=address: status(a, ports["open"], token) == 200, t, name, timeout=45)
            follows(lambda a=address: status(a, ports["limited"]) == 403, t, name, timeout=45)
        yield envoy, gw, ports
        assert_accepted(envoy, gw)


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} ([0-9.e+]+)", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_jwt_authorization_rate_limit_and_metrics_at_the_edge_alike_on_envoy_and_sofamesh(tmp_path: Path) -> None:
    key, stranger = Key("k1", "RS256"), Key("k1", "RS256")
    with gateways(tmp_path, key) as (envoy, gw, ports):
        limited, open_port = ports["limited"], ports["open"]
        for name, address in PROXIES.items():
            # Istio's answers: no token 403 (RBAC wants a request principal), a bad token 401
            assert status(address, open_port) == 403, name
            assert status(address, open_port, stranger.token()) == 401, name
            assert status(address, open_port, "not.a.jwt") == 401, name
            assert status(address, open_port, key.token(exp_in=-600)) == 401, name  # expired
            ok = get(address, open_port, key.token(sub="bob"))
            assert ok.status_code == 200 and ok.headers["x-upstream"] == "web", (name, ok.status_code)

            # the limited port: BUCKET requests pass, then 429 (refused requests took no token)
            got = [status(address, limited, key.token()) for _ in range(BUCKET + 4)]
            assert got == [200] * BUCKET + [429] * 4, (name, got)
            # the other Gateway's port has no limit
            assert [status(address, open_port, key.token()) for _ in range(BUCKET + 2)] == [200] * (BUCKET + 2)

        # the gateway's requests on the admin's Prometheus page
        text = httpx.get(f"http://127.0.0.1:{envoy.admin_port}/stats/prometheus", timeout=5).text
        rq = "envoy_http_downstream_rq_xx"
        assert (
            _metric(text, rq, envoy_http_conn_manager_prefix=f"http_{limited}", envoy_response_code_class="2") >= BUCKET
        )
        assert _metric(text, rq, envoy_http_conn_manager_prefix=f"http_{limited}", envoy_response_code_class="4") >= 4
        assert _metric(text, "envoy_http_local_rate_limit_rate_limited") >= 4, [
            line for line in text.splitlines() if "rate_limit" in line
        ]
        text = httpx.get(f"{gw.admin_url}/stats/prometheus", timeout=5).text
        total = "istio_requests_total"
        assert _metric(text, total, reporter="source", response_code="429", source_workload="edge-sofamesh") == 4
        assert _metric(text, total, reporter="source", response_code="401") >= 3
        assert _metric(text, total, reporter="source", response_code="200") >= 2 * BUCKET + 3
        assert (
            _metric(text, "sofamesh_downstream_rq_xx", listener=f"127.0.0.15_{limited}", response_code_class="4") >= 4
        )
