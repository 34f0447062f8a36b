"""``least_request``: Envoy's weighted least request.

Equal weights: the power of N choices (``choice_count``, default 2) -- N endpoints drawn at random,
the one with the fewest active requests wins (the first drawn on a tie). Unequal weights (or an
endpoint in slow start): each endpoint's weight is scaled by its load,
``weight / (active_requests + 1) ^ active_request_bias`` (bias 1.0 by default; 0 balances by weight
alone), and the endpoint comes from an earliest-deadline-first schedule of those weights, as
Envoy's: each endpoint is due ``1 / weight`` after its last turn, the one due first is picked and
scheduled again with its weight as it is then. One schedule per candidate list (a priority, a
locality), rebuilt when the endpoints change, started a random number of turns in so that
proxies do not all begin with the same endpoint.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from sofamesh.core.endpoint import Endpoint
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.upstream.load_balancer import LoadBalancer, LoadBalancerFactory
from sofamesh.plugins.load_balancers.slow_start import SlowStart, SlowStartConfig


class LeastRequestConfig(BaseModel):
    """Envoy's ``least_request_lb_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    choice_count: Annotated[int, Field(ge=2)] = 2
    active_request_bias: Annotated[float, Field(ge=0)] = 1.0
    slow_start_config: SlowStartConfig | None = None


_MAX_SCHEDULES = 16  # candidate lists kept (priorities, localities); others rebuild their schedule


class _Schedule:
    """Envoy's EDF scheduler over one candidate list: a heap of (deadline, order, index)."""

    __slots__ = ("endpoints", "heap", "now", "order")

    def __init__(self, endpoints: Sequence[Endpoint], weigh: Any, rng: random.Random) -> None:
        self.endpoints = endpoints
        self.now = 0.0
        self.order = 0
        self.heap: list[tuple[float, int, int]] = []
        for i, e in enumerate(endpoints):
            self._add(i, weigh(e))
        for _ in range(rng.randrange(len(endpoints))):  # Envoy's random start
            self.pick(weigh)

    def _add(self, i: int, weight: float) -> None:
        self.order += 1
        heapq.heappush(self.heap, (self.now + 1.0 / max(weight, 1e-9), self.order, i))

    def pick(self, weigh: Any) -> Endpoint:
        deadline, _, i = heapq.heappop(self.heap)
        self.now = deadline
        e = self.endpoints[i]
        self._add(i, weigh(e))
        return e


class LeastRequest(LoadBalancer):
    __slots__ = ("_bias", "_choices", "_rng", "_schedules", "_slow")
    picks_sole_endpoint = True  # ``choose`` of one endpoint returns it, touching nothing

    def __init__(self, config: LeastRequestConfig) -> None:
        self._choices = config.choice_count
        self._bias = config.active_request_bias
        ss = config.slow_start_config
        self._slow = SlowStart(ss) if ss is not None and ss.slow_start_window_ms else None
        self._rng = random.Random()
        self._schedules: dict[int, _Schedule] = {}  # by id() of the candidate list

    def choose(self, endpoints: Sequence[Endpoint], hash: int | None = None) -> Endpoint | None:
        n = len(endpoints)
        if n == 1:
            return endpoints[0]
        slow = self._slow
        slowing = slow is not None and slow.active()
        first_w = endpoints[0].weight
        if not slowing and all(e.weight == first_w for e in endpoints):
            rand = self._rng.randrange
            best = endpoints[rand(n)]
            for _ in range(self._choices - 1):
                e = endpoints[rand(n)]
                if e.active_rq < best.active_rq:
                    best = e
            return best
        bias = self._bias
        now = time.monotonic()

        def weigh(e: Endpoint) -> float:
            w = slow.weight(e, now) if slowing and slow is not None else float(e.weight)
            return w / (e.active_rq + 1) ** bias if bias else w

        schedules = self._schedules
        sched = schedules.get(id(endpoints))
        if sched is None or sched.endpoints is not endpoints:
            if len(schedules) >= _MAX_SCHEDULES:
                schedules.clear()
            sched = schedules[id(endpoints)] = _Schedule(endpoints, weigh, self._rng)
        return sched.pick(weigh)

    def endpoints_changed(self, endpoints: Sequence[Endpoint]) -> None:
        self._schedules.clear()  # candidate lists are rebuilt: their schedules too
        if self._slow is not None:
            self._slow.refresh(endpoints)


class LeastRequestFactory(LoadBalancerFactory):
    def create(self, config: Mapping[str, Any] | None = None) -> LoadBalancer:
        return LeastRequest(LeastRequestConfig.model_validate(config or {}))


@hookimpl
def sofamesh_register_load_balancers(catalog: object) -> None:
    catalog.add("least_request", LeastRequestFactory())  # type: ignore[attr-defined]
