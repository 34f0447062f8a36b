"""``round_robin``: smooth weighted round robin (nginx's algorithm); plain rotation when weights are
equal. ``lb_config.slow_start_config`` ramps a joining endpoint's weight up (``slow_start.py``)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from sofamesh.core.endpoint import Endpoint
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.upstream.load_balancer import LoadBalancer, LoadBalancerFactory
from sofamesh.plugins.load_balancers.slow_start import SlowStart, SlowStartConfig


class RoundRobinConfig(BaseModel):
    """Envoy's ``round_robin_lb_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slow_start_config: SlowStartConfig | None = None


class RoundRobin(LoadBalancer):
    __slots__ = ("_current", "_next", "_slow")
    picks_sole_endpoint = True  # ``choose`` of one endpoint returns it, touching nothing

    def __init__(self, config: RoundRobinConfig | None = None) -> None:
        self._next = 0
        self._current: dict[int, float] = {}
        ss = config.slow_start_config if config is not None else None
        self._slow = SlowStart(ss) if ss is not None and ss.slow_start_window_ms else None

    def choose(self, endpoints: Sequence[Endpoint], hash: int | None = None) -> Endpoint | None:
        n = len(endpoints)
        if n == 1:
            return endpoints[0]
        slow = self._slow
        if slow is not None and slow.active():
            now = time.monotonic()
            return self._weighted(endpoints, [slow.weight(e, now) for e in endpoints])
        first_w = endpoints[0].weight
        if all(e.weight == first_w for e in endpoints):
            i = self._next % n
            self._next = i + 1
            return endpoints[i]
        return self._weighted(endpoints, [e.weight for e in endpoints])

    def _weighted(self, endpoints: Sequence[Endpoint], weights: Sequence[float]) -> Endpoint:
        total = 0.0
        best = endpoints[0]
        best_cw = None
        cur = self._current
        for e, w in zip(endpoints, weights, strict=True):
            cw = cur.get(id(e), 0) + w
            cur[id(e)] = cw
            total += w
            if best_cw is None or cw > best_cw:
                best, best_cw = e, cw
        assert best_cw is not None
        cur[id(best)] = best_cw - total
        return best

    def endpoints_changed(self, endpoints: Sequence[Endpoint]) -> None:
        if self._slow is not None:
            self._slow.refresh(endpoints)
        if len(self._current) > 4 * len(endpoints) + 16:  # endpoints that left: forget their credit
            self._current.clear()


class RoundRobinFactory(LoadBalancerFactory):
    def create(self, config: Mapping[str, Any] | None = None) -> LoadBalancer:
        return RoundRobin(RoundRobinConfig.model_validate(config) if config else None)


@hookimpl
def sofamesh_register_load_balancers(catalog: object) -> None:
    catalog.add("round_robin", RoundRobinFactory())  # type: ignore[attr-defined]
