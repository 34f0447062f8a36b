"""Circuit breakers: a cluster's limits on connections, pending requests, requests and retries,
Envoy's thresholds at the default priority, and the retry budget.

Counters only, no timers and no I/O: the pool asks before it opens a connection or queues a
request, the stream before it sends or retries one, and each gives back what it took. A cluster
without ``circuit_breakers`` gets Envoy's default thresholds (1024 / 1024 / 1024 / 3), as in Envoy.
"""

from __future__ import annotations

from sofamesh.core.config.model import CircuitBreakersConfig


class CircuitBreaker:
    """One cluster's thresholds and what is in use of each."""

    __slots__ = ("budget_min", "budget_percent", "connections", "max_connections", "max_pending_requests",
                 "max_requests", "max_retries", "pending", "retries")

    def __init__(self, config: CircuitBreakersConfig | None = None) -> None:
        c = config or CircuitBreakersConfig()
        self.max_connections = c.max_connections
        self.max_pending_requests = c.max_pending_requests
        self.max_requests = c.max_requests
        self.max_retries = c.max_retries
        budget = c.retry_budget
        self.budget_percent: float | None = budget.budget_percent if budget is not None else None
        self.budget_min = budget.min_retry_concurrency if budget is not None else 0
        self.connections = 0  # upstream connections open or opening
        self.pending = 0  # requests waiting for a connection
        self.retries = 0  # retries decided and not yet settled (Envoy: until the next decision or the end)

    def retry_limit(self, active_requests: int) -> int:
        """How many retries may be outstanding at once: ``max_retries``, or with a retry budget
        ``budget_percent`` of the active and pending requests, never under ``min_retry_concurrency``."""
        if self.budget_percent is None:
            return self.max_retries
        return max(self.budget_min, int(self.budget_percent * (active_requests + self.pending) / 100.0))

    def take_retry(self, active_requests: int) -> bool:
        """Count one more outstanding retry if the limit allows; False means overflow."""
        if self.retries >= self.retry_limit(active_requests):
            return False
        self.retries += 1
        return True

    def release_retry(self) -> None:
        self.retries -= 1

    def snapshot(self) -> dict[str, object]:
        return {"max_connections": self.max_connections, "max_pending_requests": self.max_pending_requests,
                "max_requests": self.max_requests, "max_retries": self.max_retries,
                "budget_percent": self.budget_percent, "min_retry_concurrency": self.budget_min,
                "connections": self.connections, "pending": self.pending, "retries": self.retries}


__all__ = ["CircuitBreaker"]
