"""Envoy's ``http2_protocol_options`` settings and flood limits, from an ``http_connection_manager``,
a cluster and a cluster's ``HttpProtocolOptions``, fed as real protobuf messages: what the kernel
config gets, the codec built from it, and the NACK text for a value Envoy's validation rejects."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401  (the Any type)
from google.protobuf import json_format

from sofamesh.core.codec import Http2Options
from sofamesh.core.config.loader import from_mapping
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.upstream.pool import http2_options, upstream_limits
from sofamesh.core.xds.translate import translate_cluster, translate_listener
from tests.integration.xds.tiny_ads import http_listener, route_config

H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LIMITS = {
    "max_concurrent_streams": 7,
    "initial_stream_window_size": 100_000,
    "initial_connection_window_size": 1_048_576,
    "max_outbound_frames": 500,
    "max_outbound_control_frames": 50,
    "max_consecutive_inbound_frames_with_empty_payload": 0,
    "max_inbound_priority_frames_per_stream": 3,
    "max_inbound_window_update_frames_per_data_frame_sent": 4,
    "hpack_table_size": 0,
}


def _listener(options: dict[str, object]) -> object:
    listener = http_listener("in", "127.0.0.1:8080", routes=route_config("inline", [("/", "web")]))
    fc = listener.filter_chains[0].filters[0]
    hcm = hcm_pb2.HttpConnectionManager()
    fc.typed_config.Unpack(hcm)
    json_format.ParseDict({"http2_protocol_options": options}, hcm)
    fc.typed_config.Pack(hcm)
    return listener


def _cluster(**fields: object) -> cluster_pb2.Cluster:
    return json_format.ParseDict({"name": "web", "type": "STATIC", **fields}, cluster_pb2.Cluster())


def test_a_connection_managers_http2_options_reach_the_listeners_codec_limits() -> None:
    out = translate_listener(_listener({**LIMITS, "allow_metadata": False})).config
    assert out["http2_protocol_options"] == LIMITS
    config = from_mapping({"listeners": [out], "clusters": [{"name": "web"}]})
    assert http2_options(config.listeners[0].http2_protocol_options) == Http2Options(**LIMITS)
    assert "http2_protocol_options" not in translate_listener(_listener({})).config


@pytest.mark.parametrize("where", ["cluster", "explicit_http_config", "use_downstream_protocol_config", "auto_config"])
def test_a_clusters_http2_options_reach_its_upstream_codec_limits(where: str) -> None:
    if where == "cluster":
        c = _cluster(http2_protocol_options=LIMITS)
    else:
        c = _cluster(
            typed_extension_protocol_options={
                H2: {"@type": "type.googleapis.com/" + H2, where: {"http2_protocol_options": LIMITS}}
            }
        )
    out = translate_cluster(c, protocols=("http1", "http2")).config
    assert out["http2_protocol_options"] == LIMITS
    config = from_mapping({"clusters": [out]})
    assert upstream_limits(config.clusters[0]).http2 == Http2Options(**LIMITS)


def test_without_options_the_codec_keeps_its_defaults() -> None:
    out = translate_cluster(_cluster(http2_protocol_options={}), protocols=("http1", "http2")).config
    assert "http2_protocol_options" not in out
    config = from_mapping({"clusters": [out]})
    assert upstream_limits(config.clusters[0]).http2 == Http2Options()
    assert Http2Options() == Http2Options(1024, 256 * 1024, 16 * 1024 * 1024, 10_000, 1000, 1, 100, 10, 4096, (), False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent_streams", 0),
        ("initial_stream_window_size", 65_534),
        ("initial_connection_window_size", 2**31),
        ("max_outbound_frames", 0),
        ("max_outbound_control_frames", 0),
        ("max_inbound_window_update_frames_per_data_frame_sent", 0),
    ],
)
def test_a_value_envoy_rejects_is_nacked_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=rf"http2_protocol_options\.{field}: {value} is out of range"):
        translate_listener(_listener({field: value}))
    with pytest.raises(ConfigError, match=rf"Cluster 'web': http2_protocol_options\.{field}: {value} is out"):
        translate_cluster(_cluster(http2_protocol_options={field: value}))
    with pytest.raises(ConfigErrors, match=rf"listeners\[0\]\.http2_protocol_options\.{field}"):
        from_mapping({"listeners": [{"address": "127.0.0.1:1", "http2_protocol_options": {field: value}}]})
    with pytest.raises(ConfigErrors, match=rf"clusters\[0\]\.http2_protocol_options\.{field}"):
        from_mapping({"clusters": [{"name": "c", "http2_protocol_options": {field: value}}]})


def test_an_unknown_field_in_the_yaml_is_named() -> None:
    with pytest.raises(ConfigErrors, match=r"listeners\[0\]\.http2_protocol_options\.max_streams"):
        from_mapping({"listeners": [{"address": "127.0.0.1:1", "http2_protocol_options": {"max_streams": 5}}]})


def test_a_connection_managers_keepalive_is_the_listeners_connection_keepalive() -> None:
    out = translate_listener(_listener({"connection_keepalive": {"interval": "30s", "timeout": "5s"}})).config
    assert out["connection_keepalive"] == {"interval_ms": 30000, "timeout_ms": 5000}
    assert "http2_protocol_options" not in out
    config = from_mapping({"listeners": [out], "clusters": [{"name": "web"}]})
    keepalive = config.listeners[0].connection_keepalive
    assert keepalive is not None and (keepalive.interval_ms, keepalive.timeout_ms) == (30000, 5000)
    assert keepalive.interval_jitter_percent == 15.0  # Envoy's default when interval_jitter is unset
    jittered = _listener({"connection_keepalive": {"interval": "2s", "timeout": "1s", "interval_jitter": {"value": 40}}})
    assert translate_listener(jittered).config["connection_keepalive"] == {
        "interval_ms": 2000, "timeout_ms": 1000, "interval_jitter_percent": 40.0}
    # Envoy sends no PING on an idle connection without an interval
    idle_only = _listener({"connection_keepalive": {"timeout": "5s", "connection_idle_interval": "10s"}})
    assert "connection_keepalive" not in translate_listener(idle_only).config
    with pytest.raises(ConfigError, match=r"connection_keepalive\.timeout: must be at least 1ms"):
        translate_listener(_listener({"connection_keepalive": {"interval": "30s"}}))


def test_a_clusters_keepalive_reaches_its_upstream_connections() -> None:
    ka = {"interval": "3s", "timeout": "1s", "interval_jitter": {"value": 0}, "connection_idle_interval": "0.5s"}
    out = translate_cluster(_cluster(http2_protocol_options={"connection_keepalive": ka}), protocols=("http2",)).config
    assert out["connection_keepalive"] == {"interval_ms": 3000, "timeout_ms": 1000, "interval_jitter_percent": 0.0,
                                           "connection_idle_interval_ms": 500}
    keepalive = from_mapping({"clusters": [out]}).clusters[0].connection_keepalive
    assert keepalive is not None and keepalive.connection_idle_interval_ms == 500
    # connection_idle_interval alone: pings ahead of requests only
    c = _cluster(typed_extension_protocol_options={H2: {"@type": "type.googleapis.com/" + H2, "explicit_http_config": {
        "http2_protocol_options": {"connection_keepalive": {"timeout": "1s", "connection_idle_interval": "2s"}}}}})
    out = translate_cluster(c, protocols=("http2",)).config
    assert out["connection_keepalive"] == {"interval_ms": 0, "timeout_ms": 1000, "connection_idle_interval_ms": 2000}
    assert "connection_keepalive" not in translate_cluster(_cluster(http2_protocol_options={})).config


def test_custom_settings_go_out_as_given_or_as_the_named_field_they_stand_for() -> None:
    custom = [{"identifier": 0x9, "value": 1}, {"identifier": 0xF0F0, "value": 7}, {"identifier": 0x3, "value": 50},
              {"identifier": 0x9, "value": 1}]  # the same pair twice is one (Envoy)
    out = translate_listener(_listener({"custom_settings_parameters": custom})).config["http2_protocol_options"]
    assert out == {"max_concurrent_streams": 50,
                   "custom_settings_parameters": [{"identifier": 0x9, "value": 1}, {"identifier": 0xF0F0, "value": 7}]}
    options = http2_options(from_mapping({"listeners": [out and {"address": "127.0.0.1:1", "http2_protocol_options": out}],
                                          "clusters": []}).listeners[0].http2_protocol_options)
    assert (options.max_concurrent_streams, options.custom_settings) == (50, ((0x9, 1), (0xF0F0, 7)))
    yaml = from_mapping({"clusters": [{"name": "c", "http2_protocol_options": {"custom_settings_parameters": [
        {"identifier": 0x1, "value": 0}, {"identifier": 0x5, "value": 32768}]}}]}).clusters[0]
    assert upstream_limits(yaml).http2.hpack_table_size == 0
    assert upstream_limits(yaml).http2.custom_settings == ((0x5, 32768),)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_concurrent_streams": 5, "custom_settings_parameters": [{"identifier": 3, "value": 5}]},
         "identifier 0x3 is also the named field max_concurrent_streams"),
        ({"hpack_table_size": 0, "custom_settings_parameters": [{"identifier": 1, "value": 8}]},
         "identifier 0x1 is also the named field hpack_table_size"),
        ({"custom_settings_parameters": [{"identifier": 9, "value": 1}, {"identifier": 9, "value": 0}]},
         "identifier 0x9 is given twice with different values"),
        ({"custom_settings_parameters": [{"identifier": 2, "value": 1}]}, "server push is not supported"),
        ({"custom_settings_parameters": [{"identifier": 8, "value": 1}]}, "set only through allow_connect"),
        ({"custom_settings_parameters": [{"identifier": 6, "value": 100}]}, "0x6 .* is not supported"),
        ({"custom_settings_parameters": [{"identifier": 5, "value": 100}]}, "out of range 16384..16777215"),
        ({"custom_settings_parameters": [{"identifier": 4, "value": 100}]},
         r"0x4 \(initial_stream_window_size\): 100 is out of range"),
    ],
)
def test_custom_settings_envoy_refuses_are_refused_naming_the_identifier(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"http2_protocol_options\.custom_settings_parameters: .*{message}"):
        translate_listener(_listener(options))
    with pytest.raises(ConfigError, match=rf"Cluster 'web': http2_protocol_options\.custom_settings_parameters: .*{message}"):
        translate_cluster(_cluster(http2_protocol_options=options))
    with pytest.raises(ConfigErrors, match=rf"clusters\[0\]\.http2_protocol_options.*custom_settings_parameters: .*{message}"):
        from_mapping({"clusters": [{"name": "c", "http2_protocol_options": options}]})


def test_allow_metadata_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"http2_protocol_options\.allow_metadata: METADATA frames are not supported"):
        translate_listener(_listener({"allow_metadata": True}))
    with pytest.raises(ConfigError, match=r"Cluster 'web': http2_protocol_options\.allow_metadata"):
        translate_cluster(_cluster(http2_protocol_options={"allow_metadata": True}))


def test_allow_connect_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"http2_protocol_options\.allow_connect: RFC 8441 extended CONNECT is not"):
        translate_listener(_listener({"allow_connect": True}))
    with pytest.raises(ConfigError, match=r"Cluster 'web': http2_protocol_options\.allow_connect"):
        translate_cluster(_cluster(http2_protocol_options={"allow_connect": True}))
    with pytest.raises(ConfigErrors, match=r"listeners\[0\]\.http2_protocol_options\.allow_connect.*not supported"):
        from_mapping({"listeners": [{"address": "127.0.0.1:1", "http2_protocol_options": {"allow_connect": True}}]})


def _hcm_listener(hcm_fields: dict[str, object]) -> object:
    listener = http_listener("in", "127.0.0.1:8080", routes=route_config("inline", [("/", "web")]))
    fc = listener.filter_chains[0].filters[0]
    hcm = hcm_pb2.HttpConnectionManager()
    fc.typed_config.Unpack(hcm)
    json_format.ParseDict(hcm_fields, hcm)
    fc.typed_config.Pack(hcm)
    return listener


@pytest.mark.parametrize(
    ("hcm", "h2", "stream_error"),
    [
        (None, {}, False),  # Envoy's default: the connection ends
        (None, {"stream_error_on_invalid_http_messaging": True}, True),  # the deprecated field
        (True, {"stream_error_on_invalid_http_messaging": False}, True),  # the HCM's outranks it
        (True, {}, True),
        (True, {"override_stream_error_on_invalid_http_message": False}, False),  # the override outranks both
        (False, {"stream_error_on_invalid_http_messaging": True}, False),
        (None, {"override_stream_error_on_invalid_http_message": True}, True),
    ],
)
def test_the_answer_to_an_invalid_message_follows_envoys_order(
    hcm: bool | None, h2: dict[str, object], stream_error: bool
) -> None:
    fields: dict[str, object] = {"http2_protocol_options": h2}
    if hcm is not None:
        fields["stream_error_on_invalid_http_message"] = hcm
    out = translate_listener(_hcm_listener(fields)).config
    config = from_mapping({"listeners": [out], "clusters": [{"name": "web"}]})
    assert http2_options(config.listeners[0].http2_protocol_options).stream_error_on_invalid_http_message is stream_error
    if hcm is None:  # a cluster has no connection manager: the same order without it
        cluster = translate_cluster(_cluster(http2_protocol_options=h2), protocols=("http2",)).config
        limits = upstream_limits(from_mapping({"clusters": [cluster]}).clusters[0]).http2
        assert limits.stream_error_on_invalid_http_message is stream_error


def test_a_listener_refuses_connection_idle_interval_which_only_requests_going_upstream_use() -> None:
    ka = {"interval_ms": 1000, "connection_idle_interval_ms": 500}
    with pytest.raises(ConfigErrors, match=r"listeners\[0\]\.connection_keepalive: .*applies to clusters"):
        from_mapping({"listeners": [{"address": "127.0.0.1:1", "connection_keepalive": ka}]})
    from_mapping({"clusters": [{"name": "c", "connection_keepalive": ka}]})
