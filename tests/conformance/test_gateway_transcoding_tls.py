"""HTTPS with SNI through a sofamesh gateway to real RPC providers: one port terminates TLS for two
server names with two certificates (``tls_servers``); the routes of ``dubbo.example.com`` call an
@dubbo.ts provider and those of ``sofa.example.com`` a sofa-rpc-node provider (the ``transcoder``
route filter). Real curl (``--resolve``, ``--cacert``, HTTP/1.1 and HTTP/2) gets strings, numbers,
lists, maps and a POJO back as JSON, and each provider's exception as a JSON 500."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.bolt_peers import node_provider
from tests.conformance.dubbo_peers import SERVICE, Provider, require_dubbo_peers
from tests.integration.gateway_tls import GatewayCerts, curl, gateway_certs, served_subject

DUBBO_HOST = "dubbo.example.com"
SOFA_HOST = "sofa.example.com"
SOFA_INTERFACE = "com.example.EchoService"
ALPN = ["h2", "http/1.1"]
PERSON = "com.sofamesh.demo.Person"


def _route(host: str, prefix: str, cluster: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "match": {"host": {"regex": re.escape(host) + r"(:\d+)?"}, "path": {"prefix": prefix}},
        "cluster": cluster,
        "filters": [{"type": "transcoder", "config": config}],
    }


def _dubbo(prefix: str, method: str, arguments: list[dict[str, str]]) -> dict[str, Any]:
    config = {"protocol": "dubbo", "interface": SERVICE, "version": "1.0.0", "method": method, "arguments": arguments}
    return _route(DUBBO_HOST, prefix, "dubbo", config)


def _sofa(prefix: str, method: str, arguments: list[dict[str, str]]) -> dict[str, Any]:
    config = {
        "protocol": "bolt",
        "dialect": "draft",
        "interface": SOFA_INTERFACE,
        "version": "1.0",
        "method": method,
        "arguments": arguments,
    }
    return _route(SOFA_HOST, prefix, "sofa", config)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_dubbo_peers()
    certs = gateway_certs(Path(tmp_path_factory.mktemp("edge")), (DUBBO_HOST, SOFA_HOST))
    d, s = certs.servers[DUBBO_HOST], certs.servers[SOFA_HOST]
    with Provider("p1") as dubbo, node_provider(SOFA_INTERFACE, "t1") as sofa:
        port = free_port()
        config = {
            "listeners": [
                {
                    "name": "edge",
                    "address": f"127.0.0.1:{port}",
                    "protocols": ["http1", "http2"],
                    "tls_servers": [
                        {"server_names": [DUBBO_HOST], "tls": {"cert": d.cert, "key": d.key, "alpn": ALPN}},
                        {"server_names": [SOFA_HOST], "tls": {"cert": s.cert, "key": s.key, "alpn": ALPN}},
                    ],
                    "routes": [
                        _dubbo("/echo", "echo", [{"name": "s", "type": "java.lang.String"}]),
                        _dubbo(
                            "/add", "add", [{"name": "a", "type": "int"}, {"name": "b", "type": "java.lang.Integer"}]
                        ),
                        _dubbo("/reverse", "reverse", [{"name": "items", "type": "java.util.List"}]),
                        _dubbo("/entries", "entries", [{"name": "m", "type": "java.util.Map"}]),
                        _dubbo("/greet", "greet", [{"name": "person", "type": PERSON}]),
                        _dubbo("/fail", "fail", [{"name": "msg", "type": "java.lang.String"}]),
                        _sofa("/echo", "echo", [{"name": "s", "type": "java.lang.String"}]),
                        _sofa(
                            "/add",
                            "plus",
                            [{"name": "a", "type": "int", "from": "query"}, {"name": "b", "type": "java.lang.Long"}],
                        ),
                        _sofa("/reverse", "reverse", [{"name": "items", "type": "java.util.List"}]),
                        _sofa("/entries", "entries", [{"name": "m", "type": "java.util.Map"}]),
                        _sofa("/greet", "greet", [{"name": "person", "type": PERSON}]),
                        _sofa("/fail", "fail", [{"name": "msg", "type": "java.lang.String"}]),
                    ],
                }
            ],
            "clusters": [
                {"name": "dubbo", "protocol": "dubbo", "endpoints": [dubbo.address]},
                {"name": "sofa", "protocol": "bolt", "endpoints": [sofa.address]},
            ],
        }
        with ProxyProcess(config):
            yield {"port": port, "certs": certs}


def _post(gateway: dict[str, Any], host: str, path: str, body: Any, *, http2: bool) -> tuple[str, Any]:
    """``HTTP_CODE HTTP_VERSION`` and the JSON body of one curl POST over HTTPS to ``host``."""
    port: int = gateway["port"]
    certs: GatewayCerts = gateway["certs"]
    extra = ("-H", "content-type: application/json", "--data-binary", json.dumps(body))
    code, status, text = curl(f"https://{host}:{port}{path}", port, certs, http2=http2, extra=extra)
    assert code == 0, (host, path, code, status, text)
    try:
        return status.strip(), json.loads(text)
    except ValueError:
        raise AssertionError((host, path, status, text)) from None


def test_each_server_name_presents_its_own_certificate(gateway: dict[str, Any]) -> None:
    port = gateway["port"]
    assert f"CN = {DUBBO_HOST}" in served_subject(port, DUBBO_HOST)
    assert f"CN = {SOFA_HOST}" in served_subject(port, SOFA_HOST)
    # a name no server lists gets no certificate at all: no server without names on this port
    assert served_subject(port, "other.example.com") == ""


GREETING = {"greeting": "hello ann", "name": "ann", "n": 5}
MAP_IN = {"a": 1, "b": "two", "c": [1, 2], "d": {"e": None}}
MAP_OUT = {**MAP_IN, "size": 4}
LIST_IN = ["a", 2, {"k": "v"}, [True]]
LIST_OUT = [[True], {"k": "v"}, 2, "a"]


TEXT = "héllo 😀"
# per server name: (path, JSON body, JSON answer) for a string, a number, a list, a map and a POJO;
# then the provider's exception class and its message
ANSWERS: dict[str, tuple[list[tuple[str, Any, Any]], str, str]] = {
    DUBBO_HOST: (
        [
            ("/echo", [TEXT], TEXT),
            ("/add", {"a": 2, "b": 40}, 42),
            ("/reverse", [LIST_IN], LIST_OUT),
            ("/entries", [MAP_IN], MAP_OUT),
            ("/greet", [{"name": "ann", "n": 5}], GREETING),
        ],
        "ServiceError",
        "p1: boom",
    ),
    SOFA_HOST: (
        [
            ("/echo", [TEXT], f"t1:{TEXT}"),  # the provider prefixes its tag
            ("/add?a=2", {"b": 40}, 42),
            ("/reverse", [LIST_IN], LIST_OUT),
            ("/entries", [MAP_IN], MAP_OUT),
            ("/greet", [{"name": "ann", "n": 5}], GREETING),
        ],
        "com.alipay.remoting.rpc.exception.RpcServerException",
        "fail: boom",
    ),
}


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
@pytest.mark.parametrize("host", [DUBBO_HOST, SOFA_HOST], ids=["dubbo.ts", "sofa-rpc-node"])
def test_each_names_provider_answers_json_and_its_exception_is_a_json_500(
    gateway: dict[str, Any], host: str, http2: bool
) -> None:
    version = "2" if http2 else "1.1"
    cases, exception, message = ANSWERS[host]
    for path, body, expected in cases:
        assert _post(gateway, host, path, body, http2=http2) == (f"200 {version}", expected), path
    status, error = _post(gateway, host, "/fail", ["boom"], http2=http2)
    assert status == f"500 {version}", error
    assert (error["error"], error["exception"]) == ("exception", exception), error
    assert message in error["message"], error
