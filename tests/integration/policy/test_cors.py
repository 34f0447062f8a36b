"""VirtualService ``corsPolicy``, answered alike by a real Envoy 1.40 (its CORS filter, as Pilot
configures it the way Istio does) and by a sofamesh sidecar (its ``cors`` filter, translated from the
same xDS): preflights from allowed origins (exact, prefix, regex) answered by the proxy, others
forwarded or (``unmatchedPreflights: IGNORE``) answered without an allowed origin, and actual
requests given ``Access-Control-Allow-Origin`` / ``-Expose-Headers`` / ``-Allow-Credentials``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.policy.side_by_side import side_by_side, web_policy
from tests.integration.policy.test_http_route_fields import Echo

MAIN = "[{destination: {host: web, subset: main}}]"
POLICY = web_policy(
    ("main",),
    f"""\
  - name: api
    match: [{{uri: {{prefix: /api}}}}]
    corsPolicy:
      allowOrigins:
      - {{exact: "https://a.example"}}
      - {{prefix: "https://pre."}}
      - {{regex: "https://[a-z]+\\\\.b\\\\.example"}}
      allowMethods: [GET, POST]
      allowHeaders: [x-h1, x-h2]
      exposeHeaders: [x-e1, x-e2]
      maxAge: 24h
      allowCredentials: true
    route: {MAIN}
  - name: strict
    match: [{{uri: {{prefix: /strict}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "https://a.example"}}]
      allowMethods: [PUT]
      unmatchedPreflights: IGNORE
    route: {MAIN}
  - name: ready
    match: [{{uri: {{exact: /ready}}}}]
    directResponse: {{status: 204}}
  - route: {MAIN}
""",
)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[dict[str, int], Echo]]:
    with side_by_side(tmp_path, POLICY, ("main",), "cors-sidecar") as (ports, echoes):
        yield ports, echoes["main"]


def _cors(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


ALLOWED_PREFLIGHT = {
    "access-control-allow-credentials": "true",
    "access-control-allow-methods": "GET,POST",
    "access-control-allow-headers": "x-h1,x-h2",
    "access-control-max-age": "86400",
    "access-control-expose-headers": "x-e1,x-e2",
}


@pytest.mark.parametrize("proxy", ["envoy", "sofamesh"])
def test_preflights_and_actual_requests_get_the_cors_answers_envoy_gives(
    mesh: tuple[dict[str, int], Echo], proxy: str
) -> None:
    ports, echo = mesh
    with httpx.Client(base_url=f"http://127.0.0.1:{ports[proxy]}", headers={"Host": "web"}, timeout=5) as c:

        def preflight(path: str, origin: str, method: str = "POST", **more: str) -> httpx.Response:
            return c.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method, **more})

        seen = len(echo.seen)
        for origin in ("https://a.example", "https://pre.example.org", "https://shop.b.example"):
            r = preflight("/api/items", origin, **{"Access-Control-Request-Headers": "x-h1"})
            assert (r.status_code, r.content) == (200, b""), origin
            assert _cors(r) == {"access-control-allow-origin": origin, **ALLOWED_PREFLIGHT}, origin
            assert "x-upstream" not in r.headers  # answered by the proxy
        assert len(echo.seen) == seen

        # an origin no matcher allows (the regex is anchored: a suffix does not do): forwarded untouched
        for origin in ("https://evil.example", "https://shop.b.example.evil", "https://a.example.org"):
            r = preflight("/api/items", origin)
            assert (r.status_code, r.headers["x-upstream"], _cors(r)) == (200, "main", {}), origin
            assert r.json()["headers"]["access-control-request-method"] == "POST"
        # unmatchedPreflights: IGNORE -> answered here, without an allowed origin
        seen = len(echo.seen)
        r = preflight("/strict", "https://evil.example", "PUT")
        assert (r.status_code, r.content, _cors(r)) == (200, b"", {"access-control-allow-methods": "PUT"})
        r = preflight("/strict", "https://a.example", "PUT")
        assert _cors(r) == {"access-control-allow-origin": "https://a.example", "access-control-allow-methods": "PUT"}
        assert len(echo.seen) == seen

        # actual requests: an allowed origin gets the origin, credentials and exposed headers
        r = c.get("/api/items", headers={"Origin": "https://shop.b.example"})
        assert (r.json()["path"], r.headers["x-upstream"]) == ("/api/items", "main")
        assert _cors(r) == {
            "access-control-allow-origin": "https://shop.b.example",
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": "x-e1,x-e2",
        }
        assert r.json()["headers"]["origin"] == "https://shop.b.example"  # the upstream sees the request as sent
        r = c.get("/strict", headers={"Origin": "https://a.example"})  # no credentials, nothing exposed
        assert _cors(r) == {"access-control-allow-origin": "https://a.example"}
        for headers in ({"Origin": "https://evil.example"}, {}):
            r = c.get("/api/items", headers=headers)
            assert (r.status_code, _cors(r)) == (200, {}), headers
        # OPTIONS without Access-Control-Request-Method is not a preflight: forwarded, then decorated
        r = c.options("/api/items", headers={"Origin": "https://a.example"})
        assert r.headers["x-upstream"] == "main"
        assert _cors(r)["access-control-allow-origin"] == "https://a.example"
        assert "access-control-allow-methods" not in _cors(r)
        # over HTTP/2 (prior knowledge) the same preflight answer, from the proxy
        with httpx.Client(base_url=c.base_url, headers={"Host": "web"}, http1=False, http2=True, timeout=5) as h2:
            r = h2.options("/api/x", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"})
            assert (r.http_version, r.status_code, r.content) == ("HTTP/2", 200, b"")
            assert _cors(r) == {"access-control-allow-origin": "https://a.example", **ALLOWED_PREFLIGHT}
        # a route without a policy: no CORS at all, preflights go to the upstream
        r = preflight("/other", "https://a.example")
        assert (r.headers["x-upstream"], _cors(r)) == ("main", {})
        assert _cors(c.get("/other", headers={"Origin": "https://a.example"})) == {}
