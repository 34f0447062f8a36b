"""``least_request``: Envoy's weighted least request.

Equal weights: the power of N choices (``choice_count``, default 2) -- N endpoints drawn at random,
the one with the fewest active requests wins (the first drawn on a tie). Unequal weights (or an
endpoint in slow start): each endpoint's weight is scaled by its load,
``weight / (active_requests + 1) ^ active_request_bias`` (bias 1.0 by default; 0 balances by weight
alone), and one is drawn by that weight (Envoy keeps an EDF schedule of the same weights; a draw
has the same expectation without one).
"""

from __future__ import annotations

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


class LeastRequest(LoadBalancer):
    __slots__ = ("_bias", "_choices", "_rng", "_slow")

    def __init__(self, config: LeastRequestConfig) -> None:
        self._choices = config.choice_count
        self._bias = config.active_request_bias
        ss = config.slow_start_config
        self._slow = SlowStart(ss) if ss is not None and ss.slow_start_window_ms else None
        self._rng = random.Random()

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
        weights = []
        for e in endpoints:
            w = slow.weight(e, now) if slowing and slow is not None else float(e.weight)
            if bias:
                w = w / (e.active_rq + 1) ** bias
            weights.append(w)
        return self._rng.choices(endpoints, weights=weights)[0]

    def endpoints_changed(self, endpoints: Sequence[Endpoint]) -> None:
        if self._slow is not None:
            self._slow.refresh(endpoints)


class LeastRequestFactory(LoadBalancerFactory):
    def create(self, config: Mapping[str, Any] | None = None) -> LoadBalancer:
        return LeastRequest(LeastRequestConfig.model_validate(config or {}))


@hookimpl
def sofamesh_register_load_balancers(catalog: object) -> None:
    catalog.add("least_request", LeastRequestFactory())  # type: ignore[attr-defined]
