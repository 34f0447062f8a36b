"""Endpoint: one upstream address of a cluster, with the lock-free counters that the pool, the
balancer, outlier detection and active health checks update. A value type below proxy and upstream."""

from __future__ import annotations

from typing import Final

from sofamesh.core.config.model import EndpointConfig, parse_address

# ``Endpoint.down`` bits: why an endpoint is out of balancing besides an outlier ejection.
FAILED_ACTIVE_HC: Final = 1  # an active health check failed it (core/upstream/health_check.py)
FAILED_EDS_HEALTH: Final = 2  # EDS (or the config) says unhealthy, draining or timeout
PENDING_ACTIVE_HC: Final = 4  # not health checked yet: failed until the first check passes, as in Envoy
ACTIVE_HC_TIMEOUT: Final = 8  # the last active check timed out (shown, not used for balancing)
DEGRADED_EDS_HEALTH: Final = 16  # EDS says degraded: used only when healthy endpoints are not enough
EDS_HEALTH: Final = FAILED_EDS_HEALTH | DEGRADED_EDS_HEALTH  # what an EDS update sets
_EDS_FAILED: Final = frozenset(("unhealthy", "draining", "timeout"))


class Endpoint:
    __slots__ = ("active_rq", "address", "consecutive_5xx", "consecutive_failures", "consecutive_gateway_failure",
                 "consecutive_local_origin_failure", "cx_active", "down", "eject_backoff", "ejected_until", "ejections",
                 "host", "labels", "locality", "locality_weight", "port", "priority", "rq_errors", "rq_total",
                 "slow_start_since", "unejected_at", "weight")

    def __init__(self, config: EndpointConfig) -> None:
        self.address = config.address
        self.host, self.port = parse_address(config.address)
        self.weight = config.weight
        self.labels = dict(config.labels)
        self.priority = config.priority
        self.locality = (self.labels.get("region", ""), self.labels.get("zone", ""), self.labels.get("sub_zone", ""))
        self.locality_weight = config.locality_weight
        self.down = FAILED_EDS_HEALTH if config.health_status in _EDS_FAILED else \
            DEGRADED_EDS_HEALTH if config.health_status == "degraded" else 0
        self.slow_start_since = 0.0  # loop time it entered slow start (added by an update, or healthy again)
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

    @property
    def healthy(self) -> bool:
        """Not ejected, not failed by an active health check or by EDS, not degraded."""
        return not self.ejected_until and not self.down & (FAILED_ACTIVE_HC | FAILED_EDS_HEALTH | DEGRADED_EDS_HEALTH)

    @property
    def degraded(self) -> bool:
        """Degraded by EDS and otherwise healthy: Envoy's degraded tier."""
        return not self.ejected_until and self.down & (FAILED_ACTIVE_HC | FAILED_EDS_HEALTH | DEGRADED_EDS_HEALTH) \
            == DEGRADED_EDS_HEALTH

    def health_flags(self) -> str:
        """Envoy's ``health_flags`` text for this endpoint (``/clusters``): ``healthy`` or the
        reasons it is not, in Envoy's order."""
        d = self.down
        out = ""
        if d & FAILED_ACTIVE_HC:
            out += "/failed_active_hc"
        if self.ejected_until:
            out += "/failed_outlier_check"
        if d & FAILED_EDS_HEALTH:
            out += "/failed_eds_health"
        if d & DEGRADED_EDS_HEALTH:
            out += "/degraded_eds_health"
        if d & PENDING_ACTIVE_HC:
            out += "/pending_active_hc"
        if d & ACTIVE_HC_TIMEOUT and d & FAILED_ACTIVE_HC:
            out += "/active_hc_timeout"
        return out or "healthy"

    def snapshot(self, now: float) -> dict[str, object]:
        ejected = self.ejected_until > 0.0
        return {"address": self.address, "weight": self.weight, "labels": self.labels, "priority": self.priority,
                "locality_weight": self.locality_weight,
                "healthy": self.healthy, "health_flags": self.health_flags(),
                "failed_outlier_check": ejected, "failed_active_hc": bool(self.down & FAILED_ACTIVE_HC),
                "failed_eds_health": bool(self.down & FAILED_EDS_HEALTH),
                "ejected_for_ms": round(max(0.0, self.ejected_until - now) * 1000) if ejected else 0,
                "active_rq": self.active_rq, "rq_total": self.rq_total,
                "rq_error": self.rq_errors, "cx_active": self.cx_active,
                "consecutive_failures": self.consecutive_failures, "consecutive_5xx": self.consecutive_5xx,
                "consecutive_gateway_failure": self.consecutive_gateway_failure,
                "consecutive_local_origin_failure": self.consecutive_local_origin_failure,
                "ejections": self.ejections}


__all__ = ["ACTIVE_HC_TIMEOUT", "DEGRADED_EDS_HEALTH", "EDS_HEALTH", "FAILED_ACTIVE_HC", "FAILED_EDS_HEALTH",
           "PENDING_ACTIVE_HC", "Endpoint"]
