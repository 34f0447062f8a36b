"""Endpoint: one upstream address of a cluster, with the lock-free counters that the pool, the
balancer and outlier detection update per request. A value type below proxy and upstream."""

from __future__ import annotations

from sofamesh.core.config.model import EndpointConfig, parse_address


class Endpoint:
    __slots__ = ("active_rq", "address", "consecutive_failures", "cx_active", "ejected_until", "ejections",
                 "host", "labels", "port", "rq_errors", "rq_total", "weight")

    def __init__(self, config: EndpointConfig) -> None:
        self.address = config.address
        self.host, self.port = parse_address(config.address)
        self.weight = config.weight
        self.labels = dict(config.labels)
        self.active_rq = 0
        self.rq_total = 0
        self.rq_errors = 0
        self.cx_active = 0
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.ejections = 0

    def snapshot(self, now: float) -> dict[str, object]:
        return {"address": self.address, "weight": self.weight, "labels": self.labels,
                "healthy": self.ejected_until <= now, "active_rq": self.active_rq, "rq_total": self.rq_total,
                "rq_error": self.rq_errors, "cx_active": self.cx_active,
                "consecutive_failures": self.consecutive_failures, "ejections": self.ejections}


__all__ = ["Endpoint"]
