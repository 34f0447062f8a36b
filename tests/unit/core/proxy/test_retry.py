"""Retry policies: Envoy's back-off, which failures each condition retries, the replay buffer."""

from __future__ import annotations

import pytest

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.config.model import RetryPolicyConfig
from sofamesh.core.errors import ConfigErrors
from sofamesh.core.events import RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.retry import RetryPolicy, RetryState, with_attempt_count
from sofamesh.core.upstream.circuit_breaker import CircuitBreaker
from sofamesh.plugins.protocols.bolt import BoltCodec
from sofamesh.plugins.protocols.dubbo import DubboCodec
from sofamesh.plugins.protocols.http1.codec import Http1Codec
from sofamesh.plugins.protocols.http2.codec import Http2Codec


def _policy(**cfg: object) -> RetryPolicy:
    return RetryPolicy(RetryPolicyConfig(**cfg))  # type: ignore[arg-type]


def test_back_off_is_jittered_below_base_times_two_to_the_retry_and_capped() -> None:
    p = _policy(retry_on="5xx")
    for retry, ceiling in ((1, 0.025), (2, 0.05), (3, 0.1), (4, 0.2), (5, 0.25), (9, 0.25)):
        waits = [p.backoff(retry) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) < ceiling + 1e-9


@pytest.mark.parametrize(("retry_on", "status", "retried"), [
    ("5xx", 500, True), ("5xx", 404, False), ("gateway-error", 500, False), ("gateway-error", 503, True),
    ("retriable-4xx", 409, True), ("retriable-4xx", 400, False),
])
def test_http_conditions_retry_the_statuses_envoy_does(retry_on: str, status: int, retried: bool) -> None:
    head = ResponseHead("http1", status=status, http_status=status)
    assert _policy(retry_on=retry_on).on_response(head, Http1Codec(Role.CLIENT, CodecLimits())) is retried


def test_an_overloaded_upstream_is_never_retried() -> None:
    head = ResponseHead("http1", status=503, http_status=503, headers=Headers([("x-envoy-overloaded", "true")]))
    assert not _policy(retry_on="5xx").on_response(head, Http1Codec(Role.CLIENT, CodecLimits()))


def test_retriable_status_codes_and_grpc_codes_in_a_trailers_only_answer() -> None:
    codec = Http2Codec(Role.CLIENT, CodecLimits())
    p = _policy(retry_on="retriable-status-codes,unavailable", retriable_status_codes=[418])
    assert p.on_response(ResponseHead("http2", status=418, http_status=418), codec)
    unavailable = ResponseHead("http2", status=200, http_status=503, headers=Headers([("grpc-status", "14")]))
    assert p.on_response(unavailable, codec)
    internal = ResponseHead("http2", status=200, http_status=500, headers=Headers([("grpc-status", "13")]))
    assert not p.on_response(internal, codec)


@pytest.mark.parametrize(("codec", "status", "retried"), [
    (BoltCodec, 0x04, True), (BoltCodec, 0x07, True), (BoltCodec, 0x10, True), (BoltCodec, 0x02, False),
    (DubboCodec, 30, True), (DubboCodec, 60, True), (DubboCodec, 100, True), (DubboCodec, 70, False),
])
def test_rpc_statuses_the_codec_marks_retriable(codec: type, status: int, retried: bool) -> None:
    c = codec(Role.CLIENT, CodecLimits())
    head = ResponseHead(c.__class__.__name__, status=status, http_status=c.map_status(status))
    assert _policy(retry_on="retriable").on_response(head, c) is retried


def test_resets_connect_failures_and_timeouts_follow_envoys_conditions() -> None:
    assert _policy(retry_on="reset").on_connect_failure() and _policy(retry_on="5xx").on_timeout()
    assert not _policy(retry_on="refused-stream").on_reset(refused=False)
    assert _policy(retry_on="refused-stream").on_reset(refused=True)
    assert not _policy(retry_on="connect-failure").on_reset(refused=False)


def test_the_replay_buffer_stops_at_its_limit_and_a_replayed_body_is_not_acknowledged_twice() -> None:
    rs = RetryState(_policy(retry_on="5xx", per_request_buffer_limit_bytes=10))
    rs.keep(b"12345")
    assert rs.to_acknowledge(5) == 5
    rs.sent = 0  # the next try replays the same 5 bytes
    assert rs.to_acknowledge(5) == 0 and rs.to_acknowledge(3) == 3
    rs.keep(b"123456")
    assert rs.overflowed and rs.body == []


def test_the_attempt_count_header_replaces_an_earlier_one() -> None:
    head = RequestHead("http1", headers=Headers([("x-envoy-attempt-count", "1"), ("a", "b")]))
    assert list(with_attempt_count(head, 2).headers) == [("a", "b"), ("x-envoy-attempt-count", "2")]


def test_an_unknown_condition_is_refused_by_name() -> None:
    from sofamesh.core.config.loader import from_mapping

    with pytest.raises(ConfigErrors, match="unknown retry_on condition 'sometimes'"):
        from_mapping({"listeners": [{"address": "127.0.0.1:1", "routes": [
            {"cluster": "c", "retry_policy": {"retry_on": "5xx,sometimes"}}]}], "clusters": [{"name": "c"}]})


def test_a_retry_budget_allows_a_share_of_active_requests_never_under_the_minimum() -> None:
    from sofamesh.core.config.model import CircuitBreakersConfig

    cb = CircuitBreaker(CircuitBreakersConfig(retry_budget={"budget_percent": 20, "min_retry_concurrency": 3}))  # type: ignore[arg-type]
    assert cb.retry_limit(5) == 3 and cb.retry_limit(100) == 20
    assert all(cb.take_retry(5) for _ in range(3)) and not cb.take_retry(5)
