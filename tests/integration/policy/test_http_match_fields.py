"""More VirtualService HTTP fields, enforced alike by a real Envoy and a sofamesh sidecar:
withoutHeaders, authority, scheme, sourceLabels and port matches, authority and regex rewrites,
per-destination headers, and a 50 % mirror."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.policy.side_by_side import side_by_side, web_policy
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.xds.mesh import wait_for

MAIN = "[{destination: {host: web, subset: main}}]"
SHADOW = "[{destination: {host: web, subset: shadow}}]"
POLICY = web_policy(
    ("main", "shadow"),
    f"""\
  - name: not-canary
    match: [{{uri: {{prefix: /wo}}, withoutHeaders: {{x-canary: {{exact: "1"}}}}}}]
    route: [{{destination: {{host: web, subset: main}}, headers: {{request: {{set: {{x-dest: main}}}}}}}}]
  - name: canary
    match: [{{uri: {{prefix: /wo}}}}]
    route: {SHADOW}
  - name: by-authority
    match: [{{uri: {{prefix: /auth}}, authority: {{exact: web.default}}}}]
    rewrite: {{authority: upstream.example}}
    route: {SHADOW}
  - name: https-only
    match: [{{uri: {{prefix: /scheme}}, scheme: {{exact: https}}}}]
    route: {SHADOW}
  - name: http-only
    match: [{{uri: {{prefix: /plain}}, scheme: {{exact: http}}}}]
    route: {SHADOW}
  - name: regex
    match: [{{uri: {{prefix: /re/}}}}]
    rewrite: {{uriRegexRewrite: {{match: "^/re/([a-z]+)/(.*)$", rewrite: "/\\\\2/\\\\1"}}}}
    route: {MAIN}
  - name: half-mirror
    match: [{{uri: {{prefix: /half}}}}]
    mirror: {{host: web, subset: shadow}}
    mirrorPercentage: {{value: 50}}
    route: {MAIN}
  - name: other-sources
    match: [{{uri: {{prefix: /src}}, sourceLabels: {{app: other}}}}]
    route: {SHADOW}
  - name: canary-sources
    match: [{{uri: {{prefix: /canary}}, sourceLabels: {{app: canary}}}}]
    route: {SHADOW}
  - name: other-port
    match: [{{uri: {{exact: /port8080}}, port: 8080}}]
    route: {SHADOW}
  - name: this-port
    match: [{{uri: {{exact: /port80}}, port: 80}}]
    route: {SHADOW}
  - name: ready
    match: [{{uri: {{exact: /ready}}}}]
    directResponse: {{status: 204}}
  - route: {MAIN}
""",
)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[dict[str, int], dict[str, Echo]]]:
    labels = {"LABELS": {"app": "canary"}}  # Istio's node key for the proxy's workload labels
    with side_by_side(tmp_path, POLICY, ("main", "shadow"), "match-fields-sidecar", labels) as both:
        yield both


@pytest.mark.parametrize("proxy", ["envoy", "sofamesh"])
def test_match_rewrite_header_and_mirror_fields_are_enforced(
    mesh: tuple[dict[str, int], dict[str, Echo]], proxy: str
) -> None:
    ports, echoes = mesh
    with httpx.Client(base_url=f"http://127.0.0.1:{ports[proxy]}", headers={"Host": "web"}, timeout=5) as c:
        plain = c.get("/wo").json()  # withoutHeaders: no x-canary -> main, with the destination's header
        assert (plain["name"], plain["headers"].get("x-dest")) == ("main", "main")
        assert c.get("/wo", headers={"x-canary": "1"}).json()["name"] == "shadow"
        assert c.get("/wo", headers={"x-canary": "2"}).json()["name"] == "main"

        by_authority = c.get("/auth", headers={"Host": "web.default"}).json()
        assert (by_authority["name"], by_authority["headers"]["host"]) == ("shadow", "upstream.example")
        other = c.get("/auth").json()
        assert (other["name"], other["headers"]["host"]) == ("main", "web")

        assert c.get("/scheme").json()["name"] == "main"  # plain HTTP: the https-only rule does not match
        assert c.get("/plain").json()["name"] == "shadow"

        assert c.get("/re/abc/def").json()["path"] == "/def/abc"

        # both proxies run as app=canary: only the canary rule is theirs
        assert c.get("/src").json()["name"] == "main"
        assert c.get("/canary").json()["name"] == "shadow"
        # the service's one port is 80: a rule for 8080 is in no virtual host of it
        assert c.get("/port8080").json()["name"] == "main"
        assert c.get("/port80").json()["name"] == "shadow"

        before = len(echoes["shadow"].seen)
        for _ in range(300):
            assert c.get("/half").json()["name"] == "main"
        wait_for(lambda: len(echoes["shadow"].seen) - before >= 100, 10, "the mirrored copies")
        copies = len(echoes["shadow"].seen) - before
        assert 100 <= copies <= 200, copies  # 150 expected of 300
