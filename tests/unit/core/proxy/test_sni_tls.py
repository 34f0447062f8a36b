"""``tls_servers``: the config rules, and which server a ClientHello's name picks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sofamesh.certs import load_or_mint_ca, mint_workload
from sofamesh.core.config.model import ListenerConfig, TlsServerConfig
from sofamesh.core.proxy.sni_tls import PASSTHROUGH, ServerNames


def _server(names: list[str], cert: str = "c.pem") -> dict[str, object]:
    return {"server_names": names, "tls": {"cert": cert, "key": "k.pem"}}


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([_server(["a.example.com"]), _server(["A.example.com"])], "'a.example.com' is named by an earlier TLS server"),
        ([_server([]), _server([])], "at most one of tls_servers may have no server_names"),
        ([_server(["a.*.com"])], "server name 'a.*.com' is not a host name or *.suffix"),
        ([{"server_names": ["a.com"], "tls": {"ca": "ca.pem"}}], "a TLS server needs cert and key"),
    ],
)
def test_bad_tls_servers_are_refused_naming_what_is_wrong(servers: list[object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("*", r"\*").replace(".", r"\.")):
        ListenerConfig(address="127.0.0.1:1", tls_servers=servers)


def test_tls_and_tls_servers_are_exclusive() -> None:
    with pytest.raises(ValidationError, match=r"either tls .* or tls_servers"):
        ListenerConfig(address="127.0.0.1:1", tls={"cert": "c", "key": "k"}, tls_servers=[_server(["a.com"])])


def test_exact_names_win_then_the_longest_wildcard_then_the_default(tmp_path: Path) -> None:
    ca = load_or_mint_ca(tmp_path)
    files = {n: mint_workload(ca, f"spiffe://t/{n}", tmp_path, n) for n in ("exact", "wide", "narrow", "default")}

    def server(names: list[str], which: str) -> TlsServerConfig:
        return TlsServerConfig(server_names=names, tls={"cert": files[which].cert, "key": files[which].key})

    names = ServerNames(
        [
            server(["*.example.com"], "wide"),
            server(["a.b.example.com"], "exact"),
            server(["*.b.example.com"], "narrow"),
            server([], "default"),
        ]
    )
    wide, exact, narrow, default = (s.server_context() for s in names.sources)
    assert names.context_for("a.b.example.com") is exact
    assert names.context_for("x.b.example.com") is narrow
    assert names.context_for("x.y.b.example.com") is narrow
    assert names.context_for("b.example.com") is wide
    assert names.context_for("example.com") is default
    assert names.context_for(None) is default
    without_default = ServerNames([server(["*.example.com"], "wide")])
    assert without_default.context_for("other.org") is None and without_default.context_for(None) is None


def test_a_passthrough_server_needs_names_and_tcp_among_the_protocols(tmp_path: Path) -> None:
    route = {"cluster": "vault", "timeout_ms": 0}
    with pytest.raises(ValidationError, match="needs server_names"):
        ListenerConfig(address="127.0.0.1:1", protocols=["tcp"], tls_servers=[{"passthrough": route}])
    with pytest.raises(ValidationError, match=r"exactly one of tls .terminate. or passthrough"):
        ListenerConfig(
            address="127.0.0.1:1",
            protocols=["tcp"],
            tls_servers=[{"server_names": ["v.example.com"], "passthrough": route, "tls": {"cert": "c", "key": "k"}}],
        )
    with pytest.raises(ValidationError, match="need tcp among the protocols"):
        ListenerConfig(
            address="127.0.0.1:1",
            protocols=["http1"],
            tls_servers=[{"server_names": ["v.example.com"], "passthrough": route}],
        )
    ca = load_or_mint_ca(tmp_path)
    a = mint_workload(ca, "spiffe://t/a", tmp_path, "a")
    names = ServerNames(
        [
            TlsServerConfig(server_names=["a.example.com"], tls={"cert": a.cert, "key": a.key}),
            TlsServerConfig(server_names=["*.vault.example.com"], passthrough=route),
        ]
    )
    assert names.context_for("x.vault.example.com") == PASSTHROUGH
    assert names.context_for("a.example.com") is names.sources[0].server_context()
