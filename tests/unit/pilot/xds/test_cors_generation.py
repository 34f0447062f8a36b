"""VirtualService ``corsPolicy`` -> Envoy's CORS filter config (as Istio writes it), and the same
resources through the sidecar's translator into its ``cors`` route filter; per-destination headers,
``ignoreUriCase`` and ``withoutHeaders`` on the sidecar's side of the same translation."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sofamesh.core.config.model import RouteConfig
from sofamesh.core.errors import ConfigError
from sofamesh.core.proxy.router import Route
from sofamesh.core.xds.translate import translate_listener, translate_route_configuration
from sofamesh.pilot.xds.generators import (
    ApiListenerGenerator,
    BuildContext,
    OutboundListenerGenerator,
    OutboundRouteGenerator,
)
from sofamesh.plugins.filters.cors import CorsFilterFactory
from tests.unit.pilot.xds.test_policy_generation import NODE, _bookinfo

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http:
  - name: cors
    match: [{uri: {prefix: /Api}, ignoreUriCase: true, withoutHeaders: {x-any: {regex: ".*"}}}]
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {prefix: "https://pre."}, {regex: "https://.*\\\\.b\\\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-h1, x-h2]
      exposeHeaders: [x-e]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: IGNORE
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
      headers: {request: {set: {x-to: v1}}, response: {add: {x-from: v1}, remove: [x-drop]}}
    - destination: {host: reviews, subset: v2}
      weight: 50
  - route: [{destination: {host: reviews, subset: v1}}]
"""


def _route_config() -> route_pb2.RouteConfiguration:
    mesh, applied, _ = _bookinfo("destination-rule-all.yaml", extra="\n---\n" + VS)
    gen = OutboundRouteGenerator()
    gen.use_policy(applied)
    [res] = list(gen.generate(mesh, NODE))
    return res.message  # type: ignore[no-any-return]


def test_cors_policy_is_written_as_istio_translates_it() -> None:
    rc = _route_config()
    [vh] = [v for v in rc.virtual_hosts if v.name == "reviews"]
    cors_route, plain = vh.routes
    policy = cors_pb2.CorsPolicy()
    assert cors_route.typed_per_filter_config["envoy.filters.http.cors"].Unpack(policy)
    assert [m.WhichOneof("match_pattern") for m in policy.allow_origin_string_match] == [
        "exact",
        "prefix",
        "safe_regex",
    ]
    assert policy.allow_origin_string_match[2].safe_regex.regex == r"https://.*\.b\.example"
    assert (policy.allow_methods, policy.allow_headers, policy.expose_headers, policy.max_age) == (
        "GET,POST",
        "x-h1,x-h2",
        "x-e",
        "86400",
    )
    assert policy.allow_credentials.value is True and policy.forward_not_matching_preflights.value is False
    assert policy.filter_enabled.default_value.numerator == 100
    assert "envoy.filters.http.cors" not in plain.typed_per_filter_config
    assert not cors_route.match.case_sensitive.value and cors_route.match.HasField("case_sensitive")


def test_the_outbound_listener_has_the_cors_filter_first_and_proxyless_listeners_have_none() -> None:
    mesh, applied, _ = _bookinfo("destination-rule-all.yaml", extra="\n---\n" + VS)
    [lds] = list(OutboundListenerGenerator().generate(mesh, NODE))
    hcm = hcm_pb2.HttpConnectionManager()
    lds.message.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    assert translate_listener(lds.message, ("http1",)).rds == "outbound|15001"  # the sidecar takes it
    gen = ApiListenerGenerator()
    snap = applied.snapshot(mesh)
    listeners = gen.build(
        mesh.service("reviews"),
        mesh.instances("reviews"),  # type: ignore[arg-type]
        BuildContext(mesh, snap, snap.for_service("reviews")),
    )
    assert listeners
    for res in listeners:
        api = hcm_pb2.HttpConnectionManager()
        res.message.api_listener.api_listener.Unpack(api)
        assert "envoy.filters.http.cors" not in [f.name for f in api.http_filters]
        assert api.route_config.virtual_hosts[0].routes[0].route.WhichOneof("cluster_specifier")
        for vh in api.route_config.virtual_hosts:
            assert all("envoy.filters.http.cors" not in r.typed_per_filter_config for r in vh.routes)


def _sidecar_routes() -> list[dict[str, Any]]:
    return [r for r in translate_route_configuration(_route_config()) if r["name"].startswith("reviews/")]


def test_the_sidecar_translates_cors_case_folding_missing_as_empty_and_per_destination_headers() -> None:
    first = _sidecar_routes()[0]
    assert first["filters"] == [
        {
            "type": "cors",
            "config": {
                "allow_origins": [
                    {"exact": "https://a.example"},
                    {"prefix": "https://pre."},
                    {"regex": r"https://.*\.b\.example"},
                ],
                "allow_methods": "GET,POST",
                "allow_headers": "x-h1,x-h2",
                "expose_headers": "x-e",
                "max_age": "86400",
                "allow_credentials": True,
                "forward_not_matching_preflights": False,
            },
        }
    ]
    assert first["match"]["path"] == {"prefix": "/Api", "ignore_case": True}
    assert first["match"]["headers"]["x-any"] == {"regex": ".*", "invert": True, "missing_as_empty": True}
    v1, v2 = first["weighted_clusters"]
    assert v1["request_headers"] == {"set": {"x-to": "v1"}}
    assert v1["response_headers"] == {"add": {"x-from": "v1"}, "remove": ["x-drop"]}
    assert set(v2) == {"name", "weight"}
    route = Route(0, RouteConfig.model_validate({k: v for k, v in first.items() if k != "filters"}))
    assert route.cluster_headers is not None and set(route.cluster_headers) == {v1["name"]}


class _Head:
    def __init__(self, path: str, headers: dict[str, str]) -> None:
        self.path, self.service, self.protocol = path, "reviews", "http1"
        self.headers = {k.lower(): v for k, v in headers.items()}

    def key(self, name: str) -> str | None:
        return self.path if name == "path" else self.headers.get(name)


def test_ignore_uri_case_and_a_without_header_pattern_matching_empty_follow_envoy() -> None:
    first = _sidecar_routes()[0]
    route = Route(0, RouteConfig.model_validate({k: v for k, v in first.items() if k != "filters"}))
    # withoutHeaders x-any ".*": an absent header counts as "" (which ".*" matches), so no request matches
    assert not route.matches(_Head("/API/x", {}))  # type: ignore[arg-type]
    assert not route.matches(_Head("/api", {"x-any": "1"}))  # type: ignore[arg-type]
    plain = dict(first, match={"path": first["match"]["path"]})
    route = Route(0, RouteConfig.model_validate({k: v for k, v in plain.items() if k != "filters"}))
    assert route.matches(_Head("/API/x", {})) and route.matches(_Head("/apI", {}))  # type: ignore[arg-type]
    assert not route.matches(_Head("/other", {}))  # type: ignore[arg-type]


def test_a_cors_policy_the_sidecar_cannot_apply_is_nacked_by_name() -> None:
    rc = _route_config()
    [vh] = [v for v in rc.virtual_hosts if v.name == "reviews"]
    policy = cors_pb2.CorsPolicy()
    vh.routes[0].typed_per_filter_config["envoy.filters.http.cors"].Unpack(policy)
    policy.shadow_enabled.default_value.numerator = 50
    vh.routes[0].typed_per_filter_config["envoy.filters.http.cors"].Pack(policy)
    with pytest.raises(
        ConfigError,
        match=r"typed_per_filter_config\[envoy.filters.http.cors\].shadow_enabled: "
        "shadow mode is not supported",
    ):
        translate_route_configuration(rc)


def test_the_cors_filter_config_is_checked_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\].filters\[0\].config.allow_origins\[0\]"):
        CorsFilterFactory().create({"allow_origins": [{"regex": "("}]}, "routes[0].filters[0]")
