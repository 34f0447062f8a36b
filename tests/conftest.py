"""Shared fixtures: real upstream HTTP servers and a proxy subprocess factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("up-a") as srv:
        yield srv


@pytest.fixture
def upstream_b() -> Iterator[UpstreamServer]:
    with UpstreamServer("up-b") as srv:
        yield srv


@pytest.fixture
def proxy_factory(sofamesh_proxy: Callable[..., ProxyProcess]) -> Callable[..., ProxyProcess]:
    """``sofamesh_proxy`` (from ``sofamesh.pytest_plugin``) under the name these tests use."""
    return sofamesh_proxy


def http_proxy_config(upstreams: list[str], *, timeout_ms: int = 15000, extra_routes: list[dict[str, Any]] | None = None,
                      extra_clusters: list[dict[str, Any]] | None = None, **listener: Any) -> tuple[dict[str, Any], int]:
    port = free_port()
    routes = [*(extra_routes or []), {"name": "all", "cluster": "web", "timeout_ms": timeout_ms}]
    cfg = {
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"], "routes": routes,
                       **listener}],
        "clusters": [{"name": "web", "endpoints": upstreams, "health": {"ejection_ms": 0}}, *(extra_clusters or [])],
    }
    return cfg, port
