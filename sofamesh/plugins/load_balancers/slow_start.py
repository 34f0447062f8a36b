"""Slow start, as Envoy's ``slow_start_config`` for round robin and least request: an endpoint that
joined (an update added it, or it passed its health check again) gets a weight that grows over
``slow_start_window_ms``: ``weight x max(min_weight_percent / 100, time_factor ^ (1 / aggression))``
with ``time_factor = max(seconds since it joined, 1) / window seconds``. Endpoints present when the
cluster was built do not start slow."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from sofamesh.core.endpoint import Endpoint


class SlowStartConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slow_start_window_ms: Annotated[int, Field(ge=0)] = 0  # 0 = off
    aggression: Annotated[float, Field(gt=0)] = 1.0
    min_weight_percent: Annotated[float, Field(ge=0, le=100)] = 10.0


class SlowStart:
    """One balancer's slow start: until when any endpoint is slow, and each one's weight now."""

    __slots__ = ("_exponent", "_floor", "_window", "until")

    def __init__(self, config: SlowStartConfig) -> None:
        self._window = config.slow_start_window_ms / 1000.0
        self._exponent = 1.0 / config.aggression
        self._floor = config.min_weight_percent / 100.0
        self.until = 0.0  # monotonic time the last endpoint leaves slow start; 0.0: none is slow

    def refresh(self, endpoints: Sequence[Endpoint]) -> None:
        """Recompute ``until`` (the cluster's endpoints or their health changed)."""
        w = self._window
        ends = [e.slow_start_since + w for e in endpoints if e.slow_start_since] if w else []
        self.until = max(ends) if ends else 0.0

    def active(self) -> bool:
        """Whether some endpoint may be slow now (one clock read; only when ``until`` is set)."""
        if not self.until:
            return False
        if time.monotonic() < self.until:
            return True
        self.until = 0.0
        return False

    def weight(self, e: Endpoint, now: float) -> float:
        since = e.slow_start_since
        if not since:
            return float(e.weight)
        age = now - since
        if age >= self._window:
            return float(e.weight)
        factor = max(age, 1.0) / self._window
        return e.weight * max(self._floor, factor ** self._exponent)


__all__ = ["SlowStart", "SlowStartConfig"]
