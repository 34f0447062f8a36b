"""Envoy's balancing, health checking and connection-limit fields, fed as real protobuf messages to
the sidecar's translator: what the kernel gets (and takes), and the NACK texts."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401  (the Any type)
from google.protobuf import json_format

from sofamesh.core.config.loader import from_mapping
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.xds.translate import (
    Translated,
    TranslatedCluster,
    assemble,
    translate_cluster,
    translate_load_assignment,
    translate_route_configuration,
)

H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _cluster(**fields: object) -> cluster_pb2.Cluster:
    return json_format.ParseDict({"name": "web", "type": "STATIC", **fields}, cluster_pb2.Cluster())


@pytest.mark.parametrize(("policy", "config", "lb", "lb_config"), [
    ("LEAST_REQUEST", {"least_request_lb_config": {
        "choice_count": 3, "active_request_bias": {"default_value": 0.5, "runtime_key": "x"},
        "slow_start_config": {"slow_start_window": "30s", "aggression": {"default_value": 2.0, "runtime_key": "y"},
                              "min_weight_percent": {"value": 20}}}},
     "least_request", {"choice_count": 3, "active_request_bias": 0.5, "slow_start_config": {
         "slow_start_window_ms": 30000, "aggression": 2.0, "min_weight_percent": 20.0}}),
    ("RING_HASH", {"ring_hash_lb_config": {"minimum_ring_size": 2048, "maximum_ring_size": 4096}},
     "ring_hash", {"minimum_ring_size": 2048, "maximum_ring_size": 4096}),
    ("MAGLEV", {"maglev_lb_config": {"table_size": 251}}, "maglev", {"table_size": 251}),
    ("ROUND_ROBIN", {"round_robin_lb_config": {"slow_start_config": {"slow_start_window": "5s"}}},
     "round_robin", {"slow_start_config": {"slow_start_window_ms": 5000}}),
])
def test_lb_policies_and_their_configs_are_translated(policy: str, config: dict[str, object], lb: str,
                                                      lb_config: dict[str, object]) -> None:
    out = translate_cluster(_cluster(lb_policy=policy, **config)).config
    assert (out["lb"], out["lb_config"]) == (lb, lb_config)
    from_mapping({"clusters": [out]})


def test_ring_hash_with_murmur_and_zone_aware_hostname_hashing_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ring_hash_lb_config.hash_function: only XX_HASH"):
        translate_cluster(_cluster(lb_policy="RING_HASH", ring_hash_lb_config={"hash_function": "MURMUR_HASH_2"}))
    with pytest.raises(ConfigError, match=r"consistent_hashing_lb_config"):
        translate_cluster(_cluster(lb_policy="MAGLEV", common_lb_config={
            "consistent_hashing_lb_config": {"use_hostname_for_hashing": True}}))


def test_locality_weighting_and_zone_awareness_are_translated() -> None:
    out = translate_cluster(_cluster(common_lb_config={"locality_weighted_lb_config": {}})).config
    assert out["locality_weighted_lb"] is True and "zone_aware_lb" not in out
    out = translate_cluster(_cluster(common_lb_config={"zone_aware_lb_config": {}})).config
    assert "locality_weighted_lb" not in out and out["zone_aware_lb"] == {"fail_traffic_on_panic": False}
    out = translate_cluster(_cluster(common_lb_config={"zone_aware_lb_config": {
        "routing_enabled": {"value": 40}, "min_cluster_size": 3, "fail_traffic_on_panic": True}})).config
    assert out["zone_aware_lb"] == {"routing_enabled": 40.0, "min_cluster_size": 3, "fail_traffic_on_panic": True}
    cfg = from_mapping({"clusters": [{"name": "c", **out}]})
    assert cfg.clusters[0].zone_aware_lb is not None and cfg.clusters[0].zone_aware_lb.min_cluster_size == 3


def test_health_checks_of_every_kind_are_translated() -> None:
    http = translate_cluster(_cluster(health_checks=[{
        "timeout": "0.5s", "interval": "2s", "interval_jitter": "0.1s", "interval_jitter_percent": 10,
        "unhealthy_threshold": 3, "healthy_threshold": 2, "no_traffic_interval": "10s", "unhealthy_interval": "5s",
        "http_health_check": {"path": "/healthz", "host": "web.local", "codec_client_type": "HTTP2",
                              "expected_statuses": [{"start": 200, "end": 300}], "method": "HEAD",
                              "request_headers_to_add": [{"header": {"key": "x-hc", "value": "1"}}]}}])).config
    assert http["health_checks"] == [{
        "timeout_ms": 500, "interval_ms": 2000, "interval_jitter_ms": 100, "interval_jitter_percent": 10,
        "unhealthy_threshold": 3, "healthy_threshold": 2, "no_traffic_interval_ms": 10000,
        "unhealthy_interval_ms": 5000, "http_health_check": {
            "path": "/healthz", "host": "web.local", "codec_client_type": "HTTP2", "method": "HEAD",
            "expected_statuses": [[200, 300]], "request_headers_to_add": {"x-hc": "1"}}}]
    (c,) = from_mapping({"clusters": [http]}).clusters
    assert c.health_checks[0].http_health_check is not None
    assert c.health_checks[0].http_health_check.expected_statuses == [(200, 300)]
    tcp = translate_cluster(_cluster(health_checks=[{"timeout": "1s", "interval": "1s", "tcp_health_check": {
        "send": {"text": "50494e47"}, "receive": [{"binary": "UE9ORw=="}]}}])).config
    assert tcp["health_checks"][0]["tcp_health_check"] == {"send": "50494e47", "receive": ["504f4e47"]}
    grpc = translate_cluster(_cluster(health_checks=[{"timeout": "1s", "interval": "1s", "grpc_health_check": {
        "service_name": "echo"}}])).config
    assert grpc["health_checks"][0]["grpc_health_check"] == {"service_name": "echo", "authority": ""}
    from_mapping({"clusters": [tcp, {**grpc, "name": "g"}]})


def test_custom_health_checkers_and_a_second_health_check_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"health_checks\[0\].custom_health_check"):
        translate_cluster(_cluster(health_checks=[{"timeout": "1s", "interval": "1s", "custom_health_check": {
            "name": "x"}}]))
    hc = {"timeout": "1s", "interval": "1s", "tcp_health_check": {}}
    with pytest.raises(ConfigError, match="only one health check per cluster"):
        translate_cluster(_cluster(health_checks=[hc, hc]))


def test_connection_limits_come_from_the_cluster_or_its_http_protocol_options() -> None:
    out = translate_cluster(_cluster(max_requests_per_connection=100)).config
    assert out["max_requests_per_connection"] == 100
    out = translate_cluster(_cluster(typed_extension_protocol_options={H2: {
        "@type": "type.googleapis.com/" + H2,
        "common_http_protocol_options": {"idle_timeout": "30s", "max_connection_duration": "60s",
                                         "max_requests_per_connection": 10},
        "explicit_http_config": {"http_protocol_options": {}}}}), protocols=("http1", "http2")).config
    assert (out["idle_timeout_ms"], out["max_connection_duration_ms"], out["max_requests_per_connection"]) == \
        (30000, 60000, 10)
    assert "protocol" not in out  # explicitly HTTP/1
    with pytest.raises(ConfigError, match="max_stream_duration"):
        translate_cluster(_cluster(common_http_protocol_options={"max_stream_duration": "1s"}))


def test_eds_priorities_locality_weights_health_and_overprovisioning_reach_the_cluster() -> None:
    cla = json_format.ParseDict({"cluster_name": "web", "policy": {"overprovisioning_factor": 200}, "endpoints": [
        {"locality": {"zone": "a"}, "load_balancing_weight": 3, "lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}},
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 2}}},
             "health_status": "UNHEALTHY"}]},
        {"locality": {"zone": "b"}, "priority": 1, "lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 3}}}}]}]},
        endpoint_pb2.ClusterLoadAssignment())
    eps = translate_load_assignment(cla)
    assert eps == [{"address": "127.0.0.1:1", "labels": {"zone": "a"}, "locality_weight": 3},
                   {"address": "127.0.0.1:2", "labels": {"zone": "a"}, "locality_weight": 3,
                    "health_status": "unhealthy"},
                   {"address": "127.0.0.1:3", "labels": {"zone": "b"}, "priority": 1}]
    state = Translated(clusters={"web": TranslatedCluster({"name": "web", "endpoints": []}, eds="web")},
                       endpoints={"web": eps})
    (c,) = assemble(from_mapping({}), state, False).clusters
    assert c.overprovisioning_factor == 200 and [e.priority for e in c.endpoints] == [0, 0, 1]


def test_route_hash_policies_are_translated_and_cookie_generation_refused() -> None:
    rc = json_format.ParseDict({"name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"}, "route": {"cluster": "web", "hash_policy": [
            {"header": {"header_name": "x-user"}, "terminal": True}, {"cookie": {"name": "sid"}},
            {"connection_properties": {"source_ip": True}}, {"query_parameter": {"name": "u"}}]}}]}]},
        route_pb2.RouteConfiguration())
    (route,) = translate_route_configuration(rc)
    assert route["hash_policy"] == [{"header": {"header_name": "x-user"}, "terminal": True},
                                    {"cookie": {"name": "sid"}}, {"connection_properties": {"source_ip": True}},
                                    {"query_parameter": {"name": "u"}}]
    rc.virtual_hosts[0].routes[0].route.hash_policy[1].cookie.ttl.FromSeconds(60)
    with pytest.raises(ConfigError, match=r"hash_policy\[1\].cookie.ttl"):
        translate_route_configuration(rc)


def test_http_clusters_go_upstream_as_http1_unless_they_ask_for_http2_or_the_downstreams() -> None:
    both = ("http1", "http2")
    out = translate_cluster(_cluster(), protocols=both).config
    assert (out.get("protocol"), out.get("http_protocol")) == (None, "http1")  # Envoy: no HTTP/2 options
    out = translate_cluster(_cluster(http2_protocol_options={}), protocols=both).config
    assert (out.get("protocol"), out.get("http_protocol")) == ("http2", None)
    explicit_h2 = {"@type": "type.googleapis.com/" + H2, "explicit_http_config": {"http2_protocol_options": {}}}
    out = translate_cluster(_cluster(typed_extension_protocol_options={H2: explicit_h2}), protocols=both).config
    assert (out.get("protocol"), out.get("http_protocol")) == ("http2", None)
    downstream = {"@type": "type.googleapis.com/" + H2, "use_downstream_protocol_config": {}}
    out = translate_cluster(_cluster(typed_extension_protocol_options={H2: downstream}), protocols=both).config
    assert "protocol" not in out and "http_protocol" not in out
    explicit_h1 = {"@type": "type.googleapis.com/" + H2, "explicit_http_config": {"http_protocol_options": {}}}
    out = translate_cluster(_cluster(typed_extension_protocol_options={H2: explicit_h1}), protocols=both).config
    assert (out.get("protocol"), out.get("http_protocol")) == (None, "http1")
    config = from_mapping({"clusters": [{"name": "c", "http_protocol": "http2"}]})
    assert config.clusters[0].http_protocol == "http2"
    with pytest.raises(ConfigErrors, match="http_protocol"):
        from_mapping({"clusters": [{"name": "c", "http_protocol": "bolt"}]})
