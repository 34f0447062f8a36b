"""Envoy's retry_policy, circuit_breakers, outlier_detection and panic threshold, fed as real
protobuf messages to the sidecar's translator: what the kernel gets, and the NACK texts."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401  (the Any type)
from google.protobuf import json_format

from sofamesh.core.config.loader import from_mapping
from sofamesh.core.errors import ConfigError
from sofamesh.core.xds.translate import translate_cluster, translate_route_configuration

PREVIOUS_HOSTS = {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}


def _cluster(**fields: object) -> cluster_pb2.Cluster:
    return json_format.ParseDict({"name": "web", "type": "STATIC", **fields}, cluster_pb2.Cluster())


def _routes(vhost: dict[str, object]) -> list[dict[str, object]]:
    rc = json_format.ParseDict({"name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"], **vhost}]},
                               route_pb2.RouteConfiguration())
    return translate_route_configuration(rc)


def test_circuit_breakers_outlier_detection_and_panic_threshold_are_translated() -> None:
    c = _cluster(
        circuit_breakers={"thresholds": [
            {"priority": "HIGH", "max_requests": 1},
            {"max_connections": 50, "max_pending_requests": 20, "max_requests": 10, "max_retries": 4,
             "retry_budget": {"budget_percent": {"value": 25.0}, "min_retry_concurrency": 2}}]},
        outlier_detection={"consecutive_5xx": 3, "consecutive_gateway_failure": 2, "interval": "2s",
                           "base_ejection_time": "15s", "max_ejection_time": "120s", "max_ejection_percent": 50,
                           "enforcing_consecutive_gateway_failure": 100, "enforcing_success_rate": 0,
                           "failure_percentage_threshold": 60, "enforcing_failure_percentage": 100,
                           "split_external_local_origin_errors": True, "consecutive_local_origin_failure": 4},
        common_lb_config={"healthy_panic_threshold": {"value": 30.0}})
    out = translate_cluster(c).config
    assert out["circuit_breakers"] == {"max_connections": 50, "max_pending_requests": 20, "max_requests": 10,
                                       "max_retries": 4,
                                       "retry_budget": {"budget_percent": 25.0, "min_retry_concurrency": 2}}
    assert out["outlier_detection"] == {
        "consecutive_5xx": 3, "consecutive_gateway_failure": 2, "consecutive_local_origin_failure": 4,
        "max_ejection_percent": 50, "enforcing_consecutive_gateway_failure": 100, "enforcing_success_rate": 0,
        "enforcing_failure_percentage": 100, "failure_percentage_threshold": 60, "interval_ms": 2000,
        "base_ejection_time_ms": 15000, "max_ejection_time_ms": 120000, "split_external_local_origin_errors": True}
    assert out["healthy_panic_threshold"] == 30.0
    (cluster,) = from_mapping({"clusters": [out]}).clusters  # and the kernel takes it as it is
    assert cluster.outlier_detection is not None and cluster.outlier_detection.success_rate_request_volume == 100


def test_a_route_retry_policy_keeps_envoys_fields_and_the_virtual_hosts_attempt_count_flag() -> None:
    (route,) = _routes({"include_request_attempt_count": True, "routes": [{
        "match": {"prefix": "/"}, "per_request_buffer_limit_bytes": 4096,
        "route": {"cluster": "web", "retry_policy": {
            "retry_on": "5xx,reset,retriable-status-codes,unavailable", "num_retries": 4, "per_try_timeout": "0.25s",
            "retriable_status_codes": [409, 429], "retry_host_predicate": [PREVIOUS_HOSTS],
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.2s"}}}}]})
    assert route["retry_policy"] == {
        "retry_on": ["5xx", "reset", "retriable-status-codes", "unavailable"], "num_retries": 4,
        "per_try_timeout_ms": 250, "retriable_status_codes": [409, 429], "previous_hosts": True,
        "retry_back_off": {"base_interval_ms": 10, "max_interval_ms": 200}, "include_attempt_count": True,
        "per_request_buffer_limit_bytes": 4096}


def test_a_virtual_host_retry_policy_applies_to_its_routes_without_one() -> None:
    own, inherited = _routes({"retry_policy": {"retry_on": "connect-failure"}, "routes": [
        {"match": {"prefix": "/a"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "gateway-error"}}},
        {"match": {"prefix": "/"}, "route": {"cluster": "b"}}]})
    assert own["retry_policy"]["retry_on"] == ["gateway-error"]
    assert inherited["retry_policy"] == {"retry_on": ["connect-failure"], "num_retries": 1, "previous_hosts": False,
                                         "include_attempt_count": False}


@pytest.mark.parametrize(("vhost", "message"), [
    ({"routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a", "retry_policy": {
        "retry_on": "5xx,envoy-ratelimited"}}}]},
     "RouteConfiguration 'r': virtual_hosts[0].routes[0].route.retry_policy.retry_on: retry condition "
     "'envoy-ratelimited' is not supported"),
    ({"routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a", "retry_policy": {
        "retry_on": "5xx", "retriable_headers": [{"name": "x-retry"}]}}}]},
     "RouteConfiguration 'r': virtual_hosts[0].routes[0].route.retry_policy.retriable_headers: is not supported"),
])
def test_retry_fields_the_kernel_cannot_apply_are_nacked_by_name(vhost: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _routes(vhost)
    assert str(refused.value).startswith(message)


def test_local_origin_success_rate_with_split_errors_is_nacked() -> None:
    with pytest.raises(ConfigError, match=r"outlier_detection\.enforcing_local_origin_success_rate"):
        translate_cluster(_cluster(outlier_detection={"split_external_local_origin_errors": True,
                                                      "enforcing_local_origin_success_rate": 100}))
