"""Endpoint: one upstream address of a cluster, with the lock-free counters that the pool, the
balancer and outlier detection update per request. A value type below proxy and upstream."""

from __future__ import annotations

from sofamesh.core.config.model import EndpointConfig, parse_address


class Endpoint:
    __slots__ = ("active_rq", "address", "consecutive_5xx", "consecutive_failures", "consecutive_gateway_failure",
                 "consecutive_local_origin_failure", "cx_active", "eject_backoff", "ejected_until", "ejections",
                 "host", "labels", "port", "rq_errors", "rq_total", "unejected_at", "weight")

    def __init__(self, config: EndpointConfig) -> None:
        self.address = config.address
        self.host, self.port = parse_address(config.address)
        self.weight = config.weight
        self.labels = dict(config.labels)
        self.active_rq = 0
        self.rq_total = 0
        self.rq_errors = 0
        self.cx_active = 0
        # Outlier detection (core/upstream/outlier.py). ``consecutive_failures`` is nonzero while any
        # of the three counters is: the only field a successful response reads.
        self.consecutive_failures = 0
        self.consecutive_5xx = 0
        self.consecutive_gateway_failure = 0
        self.consecutive_local_origin_failure = 0
        self.ejected_until = 0.0  # loop time the ejection ends; 0.0 = not ejected
        self.ejections = 0  # times ejected, ever
        self.eject_backoff = 0  # Envoy's ejection time multiplier: +1 per ejection, -1 per quiet interval
        self.unejected_at = 0.0

    def snapshot(self, now: float) -> dict[str, object]:
        ejected = self.ejected_until > 0.0
        return {"address": self.address, "weight": self.weight, "labels": self.labels,
                "healthy": not ejected, "health_flags": "/failed_outlier_check" if ejected else "healthy",
                "failed_outlier_check": ejected,
                "ejected_for_ms": round(max(0.0, self.ejected_until - now) * 1000) if ejected else 0,
                "active_rq": self.active_rq, "rq_total": self.rq_total,
                "rq_error": self.rq_errors, "cx_active": self.cx_active,
                "consecutive_failures": self.consecutive_failures, "consecutive_5xx": self.consecutive_5xx,
                "consecutive_gateway_failure": self.consecutive_gateway_failure,
                "consecutive_local_origin_failure": self.consecutive_local_origin_failure,
                "ejections": self.ejections}


__all__ = ["Endpoint"]
