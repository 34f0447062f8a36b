"""Several TLS servers on one listener from the proxy YAML (``tls_servers``): the ClientHello's
server name picks the certificate, one server requires client certificates and another does not,
ALPN picks HTTP/2 or HTTP/1.1; checked with curl and openssl s_client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config
from tests.integration.gateway_tls import curl, gateway_certs, negotiated_alpn, served_subject

ALPN = ["h2", "http/1.1"]


def test_the_server_name_picks_the_certificate_and_the_client_certificate_rules(
    tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    certs = gateway_certs(tmp_path, ("a.example.com", "b.example.com", "fallback.example.com"))
    a, b, fallback = (certs.servers[h] for h in ("a.example.com", "b.example.com", "fallback.example.com"))
    cfg, port = http_proxy_config(
        [upstream.address],
        protocols=["http1", "http2"],
        tls_servers=[
            {"server_names": ["a.example.com"], "tls": {"cert": a.cert, "key": a.key, "alpn": ALPN}},
            {
                "server_names": ["b.example.com", "*.b.example.com"],
                "tls": {
                    "cert": b.cert,
                    "key": b.key,
                    "ca": certs.ca.files.cert,
                    "require_client_cert": True,
                    "alpn": ALPN,
                },
            },
        ],
    )
    cfg["clusters"][0]["http_protocol"] = "http1"  # the upstream speaks HTTP/1.1 whatever the client spoke
    proxy_factory(cfg)
    assert "CN = a.example.com" in served_subject(port, "a.example.com")
    assert "CN = b.example.com" in served_subject(port, "b.example.com")
    assert "CN = b.example.com" in served_subject(port, "x.y.b.example.com")  # the wildcard
    assert served_subject(port, "c.example.com") == ""  # no server takes it, no default: closed

    code, status, body = curl(f"https://a.example.com:{port}/hello", port, certs)
    assert (code, status, body) == (0, "200 1.1", "up-a GET /hello\n"), (code, status, body)
    code, status, _ = curl(f"https://a.example.com:{port}/hello", port, certs, http2=True)
    assert (code, status) == (0, "200 2"), (code, status)
    assert negotiated_alpn(port, "a.example.com", "h2,http/1.1") == "h2"

    code, _status, _ = curl(f"https://b.example.com:{port}/hello", port, certs)  # no client certificate
    assert code != 0
    code, status, body = curl(f"https://b.example.com:{port}/hello", port, certs, client=certs.client)
    assert (code, status, body) == (0, "200 1.1", "up-a GET /hello\n"), (code, status, body)

    # a default server takes the names no other server lists, and ClientHellos without SNI
    cfg["listeners"][0]["tls_servers"].append({"tls": {"cert": fallback.cert, "key": fallback.key}})
    cfg2, port2 = http_proxy_config([upstream.address], tls_servers=cfg["listeners"][0]["tls_servers"])
    proxy_factory(cfg2)
    assert "CN = fallback.example.com" in served_subject(port2, "c.example.com")
    assert "CN = a.example.com" in served_subject(port2, "a.example.com")
