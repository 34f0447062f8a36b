"""``round_robin``: smooth weighted round robin (nginx's algorithm); plain rotation when weights are equal."""

from __future__ import annotations

from collections.abc import Sequence

from sofamesh.core.endpoint import Endpoint
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.upstream.load_balancer import LoadBalancer, LoadBalancerFactory


class RoundRobin(LoadBalancer):
    __slots__ = ("_current", "_next")

    def __init__(self) -> None:
        self._next = 0
        self._current: dict[int, int] = {}

    def choose(self, endpoints: Sequence[Endpoint]) -> Endpoint | None:
        n = len(endpoints)
        if n == 1:
            return endpoints[0]
        first_w = endpoints[0].weight
        if all(e.weight == first_w for e in endpoints):
            i = self._next % n
            self._next = i + 1
            return endpoints[i]
        total = 0
        best: Endpoint | None = None
        best_cw = 0
        cur = self._current
        for e in endpoints:
            cw = cur.get(id(e), 0) + e.weight
            cur[id(e)] = cw
            total += e.weight
            if best is None or cw > best_cw:
                best, best_cw = e, cw
        assert best is not None
        cur[id(best)] = best_cw - total
        return best


class RoundRobinFactory(LoadBalancerFactory):
    def create(self) -> LoadBalancer:
        return RoundRobin()


@hookimpl
def sofamesh_register_load_balancers(catalog: object) -> None:
    catalog.add("round_robin", RoundRobinFactory())  # type: ignore[attr-defined]
