"""VirtualService HTTP fields enforced alike by a real Envoy 1.40 and a sofamesh sidecar, beyond
test_http_match_fields.py: retries (attempts, retryOn, perTryTimeout), a weighted destination's own
request / response headers, ``ignoreUriCase``, ``authority`` and ``scheme`` prefix / regex matches,
``withoutHeaders`` with a pattern that matches the empty string (an absent header counts as
empty, as Envoy's ``treat_missing_header_as_empty`` has it), method / header / query parameter
prefix and regex forms, route-level header add / set / remove, ``mirrors`` with a percentage,
redirect authority / port / scheme and a direct response body given as bytes."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.policy.side_by_side import side_by_side, web_policy
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.xds.mesh import wait_for

MAIN = "[{destination: {host: web, subset: main}}]"
SHADOW = "[{destination: {host: web, subset: shadow}}]"
FLAKY = "[{destination: {host: web, subset: flaky}}]"
POLICY = web_policy(
    ("main", "shadow", "flaky"),
    f"""\
  - name: retried
    match: [{{uri: {{prefix: /fail}}}}]
    retries: {{attempts: 3, retryOn: 5xx}}
    route: {FLAKY}
  - name: per-try
    match: [{{uri: {{prefix: /slow}}}}]
    timeout: 10s
    retries: {{attempts: 3, perTryTimeout: 300ms, retryOn: "5xx,reset"}}
    route: {FLAKY}
  - name: not-retried
    match: [{{uri: {{prefix: /once}}}}]
    retries: {{attempts: 0}}
    route: {FLAKY}
  - name: split
    match: [{{uri: {{prefix: /split}}}}]
    route:
    - destination: {{host: web, subset: main}}
      weight: 50
      headers:
        request: {{set: {{x-dest: main}}, remove: [x-gone]}}
        response: {{set: {{x-resp: main}}, remove: [x-upstream]}}
    - destination: {{host: web, subset: shadow}}
      weight: 50
      headers:
        request: {{add: {{x-dest: shadow}}}}
        response: {{add: {{x-resp: shadow}}}}
  - name: any-case
    match: [{{uri: {{prefix: /Case}}, ignoreUriCase: true}}, {{uri: {{exact: /Exact}}, ignoreUriCase: true}}]
    route: {SHADOW}
  - name: authority-prefix
    match: [{{uri: {{prefix: /authp}}, authority: {{prefix: web.default.svc}}}}]
    route: {SHADOW}
  - name: authority-regex
    match: [{{uri: {{prefix: /authr}}, authority: {{regex: "web\\\\.default"}}}}]
    route: {SHADOW}
  - name: scheme-prefix
    match: [{{uri: {{prefix: /schemep}}, scheme: {{prefix: htt}}}}]
    route: {SHADOW}
  - name: scheme-regex
    match: [{{uri: {{prefix: /schemer}}, scheme: {{regex: "https?"}}}}]
    route: {SHADOW}
  - name: scheme-https-prefix
    match: [{{uri: {{prefix: /schemes}}, scheme: {{prefix: https}}}}]
    route: {SHADOW}
  - name: without-any
    match: [{{uri: {{prefix: /edge}}, withoutHeaders: {{x-any: {{regex: ".*"}}}}}}]
    route: {SHADOW}
  - name: without-as
    match: [{{uri: {{prefix: /as}}, withoutHeaders: {{x-v: {{regex: "a*"}}}}}}]
    route: {SHADOW}
  - name: method-forms
    match: [{{uri: {{prefix: /meth}}, method: {{prefix: PO}}}}, {{uri: {{prefix: /meth}}, method: {{regex: "DEL.*"}}}}]
    route: {SHADOW}
  - name: header-forms
    match:
    - {{uri: {{prefix: /hdr}}, headers: {{x-p: {{prefix: gold}}}}}}
    - {{uri: {{prefix: /hdr}}, headers: {{x-r: {{regex: "v[0-9]+"}}}}}}
    route: {SHADOW}
  - name: query-forms
    match:
    - {{uri: {{prefix: /qry}}, queryParams: {{p: {{prefix: ab}}}}}}
    - {{uri: {{prefix: /qry}}, queryParams: {{r: {{regex: "[0-9]+"}}}}}}
    route: {SHADOW}
  - name: without-prefix
    match: [{{uri: {{prefix: /wp}}, withoutHeaders: {{x-w: {{prefix: "no"}}}}}}]
    route: {SHADOW}
  - name: route-headers
    match: [{{uri: {{prefix: /rh}}}}]
    headers: {{request: {{add: {{x-added: "1"}}}}, response: {{set: {{x-upstream: replaced}}}}}}
    route: {MAIN}
  - name: route-headers-removed
    match: [{{uri: {{prefix: /rr}}}}]
    headers: {{response: {{remove: [x-upstream]}}}}
    route: {MAIN}
  - name: mirrors
    match: [{{uri: {{prefix: /mir}}}}]
    mirrors: [{{destination: {{host: web, subset: shadow}}, percentage: {{value: 50}}}}]
    route: {MAIN}
  - name: redirect-parts
    match: [{{uri: {{prefix: /redir}}}}]
    redirect: {{authority: other.example, port: 8443, scheme: https}}
  - name: bytes
    match: [{{uri: {{prefix: /bytes}}}}]
    directResponse: {{status: 200, body: {{bytes: aGVsbG8=}}}}
  - name: ready
    match: [{{uri: {{exact: /ready}}}}]
    directResponse: {{status: 204}}
  - route: {MAIN}
""",
)


class Flaky:
    """An upstream that fails every other request of a kind: ``/fail`` and ``/once`` answer 503, then
    200, then 503...; ``/slow`` stalls 3 s, then answers at once, then stalls... (counted per kind)."""

    def __init__(self) -> None:
        counters: dict[str, Iterator[int]] = {}
        lock = threading.Lock()
        self.hits: dict[str, int] = {}
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                kind = self.path.split("/")[1]
                with lock:
                    n = next(counters.setdefault(kind, itertools.count()))
                    hits[kind] = n + 1
                if kind == "slow" and n % 2 == 0:
                    time.sleep(3)
                status = 503 if kind in ("fail", "once") and n % 2 == 0 else 200
                body = f"{kind} {n}".encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the proxy gave up on this try and closed the connection

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[dict[str, int], dict[str, Echo], Flaky]]:
    flaky = Flaky()
    with side_by_side(tmp_path, POLICY, ("main", "shadow"), "more-fields-sidecar", servers={"flaky": flaky}) as (
        ports,
        echoes,
    ):
        yield ports, echoes, flaky


@pytest.mark.parametrize("proxy", ["envoy", "sofamesh"])
def test_retries_per_destination_headers_and_match_forms_are_enforced(
    mesh: tuple[dict[str, int], dict[str, Echo], Flaky], proxy: str
) -> None:
    ports, echoes, flaky = mesh
    with httpx.Client(base_url=f"http://127.0.0.1:{ports[proxy]}", headers={"Host": "web"}, timeout=10) as c:

        def name(path: str, **headers: str) -> Any:
            r = c.get(path, headers=headers)
            assert r.status_code == 200, (path, r.status_code, r.text)
            return r.json()["name"]

        # retries: every other try fails; three attempts on 5xx hide it, none shows it
        assert [c.get(f"/fail/{i}").status_code for i in range(10)] == [200] * 10
        assert flaky.hits["fail"] >= 15  # each 503 was tried again
        assert sorted(c.get(f"/once/{i}").status_code for i in range(10)) == [200] * 5 + [503] * 5
        # perTryTimeout: a stalled try is abandoned after 300 ms and the next one answers
        for i in range(4):
            start = time.monotonic()
            r = c.get(f"/slow/{i}")
            assert (r.status_code, r.text.split()[0]) == (200, "slow")
            assert time.monotonic() - start < 2.5, i  # never the 3 s stall

        # a weighted destination's own headers, on its requests and its responses only
        served = {"main": 0, "shadow": 0}
        for _ in range(60):
            r = c.get("/split", headers={"x-gone": "1", "x-dest": "caller"})
            got = r.json()
            served[got["name"]] += 1
            if got["name"] == "main":
                assert got["headers"]["x-dest"] == "main" and "x-gone" not in got["headers"]
                assert r.headers["x-resp"] == "main" and "x-upstream" not in r.headers
            else:
                assert r.headers.get_list("x-resp") == ["shadow"] and r.headers["x-upstream"] == "shadow"
                assert got["headers"]["x-gone"] == "1"
        assert min(served.values()) >= 10, served  # 30 of 60 each expected

        # ignoreUriCase: prefix and exact, either case
        assert [name(p) for p in ("/case/a", "/CASE", "/cAsE/b", "/EXACT", "/exact", "/cas", "/Exact/x")] == [
            "shadow"
        ] * 5 + ["main"] * 2

        # authority and scheme: prefix and regex forms (the whole value must match a regex)
        assert name("/authp", Host="web.default.svc.cluster.local") == "shadow"
        assert name("/authp", Host="web.default") == "main"
        assert name("/authr", Host="web.default") == "shadow"
        assert name("/authr", Host="web.default.svc") == "main"
        assert name("/schemep") == "shadow" and name("/schemer") == "shadow"
        assert name("/schemes") == "main"  # plain HTTP is not https

        # withoutHeaders with a pattern the empty string matches: an absent header is empty, so it
        # does not count as "without" (Envoy's treat_missing_header_as_empty)
        assert name("/edge") == "main" and name("/edge", **{"x-any": "1"}) == "main"
        assert name("/as") == "main" and name("/as", **{"x-v": "aa"}) == "main"
        assert name("/as", **{"x-v": "b"}) == "shadow"

        # method, header and query parameter prefix / regex forms; withoutHeaders prefix
        assert c.post("/meth").json()["name"] == "shadow" and c.delete("/meth").json()["name"] == "shadow"
        assert name("/meth") == "main"
        assert name("/hdr", **{"x-p": "golden"}) == "shadow" and name("/hdr", **{"x-r": "v12"}) == "shadow"
        assert name("/hdr", **{"x-p": "silver"}) == "main" and name("/hdr", **{"x-r": "v12x"}) == "main"
        assert name("/qry?p=abc") == "shadow" and name("/qry?r=42") == "shadow"
        assert name("/qry?p=xab") == "main" and name("/qry?r=4a") == "main"
        assert name("/wp", **{"x-w": "yes"}) == "shadow" and name("/wp", **{"x-w": "nope"}) == "main"

        # route-level request add, response set and remove
        r = c.get("/rh")
        assert (r.json()["headers"]["x-added"], r.headers.get_list("x-upstream")) == ("1", ["replaced"])
        r = c.get("/rr")
        assert r.json()["name"] == "main" and "x-upstream" not in r.headers

        # mirrors with a percentage: about half of the requests are copied to shadow
        before = len(echoes["shadow"].seen)
        for _ in range(200):
            assert name("/mir") == "main"
        wait_for(lambda: len(echoes["shadow"].seen) - before >= 60, 10, "the mirrored copies")
        time.sleep(0.5)
        copies = len(echoes["shadow"].seen) - before
        assert 60 <= copies <= 140, copies  # 100 expected of 200

        # redirect to another authority, port and scheme; a direct response body given as bytes
        r = c.get("/redir/x?q=1")
        assert (r.status_code, r.headers["location"]) == (301, "https://other.example:8443/redir/x?q=1")
        r = c.get("/bytes")
        assert (r.status_code, r.content) == (200, b"hello")
