"""Counters as plain integers on slotted objects. Read (never locked) by the admin server at export."""

from __future__ import annotations

from typing import Final

LATENCY_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def bucket_of(ms: float) -> int:
    """The index of ``ms`` among ``LATENCY_BUCKETS_MS`` (the first bound >= ``ms``; the last index,
    +Inf, past them): what ``bisect_left(LATENCY_BUCKETS_MS, ms)`` gives, as a few comparisons of
    literal floats (the compiled build compares them unboxed; a call to ``bisect_left`` was 4 % of a
    proxied Bolt request). A stream looks it up once for all the histograms it records in."""
    if ms <= 10.0:
        if ms <= 1.0:
            return 0 if ms <= 0.5 else 1
        if ms <= 2.5:
            return 2
        return 3 if ms <= 5.0 else 4
    if ms <= 250.0:
        if ms <= 25.0:
            return 5
        if ms <= 50.0:
            return 6
        return 7 if ms <= 100.0 else 8
    if ms <= 1000.0:
        return 9 if ms <= 500.0 else 10
    if ms <= 5000.0:
        return 11 if ms <= 2500.0 else 12
    if ms <= 10000.0:
        return 13
    return 14 if ms <= 30000.0 else 15


class Histogram:
    """Cumulative-at-export latency histogram (milliseconds)."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.count = 0
        self.sum = 0.0

    def record(self, ms: float) -> None:
        self.buckets[bucket_of(ms)] += 1
        self.count += 1
        self.sum += ms

    def record_in(self, bucket: int, ms: float) -> None:
        """``record(ms)`` when ``bucket_of(ms)`` is known already."""
        self.buckets[bucket] += 1
        self.count += 1
        self.sum += ms

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0..1); 0 when empty."""
        return buckets_quantile(self.buckets, q)

    def snapshot(self) -> dict[str, object]:
        return {"count": self.count, "sum_ms": round(self.sum, 3), "buckets": list(self.buckets),
                "p50_ms": self.quantile(0.5), "p99_ms": self.quantile(0.99)}


# The counter names, outside the classes: the compiled build (mypyc, setup.py) keeps no __slots__
# on its classes, so the loops below read these.
_LISTENER_COUNTERS: Final = (
    "downstream_cx_active",
    "downstream_cx_destroy_with_active_rq",
    "downstream_cx_idle_timeout",
    "downstream_cx_keepalive_timeout",
    "downstream_cx_max_duration_reached",
    "downstream_cx_overflow",
    "downstream_cx_overload_disable_keepalive",
    "downstream_cx_overload_reject",
    "downstream_cx_protocol_error",
    "downstream_cx_sniff_fail",
    "downstream_cx_total",
    "downstream_global_cx_overflow",
    "downstream_heartbeat",
    "downstream_rq_1xx",
    "downstream_rq_2xx",
    "downstream_rq_3xx",
    "downstream_rq_4xx",
    "downstream_rq_5xx",
    "downstream_rq_active",
    "downstream_rq_body_timeout",
    "downstream_rq_drained_cut",
    "downstream_rq_header_timeout",
    "downstream_rq_idle_timeout",
    "downstream_rq_local_reply",
    "downstream_rq_no_route",
    "downstream_rq_overload_reset",
    "downstream_rq_overload_shed",
    "downstream_rq_timeout",
    "downstream_rq_total",
)


class ListenerStats:
    __slots__ = (*_LISTENER_COUNTERS, "latency")
    downstream_cx_active: int
    downstream_cx_destroy_with_active_rq: int
    downstream_cx_idle_timeout: int
    downstream_cx_keepalive_timeout: int
    downstream_cx_max_duration_reached: int
    downstream_cx_overflow: int
    downstream_cx_overload_disable_keepalive: int
    downstream_cx_overload_reject: int
    downstream_cx_protocol_error: int
    downstream_cx_sniff_fail: int
    downstream_cx_total: int
    downstream_global_cx_overflow: int
    downstream_heartbeat: int
    downstream_rq_1xx: int
    downstream_rq_2xx: int
    downstream_rq_3xx: int
    downstream_rq_4xx: int
    downstream_rq_5xx: int
    downstream_rq_active: int
    downstream_rq_body_timeout: int
    downstream_rq_drained_cut: int
    downstream_rq_header_timeout: int
    downstream_rq_idle_timeout: int
    downstream_rq_local_reply: int
    downstream_rq_no_route: int
    downstream_rq_overload_reset: int
    downstream_rq_overload_shed: int
    downstream_rq_timeout: int
    downstream_rq_total: int
    latency: Histogram

    def __init__(self) -> None:
        for name in _LISTENER_COUNTERS:
            setattr(self, name, 0)
        self.latency = Histogram()

    def record_status(self, http_status: int) -> None:
        c = http_status // 100
        if c == 2:
            self.downstream_rq_2xx += 1
        elif c == 5:
            self.downstream_rq_5xx += 1
        elif c == 4:
            self.downstream_rq_4xx += 1
        elif c == 3:
            self.downstream_rq_3xx += 1
        else:
            self.downstream_rq_1xx += 1

    def snapshot(self) -> dict[str, object]:
        out: dict[str, object] = {n: getattr(self, n) for n in _LISTENER_COUNTERS}
        out["latency"] = self.latency.snapshot()
        return out


_CLUSTER_COUNTERS: Final = (
    "outlier_detection_ejections_active",
    "outlier_detection_ejections_detected_total",
    "outlier_detection_ejections_enforced_consecutive_5xx",
    "outlier_detection_ejections_enforced_consecutive_gateway_failure",
    "outlier_detection_ejections_enforced_consecutive_local_origin_failure",
    "outlier_detection_ejections_enforced_failure_percentage",
    "outlier_detection_ejections_enforced_success_rate",
    "outlier_detection_ejections_enforced_total",
    "outlier_detection_ejections_overflow",
    "health_check_attempt",
    "health_check_failure",
    "health_check_network_failure",
    "health_check_success",
    "retry_or_shadow_abandoned",
    "upstream_cx_active",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_destroy_with_active_rq",
    "upstream_cx_idle_timeout",
    "upstream_cx_max_duration_reached",
    "upstream_cx_max_requests",
    "upstream_cx_overflow",
    "upstream_cx_protocol_error",
    "upstream_cx_total",
    "upstream_heartbeat_failed",
    "upstream_heartbeat_sent",
    "upstream_rq_2xx",
    "upstream_rq_3xx",
    "upstream_rq_4xx",
    "upstream_rq_5xx",
    "upstream_rq_active",
    "upstream_rq_active_overflow",
    "upstream_rq_late_response",
    "upstream_rq_oneway",
    "upstream_rq_pending_active",
    "upstream_rq_pending_overflow",
    "upstream_rq_per_try_timeout",
    "upstream_rq_reset",
    "upstream_rq_retry",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_success",
    "upstream_rq_timeout",
    "upstream_rq_total",
)


class ClusterStats:
    """Envoy's cluster counters, and ``upstream_rq_time``: Envoy's per-cluster histogram of the time
    (ms) from the request's start to the end of the upstream's response, one sample per request the
    upstream answered to the end (not local replies, resets or timeouts). Only bucket counts are kept
    (``LATENCY_BUCKETS_MS`` bounds, the last one +Inf): recording is one bucket index and one
    increment on the request path; the count is their sum at export."""

    __slots__ = (*_CLUSTER_COUNTERS, "upstream_rq_time")
    outlier_detection_ejections_active: int
    outlier_detection_ejections_detected_total: int
    outlier_detection_ejections_enforced_consecutive_5xx: int
    outlier_detection_ejections_enforced_consecutive_gateway_failure: int
    outlier_detection_ejections_enforced_consecutive_local_origin_failure: int
    outlier_detection_ejections_enforced_failure_percentage: int
    outlier_detection_ejections_enforced_success_rate: int
    outlier_detection_ejections_enforced_total: int
    outlier_detection_ejections_overflow: int
    health_check_attempt: int
    health_check_failure: int
    health_check_network_failure: int
    health_check_success: int
    retry_or_shadow_abandoned: int
    upstream_cx_active: int
    upstream_cx_connect_fail: int
    upstream_cx_connect_timeout: int
    upstream_cx_destroy_with_active_rq: int
    upstream_cx_idle_timeout: int
    upstream_cx_max_duration_reached: int
    upstream_cx_max_requests: int
    upstream_cx_overflow: int
    upstream_cx_protocol_error: int
    upstream_cx_total: int
    upstream_heartbeat_failed: int
    upstream_heartbeat_sent: int
    upstream_rq_2xx: int
    upstream_rq_3xx: int
    upstream_rq_4xx: int
    upstream_rq_5xx: int
    upstream_rq_active: int
    upstream_rq_active_overflow: int
    upstream_rq_late_response: int
    upstream_rq_oneway: int
    upstream_rq_pending_active: int
    upstream_rq_pending_overflow: int
    upstream_rq_per_try_timeout: int
    upstream_rq_reset: int
    upstream_rq_retry: int
    upstream_rq_retry_limit_exceeded: int
    upstream_rq_retry_overflow: int
    upstream_rq_retry_success: int
    upstream_rq_timeout: int
    upstream_rq_total: int
    upstream_rq_time: list[int]

    def __init__(self) -> None:
        for name in _CLUSTER_COUNTERS:
            setattr(self, name, 0)
        self.upstream_rq_time = [0] * (len(LATENCY_BUCKETS_MS) + 1)

    def record_status(self, http_status: int) -> None:
        c = http_status // 100
        if c == 2:
            self.upstream_rq_2xx += 1
        elif c == 5:
            self.upstream_rq_5xx += 1
        elif c == 4:
            self.upstream_rq_4xx += 1
        else:
            self.upstream_rq_3xx += 1

    def snapshot(self) -> dict[str, object]:
        out: dict[str, object] = {n: getattr(self, n) for n in _CLUSTER_COUNTERS}
        out["upstream_rq_time"] = buckets_snapshot(self.upstream_rq_time)
        return out


def buckets_quantile(buckets: list[int], q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` (0..1) of bucket counts; 0 when empty."""
    count = sum(buckets)
    if not count:
        return 0.0
    rank = q * count
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank and n:
            return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else float("inf")
    return float("inf")


def buckets_snapshot(buckets: list[int]) -> dict[str, object]:
    return {"count": sum(buckets), "buckets": list(buckets),
            "p50_ms": buckets_quantile(buckets, 0.5), "p99_ms": buckets_quantile(buckets, 0.99)}


class RpcStats:
    """Per (protocol, service, method): requests, responses by native status, timeouts, latency."""

    __slots__ = ("latency", "requests", "statuses", "timeouts")

    def __init__(self) -> None:
        self.requests = 0
        self.timeouts = 0
        self.statuses: dict[int, int] = {}
        self.latency = Histogram()

    def snapshot(self) -> dict[str, object]:
        return {"requests": self.requests, "timeouts": self.timeouts,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "latency": self.latency.snapshot()}


__all__ = ["LATENCY_BUCKETS_MS", "ClusterStats", "Histogram", "ListenerStats", "RpcStats", "bucket_of",
           "buckets_quantile", "buckets_snapshot"]
