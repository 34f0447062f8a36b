"""Zone-aware routing: how much of a cluster's traffic stays in the caller's own zone, as Envoy's
``zone_aware_lb_config`` decides it ("Zone aware routing" in Envoy's load-balancing docs).

Pure arithmetic over endpoint counts, recomputed when either cluster's endpoints or health change
(``host_set.build_plan``), never per request; a request only draws one number and takes one
locality's healthy endpoints.

Envoy's rules, in its integer units (1/10000):

- the upstream cluster's and the local (originating) cluster's healthy endpoints per locality, each
  as a share of its cluster's healthy endpoints;
- when the upstream's share in the local locality is at least the local cluster's, every request
  stays local (*direct*);
- otherwise ``upstream share x 10000 / local share`` of the requests stay local, and the rest go to
  the other localities in proportion to their *residual capacity*: how much more of the upstream
  they hold than of the local cluster (none where the local cluster holds as much or more);
- skipped (plain balancing over priority 0's healthy endpoints) when priority 0 has fewer than two
  localities with healthy endpoints or none healthy in the local locality, when the upstream
  cluster has fewer than ``min_cluster_size`` endpoints, when either cluster is in panic, and for
  hash balancers and locality-weighted clusters; ``routing_enabled`` percent of the requests take
  part at all. Envoy 1.40 no longer skips when the two clusters have different numbers of zones: a
  locality the local cluster lacks gets residual capacity, one only the local cluster has counts
  in its shares.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from sofamesh.core.endpoint import Endpoint

Locality = tuple[str, str, str]
UNITS = 10_000  # Envoy's percentages are in 1/100 of a percent


class ZoneInput(NamedTuple):
    """What a cluster's zone routing is computed from besides its own endpoints: the caller's
    locality, its own cluster's healthy endpoints per locality and whether that cluster is in
    panic, and the cluster's ``zone_aware_lb`` settings."""

    local_zone: Locality
    local_counts: dict[Locality, int]
    local_panic: bool
    min_cluster_size: int
    enabled: float  # routing_enabled, percent
    fail_on_panic: bool


class ZoneRouting:
    """Priority 0's localities and the share of requests each gets (the local one first)."""

    __slots__ = ("cum", "direct", "enabled", "local", "local_units", "others", "total")

    def __init__(self, local: list[Endpoint], direct: bool, local_units: int, others: list[list[Endpoint]],
                 residual: list[int], enabled: float) -> None:
        self.local = local
        self.direct = direct
        self.local_units = local_units  # of 10000 requests, how many stay local (when not direct)
        self.others = others
        cum: list[int] = []
        acc = 0
        for r in residual:
            acc += r
            cum.append(acc)
        self.cum = cum
        self.total = acc
        self.enabled = enabled  # routing_enabled, percent

    def pick(self, all_healthy: list[Endpoint]) -> list[Endpoint]:
        """The endpoints one request may go to: a locality's healthy ones, or ``all_healthy`` for a
        request outside ``routing_enabled``."""
        if self.enabled < 100.0 and random.random() * 100.0 >= self.enabled:
            return all_healthy
        if self.direct or random.randrange(UNITS) < self.local_units or not self.total:
            return self.local
        x = random.randrange(self.total)
        return self.others[bisect_right(self.cum, x)]

    def describe(self) -> dict[str, object]:
        return {"state": "direct" if self.direct else "residual",
                "local_percent": 100.0 if self.direct else self.local_units / 100.0,
                "residual": [{"locality": "/".join(eps[0].locality) if eps else "", "capacity": c}
                             for eps, c in zip(self.others, _steps(self.cum), strict=True)]}


def _steps(cum: list[int]) -> list[int]:
    return [c - (cum[i - 1] if i else 0) for i, c in enumerate(cum)]


def shares(counts: Mapping[Locality, int]) -> dict[Locality, int]:
    """Each locality's share of ``counts``' total, in 1/10000 (Envoy's integer division)."""
    total = sum(counts.values())
    if not total:
        return {loc: 0 for loc in counts}
    return {loc: UNITS * n // total for loc, n in counts.items()}


def plan_zones(upstream: Sequence[Endpoint], local_counts: Mapping[Locality, int], local_zone: Locality,
               min_cluster_size: int, enabled: float) -> ZoneRouting | None:
    """The zone routing of priority 0's endpoints ``upstream`` for a caller in ``local_zone`` whose
    own cluster has ``local_counts`` healthy endpoints per locality; None when Envoy skips it."""
    if len(upstream) < min_cluster_size:
        return None
    healthy: dict[Locality, list[Endpoint]] = {}
    for e in upstream:
        if e.healthy:
            healthy.setdefault(e.locality, []).append(e)
    local = healthy.get(local_zone)
    if len(healthy) < 2 or not local or not sum(local_counts.values()):
        return None
    up = shares({loc: len(eps) for loc, eps in healthy.items()})
    mine = shares(local_counts)
    up_local, mine_local = up[local_zone], mine.get(local_zone, 0)
    others = [(loc, eps) for loc, eps in healthy.items() if loc != local_zone]
    if up_local >= mine_local:
        return ZoneRouting(local, True, UNITS, [eps for _, eps in others], [0] * len(others), enabled)
    residual = [max(0, up[loc] - mine.get(loc, 0)) for loc, _ in others]
    return ZoneRouting(local, False, up_local * UNITS // mine_local, [eps for _, eps in others], residual, enabled)


__all__ = ["UNITS", "Locality", "ZoneInput", "ZoneRouting", "plan_zones", "shares"]
