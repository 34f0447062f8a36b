"""HTTP/JSON requests through a sidecar whose routes call a real sofa-rpc-node provider over Bolt
(the ``transcoder`` route filter with ``dialect: draft``); results and errors come back as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.bolt_peers import Peer, node_provider

INTERFACE = "com.example.EchoService"


def _route(prefix: str, method: str, arguments: list[dict[str, str]], cluster: str = "bolt") -> dict[str, Any]:
    config = {
        "protocol": "bolt",
        "dialect": "draft",
        "interface": INTERFACE,
        "version": "1.0",
        "method": method,
        "arguments": arguments,
    }
    return {
        "match": {"path": {"prefix": prefix}},
        "cluster": cluster,
        "filters": [{"type": "transcoder", "config": config}],
    }


@pytest.fixture(scope="module")
def gateway() -> Iterator[dict[str, Any]]:
    with node_provider(INTERFACE, "t1") as t1, node_provider(INTERFACE, "t2") as t2:
        listen = f"127.0.0.1:{free_port()}"
        config = {
            "listeners": [
                {
                    "name": "edge",
                    "address": listen,
                    "protocols": ["http1"],
                    "routes": [
                        _route("/echo-list", "echo", [{"name": "items", "type": "java.util.List"}]),
                        _route("/echo", "echo", [{"name": "s", "type": "java.lang.String"}]),
                        _route(
                            "/plus",
                            "plus",
                            [
                                {"name": "a", "type": "int", "from": "query"},
                                {"name": "b", "type": "java.lang.Long", "from": "query"},
                            ],
                        ),
                        _route("/fail", "fail", [{"name": "msg", "type": "java.lang.String"}]),
                        _route("/t2", "whoami", [], cluster="t2"),
                    ],
                }
            ],
            "clusters": [
                {"name": "bolt", "protocol": "bolt", "endpoints": [t1.address]},
                {"name": "t2", "protocol": "bolt", "endpoints": [t2.address], "connect_timeout_ms": 500},
            ],
        }
        with ProxyProcess(config) as proxy, httpx.Client(base_url=f"http://{listen}", timeout=10) as client:
            yield {"proxy": proxy, "client": client, "t2": t2}


def test_strings_numbers_and_a_list_come_back_as_json(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    cases = [
        (c.post("/echo", json=["héllo 😀"]), "t1:héllo 😀"),
        (c.post("/echo", json={"s": "by name"}), "t1:by name"),
        (c.get("/plus", params={"a": "2", "b": "40"}), 42),
        (c.post("/echo-list", json=[["a", 1, True]]), "t1:a,1,true"),
    ]
    for r, expected in cases:
        assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json", expected), r.text


def test_a_provider_exception_is_a_500_naming_its_class_and_message(gateway: dict[str, Any]) -> None:
    r = gateway["client"].post("/fail", json=["boom"])
    assert r.status_code == 500, r.text
    body = r.json()
    assert (body["error"], body["exception"]) == ("exception", "com.alipay.remoting.rpc.exception.RpcServerException")
    assert "fail: boom" in body["message"]


def test_an_argument_that_does_not_fit_is_a_400_naming_it(gateway: dict[str, Any]) -> None:
    r = gateway["client"].get("/plus", params={"a": "two", "b": "40"})
    assert r.status_code == 400, r.text
    assert (r.json()["argument"], r.json()["type"]) == ("a", "int")
    r = gateway["client"].post("/echo", content=b"[oops")
    assert (r.status_code, r.json()["error"]) == (400, "bad_body")


def test_a_stopped_provider_is_a_503(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.post("/t2")
    assert (r.status_code, r.json()) == (200, "t2"), r.text
    t2: Peer = gateway["t2"]
    t2.stop()
    # the pooled connection's close may still be on its way: the call then meets a reset
    r = c.post("/t2")
    assert (r.status_code, r.json()["error"]) in {(503, "upstream_reset"), (503, "no_healthy_upstream")}, r.text
    r = c.post("/t2")  # a new connection is refused
    assert (r.status_code, r.json()["error"]) == (503, "no_healthy_upstream"), r.text
