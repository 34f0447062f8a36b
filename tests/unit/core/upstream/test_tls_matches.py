"""Envoy's transport_socket_matches in the sidecar: a new connection's TLS is chosen by the
endpoint's labels (first match wins), else the cluster's own ``tls``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.upstream.cluster import Cluster
from sofamesh.plugins.load_balancers.round_robin import RoundRobinFactory

_TLS = {"cert": "c.pem", "key": "k.pem"}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _cluster(loop: asyncio.AbstractEventLoop, **extra: object) -> Cluster:
    cfg = ClusterConfig.model_validate(
        {
            "name": "c",
            "endpoints": [
                {"address": "127.0.0.1:1", "labels": {"tlsMode": "istio", "zone": "a"}},
                {"address": "127.0.0.1:2", "labels": {"zone": "a"}},
            ],
            **extra,
        }
    )
    return Cluster(cfg, RoundRobinFactory().create(), None, loop)


def test_the_first_matching_entry_chooses_and_an_empty_match_means_plaintext(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sofamesh.core.net.tls.TlsSource._build", lambda self: None)
    c = _cluster(
        loop,
        tls_matches=[
            {
                "name": "tlsMode-istio",
                "match": {"tlsMode": "istio"},
                "tls": {**_TLS, "match_sans": ["spiffe://td/ns/a/sa/b"]},
            },
            {"name": "tlsMode-disabled", "match": {}},
        ],
    )
    meshed, plain = c.endpoints
    chosen = c.tls_for(meshed)
    assert chosen is not None and chosen.config.match_sans == ["spiffe://td/ns/a/sa/b"]
    assert c.tls_for(plain) is None


def test_without_a_match_the_clusters_tls_is_used(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sofamesh.core.net.tls.TlsSource._build", lambda self: None)
    c = _cluster(loop, tls=_TLS, tls_matches=[{"match": {"tlsMode": "istio"}}])
    meshed, plain = c.endpoints
    assert c.tls_for(meshed) is None
    assert c.tls_for(plain) is c.tls is not None
    assert _cluster(loop).tls_for(plain) is None
