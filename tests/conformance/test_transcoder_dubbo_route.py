"""HTTP/JSON requests through a sidecar whose routes call a real @dubbo.ts provider (the
``transcoder`` route filter): arguments from the body, the path and the query; results and errors
come back as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.dubbo_peers import SERVICE, Provider, require_dubbo_peers


def _route(
    prefix: str, method: str, arguments: list[dict[str, str]], cluster: str = "dubbo", **extra: Any
) -> dict[str, Any]:
    config = {
        "protocol": "dubbo",
        "interface": SERVICE,
        "version": "1.0.0",
        "method": method,
        "arguments": arguments,
        **extra,
    }
    return {
        "match": {"path": {"prefix": prefix.split("{")[0]}},
        "cluster": cluster,
        "filters": [{"type": "transcoder", "config": config}],
    }


@pytest.fixture(scope="module")
def gateway() -> Iterator[dict[str, Any]]:
    require_dubbo_peers()
    with Provider("p1") as p1, Provider("p2") as p2:
        listen = f"127.0.0.1:{free_port()}"
        config = {
            "listeners": [
                {
                    "name": "edge",
                    "address": listen,
                    "protocols": ["http1", "http2"],
                    "routes": [
                        _route(
                            "/echo-header",
                            "echo",
                            [{"name": "s", "type": "java.lang.String", "from": "header", "key": "X-Msg"}],
                        ),
                        _route("/echo", "echo", [{"name": "s", "type": "java.lang.String"}]),
                        _route("/small", "echo", [{"name": "s", "type": "java.lang.String"}], max_body_bytes=1000),
                        _route(
                            "/add/{a}",
                            "add",
                            [
                                {"name": "a", "type": "int", "from": "path"},
                                {"name": "b", "type": "java.lang.Integer", "from": "query"},
                            ],
                            path="/add/{a}",
                        ),
                        _route("/greet-map", "greet", [{"name": "m", "type": "java.util.Map"}]),
                        _route("/greet", "greet", [{"name": "person", "type": "com.sofamesh.demo.Person"}]),
                        _route(
                            "/concat",
                            "concat",
                            [{"name": "list", "type": "java.util.List"}, {"name": "sep", "type": "java.lang.String"}],
                        ),
                        _route("/nothing", "nothing", []),
                        # no declared types: Dubbo's generic $invoke
                        _route("/generic/greet", "greet", [{"name": "person"}]),
                        _route("/generic/add", "add", [{"name": "a"}, {"name": "b"}]),
                        _route("/generic/concat", "concat", [{"name": "list"}, {"name": "sep", "from": "query"}]),
                        _route("/generic/whoami", "whoami", [{"name": "x"}]),
                        _route("/fail", "fail", [{"name": "msg", "type": "java.lang.String"}]),
                        {**_route("/slow", "slow", [{"name": "ms", "type": "int"}]), "timeout_ms": 400},
                        _route("/p2", "whoami", [], cluster="p2"),
                        {**_route("/whoami-timed", "whoami", []), "timeout_ms": 2500},
                        {**_route("/whoami-untimed", "whoami", []), "timeout_ms": 0},
                        _route("/whoami", "whoami", []),
                        {"match": {"path": {"prefix": "/plain"}}, "direct_response": {"status": 200, "body": "ok"}},
                    ],
                }
            ],
            "clusters": [
                {"name": "dubbo", "protocol": "dubbo", "endpoints": [p1.address]},
                {"name": "p2", "protocol": "dubbo", "endpoints": [p2.address], "connect_timeout_ms": 500},
            ],
        }
        with ProxyProcess(config) as proxy, httpx.Client(base_url=f"http://{listen}", timeout=10) as client:
            yield {"proxy": proxy, "client": client, "p2": p2}


def test_strings_numbers_lists_maps_and_a_pojo_come_back_as_json(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    text = "héllo 😀 " + "x" * 40
    cases = [
        (c.post("/echo", json=[text]), text),
        (c.post("/echo", json={"s": "by name"}), "by name"),
        (c.get("/echo-header", headers={"x-msg": "from a header"}), "from a header"),
        (c.get("/add/2", params={"b": "40"}), 42),
        (c.post("/greet", json=[{"name": "ann", "n": 5}]), {"greeting": "hello ann", "name": "ann", "n": 5}),
        (c.post("/greet-map", json={"m": {"name": "bob", "n": 3}}), {"greeting": "hello bob", "name": "bob", "n": 3}),
        (c.post("/concat", json={"list": ["a", "b", "c"], "sep": "-"}), "a-b-c"),
        (c.post("/nothing"), None),
    ]
    for r, expected in cases:
        assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json", expected), r.text
    # a route without the filter on the same listener is untouched
    plain = c.get("/plain")
    assert (plain.status_code, plain.text) == (200, "ok")


def test_a_route_without_declared_types_makes_dubbos_generic_call(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    cases = [
        (c.post("/generic/greet", json=[{"name": "ann", "n": 5}]), {"greeting": "hello ann", "name": "ann", "n": 5}),
        (c.post("/generic/add", json={"a": 2, "b": 40}), 42),
        (c.post("/generic/concat?sep=%2B", json={"list": ["a", 1, None]}), "a+1+"),
    ]
    for r, expected in cases:
        assert (r.status_code, r.json()) == (200, expected), r.text
    # on the wire: $invoke with attachment generic=true, the route's timeout beside it
    r = c.post("/generic/whoami", json=[None])
    assert r.status_code == 200, r.text
    seen = r.json()
    assert (seen["method"], seen["attachments"]["generic"], seen["attachments"]["timeout"]) == (
        "$invoke",
        "true",
        "15000",
    )


def test_a_provider_exception_is_a_500_naming_its_class_and_message(gateway: dict[str, Any]) -> None:
    r = gateway["client"].post("/fail", json=["boom"])
    assert r.status_code == 500
    body = r.json()
    assert (body["error"], body["exception"], body["message"]) == ("exception", "ServiceError", "p1: boom")


@pytest.mark.parametrize(
    ("path", "body", "argument", "message"),
    [
        ("/add/2?b=forty", None, "b", "argument 'b': expected java.lang.Integer, found string 'forty'"),
        ("/add/x?b=1", None, "a", "argument 'a': expected int, found string 'x'"),
        ("/greet", b'["ann"]', "person", "argument 'person': expected com.sofamesh.demo.Person, found string 'ann'"),
        ("/concat", b'{"list": ["a"]}', "sep", "request body: argument 'sep' missing"),
    ],
)
def test_an_argument_that_does_not_fit_is_a_400_naming_it(
    gateway: dict[str, Any], path: str, body: bytes | None, argument: str, message: str
) -> None:
    r = gateway["client"].request("POST" if body else "GET", path, content=body)
    assert r.status_code == 400, r.text
    assert r.json()["argument"] == argument
    assert message in r.json()["message"]


def test_a_body_that_is_not_json_is_a_400(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.post("/echo", content=b"{not json")
    assert (r.status_code, r.json()["error"]) == (400, "bad_body")
    assert "not JSON" in r.json()["message"]
    r = c.post("/concat", json=["only one"])
    assert r.status_code == 400 and "JSON array of 2 arguments (list, sep), found 1" in r.json()["message"]


def test_a_call_carries_the_routes_timeout_as_dubbos_timeout_attachment(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.post("/whoami-timed")
    assert r.status_code == 200, r.text
    assert (r.json()["method"], r.json()["attachments"]["timeout"]) == ("whoami", "2500")
    r = c.post("/whoami")  # the route's default timeout, Envoy's 15 s
    assert r.json()["attachments"]["timeout"] == "15000", r.text
    r = c.post("/whoami-untimed")  # timeout_ms 0: no timeout, none on the call
    assert r.status_code == 200 and "timeout" not in r.json()["attachments"], r.text


def test_a_slow_provider_is_a_504(gateway: dict[str, Any]) -> None:
    r = gateway["client"].post("/slow", json=[3000])
    assert (r.status_code, r.json()["error"]) == (504, "timeout"), r.text
    assert "400 ms" in r.json()["message"]


def test_a_stopped_provider_is_a_503(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.post("/p2")
    assert (r.status_code, r.json()["provider"]) == (200, "p2"), r.text
    gateway["p2"].stop()
    # the pooled connection's close may still be on its way: the call then meets a reset
    r = c.post("/p2")
    assert (r.status_code, r.json()["error"]) in {(503, "upstream_reset"), (503, "no_healthy_upstream")}, r.text
    r = c.post("/p2")  # a new connection is refused
    assert (r.status_code, r.json()["error"]) == (503, "no_healthy_upstream"), r.text


def test_over_http2_a_body_larger_than_the_stream_window_is_gathered_and_answered(gateway: dict[str, Any]) -> None:
    text = "y" * 200_000  # beyond HTTP/2's initial 64 KiB window: the proxy must give the window back
    address = gateway["client"].base_url
    with httpx.Client(base_url=address, http1=False, http2=True, timeout=10) as h2:
        r = h2.post("/echo", json=[text])
        assert (r.http_version, r.status_code, r.json()) == ("HTTP/2", 200, text)
        r = h2.post("/add/1?b=2")
        assert (r.status_code, r.json()) == (200, 3)


def test_a_body_over_the_routes_limit_is_a_413(gateway: dict[str, Any]) -> None:
    r = gateway["client"].post("/small", json=["z" * 5000])
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large"), r.text
    r = gateway["client"].post("/small", json=["fits"])
    assert (r.status_code, r.json()) == (200, "fits")
