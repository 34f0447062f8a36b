"""``random``: weighted random choice."""

from __future__ import annotations

import random as _random
from collections.abc import Mapping, Sequence
from typing import Any

from sofamesh.core.endpoint import Endpoint
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.upstream.load_balancer import LoadBalancer, LoadBalancerFactory


class RandomBalancer(LoadBalancer):
    __slots__ = ("_rng",)
    picks_sole_endpoint = True  # ``choose`` of one endpoint returns it, touching nothing

    def __init__(self) -> None:
        self._rng = _random.Random()

    def choose(self, endpoints: Sequence[Endpoint], hash: int | None = None) -> Endpoint | None:
        if len(endpoints) == 1:
            return endpoints[0]
        return self._rng.choices(endpoints, weights=[e.weight for e in endpoints])[0]


class RandomFactory(LoadBalancerFactory):
    def create(self, config: Mapping[str, Any] | None = None) -> LoadBalancer:
        if config:
            raise ValueError(f"random takes no settings (got {', '.join(sorted(config))})")
        return RandomBalancer()


@hookimpl
def sofamesh_register_load_balancers(catalog: object) -> None:
    catalog.add("random", RandomFactory())  # type: ignore[attr-defined]
