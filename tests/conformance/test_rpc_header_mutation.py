"""Header add / set / remove on RPC routes, seen by real peers through a sidecar: a sofa-rpc-node
provider reads the Bolt header map of each request with sofa-bolt-node's own decoder (set and added
keys there, the removed one gone) and the sofa-rpc-node consumer reads the response header the
sidecar set; an @dubbo.ts provider sees the attachments a dubbo2.js call carried after its
arguments, and dubbo2.js sees the response attachment the sidecar added."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, free_port

from .bolt_peers import CACHE, PEERS, node_provider, require_node
from .dubbo_peers import SERVICE, Provider, call, consume, java, require_dubbo_peers

ECHO = "com.example.EchoService"
TENANT = "租户-1 😀"  # non-ASCII: byte-counted lengths in the Bolt map, UTF-16 units in Hessian


def _config(protocol: str, port: int, route: dict[str, Any], provider: str) -> dict[str, Any]:
    """A sidecar with one listener of ``protocol`` whose one route (``route``) goes to ``provider``."""
    listener = {"name": "rpc", "address": f"127.0.0.1:{port}", "protocols": [protocol]}
    return {
        "listeners": [{**listener, "routes": [{"name": "mutating", "cluster": "providers", **route}]}],
        "clusters": [{"name": "providers", "protocol": protocol, "endpoints": [provider]}],
    }


def _bolt_consumer(address: str, calls: list[dict[str, object]], framing: str) -> tuple[list[Any], list[Any]]:
    """sofa-rpc-node calls; (results, the response header maps the consumer decoded)."""
    require_node()
    out = subprocess.run(
        ["node", str(PEERS / "consumer.js"), address, ECHO, json.dumps(calls), "1", framing],
        capture_output=True,
        timeout=60,
        cwd=PEERS,
        check=False,
        env={**os.environ, "SOFAMESH_CACHE": str(CACHE), "BOLT_RESPONSE_HEADERS": "1"},
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    lines = out.stdout.decode().splitlines()
    headers = next(json.loads(ln) for ln in lines if ln.startswith("{"))["response_headers"]
    results = json.loads([ln for ln in lines if ln.startswith("[")][-1])
    return results, headers


@pytest.mark.parametrize("framing", ["v1", "v2crc"])
def test_bolt_provider_sees_the_edited_header_map_and_the_consumer_the_response_header(framing: str) -> None:
    with node_provider(ECHO, "A") as provider:
        port = free_port()
        route = {
            "match": {"service": {"prefix": ECHO}},
            "request_headers": {"set": {"x-tenant": TENANT}, "add": {"x-added": "yes"}, "remove": ["service"]},
            "response_headers": {"set": {"x-served-by": "sofamesh"}},
        }
        with ProxyProcess(_config("bolt", port, route, provider.address)) as proxy:
            results, response_headers = _bolt_consumer(
                f"127.0.0.1:{port}", [{"method": "headers"}, {"method": "echo", "args": ["hi"]}], framing
            )
            direct, direct_headers = _bolt_consumer(provider.address, [{"method": "headers"}], framing)
            stats = proxy.stats()["clusters"]["providers"]
    assert direct == [{"ok": True, "result": {"service": f"{ECHO}:1.0"}}] and direct_headers == [{}]
    (seen, echo) = results
    assert seen == {"ok": True, "result": {"x-tenant": TENANT, "x-added": "yes"}}, seen
    assert echo == {"ok": True, "result": "A:hi"}
    assert response_headers == [{"x-served-by": "sofamesh"}] * 2
    assert stats["upstream_rq_total"] == 2


def test_dubbo_provider_sees_the_attachments_after_arguments_of_several_types(monkeypatch: pytest.MonkeyPatch) -> None:
    require_dubbo_peers()
    with Provider("p1") as provider:
        port = free_port()
        route = {
            "match": {"service": {"exact": SERVICE}},
            "request_headers": {
                "set": {"x-tenant": TENANT, "foo": "bar"},
                "add": {"x-added": "yes"},
                "remove": ["x-secret"],
            },
            "response_headers": {"add": {"x-served-by": "sofamesh"}},
        }
        with ProxyProcess(_config("dubbo", port, route, provider.address)):
            args = (
                java("java.lang.String", "héllo"),
                java("int", 7),
                java("java.util.HashMap", {"k": "v"}),
                java("java.util.List", ["a", "b"]),
                java("com.sofamesh.demo.Person", {"name": java("java.lang.String", "ann")}),
            )
            monkeypatch.setenv("DUBBO_RESPONSE_ATTACHMENTS", "1")
            results = consume(
                f"127.0.0.1:{port}",
                [
                    call("whoami", attachments={"x-secret": "s", "foo": "old"}),
                    call("whoamiWithArgs", *args, attachments={"x-secret": "s"}),
                    call("add", java("int", 2), java("int", 40)),
                ],
            )
    bare, typed, add = results
    for r in (bare, typed):
        assert r["ok"], r
        att = r["res"]["attachments"]
        assert (att.get("x-tenant"), att.get("foo"), att.get("x-added")) == (TENANT, "bar", "yes"), att
        assert "x-secret" not in att and att.get("path") == SERVICE, att  # the consumer's own ones stay
        assert r["attachments"].get("x-served-by") == "sofamesh", r
    assert typed["res"]["method"] == "whoamiWithArgs"
    assert (add["ok"], add["res"], add["attachments"].get("x-served-by")) == (True, 42, "sofamesh")
