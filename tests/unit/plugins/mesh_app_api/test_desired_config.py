"""The config the mesh app API applies: the startup config plus a route and a cluster per routable service."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sofamesh.core.config.model import ProxyConfig
from sofamesh.core.errors import ConfigError
from sofamesh.plugins.mesh_app_api.plugin import MeshAppApi, settings

BASE = ProxyConfig.model_validate({
    "listeners": [
        {"name": "http_in", "address": "127.0.0.1:8080", "protocols": ["http1"], "routes": []},
        {"name": "egress", "address": "127.0.0.1:12220", "protocols": ["bolt"],
         "routes": [{"match": {"service": {"prefix": "legacy."}}, "cluster": "legacy"}]},
    ],
    "clusters": [{"name": "legacy", "endpoints": ["127.0.0.1:1"]}],
    "extensions": {"mesh_app_api": {}},
})


def api(**opts: Any) -> MeshAppApi:
    return MeshAppApi(SimpleNamespace(config=BASE), settings(opts))  # type: ignore[arg-type]


def test_subscribed_services_with_endpoints_get_a_route_first_on_the_bolt_listener_and_a_cluster() -> None:
    a = api()
    a.subscribed = {"b.Svc:1.0": ["127.0.0.1:2", "127.0.0.1:3"], "a.Empty:1.0": []}
    cfg = a.desired()
    egress = cfg.listeners[1]
    assert [r.cluster for r in egress.routes] == ["mesh_app.b.Svc:1.0", "legacy"]
    assert egress.routes[0].match.service is not None and egress.routes[0].match.service.exact == "b.Svc:1.0"
    assert cfg.listeners[0].routes == []
    added = cfg.clusters[1]
    assert (added.name, added.protocol, [e.address for e in added.endpoints]) == (
        "mesh_app.b.Svc:1.0", "bolt", ["127.0.0.1:2", "127.0.0.1:3"])
    assert len(cfg.clusters) == 2  # a service without endpoints gets neither route nor cluster


def test_the_egress_listener_can_be_named_and_an_unknown_one_is_a_config_error() -> None:
    assert api(egress_listener="127.0.0.1:12220").egress == 1
    with pytest.raises(ConfigError):
        api(egress_listener="nope")


def test_unknown_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pilot"):
        settings({"pilot": "x"})
