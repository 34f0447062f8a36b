"""``ring_hash``: Envoy's ring hash (ketama) balancer, built the way Envoy builds it so a key lands
on the same endpoint behind sofamesh as behind Envoy.

The ring: weights normalized over the endpoints it is built for; scaled so the lightest endpoint
gets at least ``minimum_ring_size`` x its share of entries (capped by ``maximum_ring_size``); each
endpoint contributes entries hashed (xxHash64) from ``"<address>_<n>"``, as many as its running
share reaches; entries sorted by hash. A request goes to the first entry at or after its hash,
wrapping around; without a hash (no ``hash_policy``, or nothing to hash) it goes to a random one.

Rings are built per set of endpoints the cluster hands over (the healthy endpoints of a priority),
kept until the cluster's endpoints or their health change.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import xxhash
from pydantic import BaseModel, ConfigDict, Field

from sofamesh.core.endpoint import Endpoint
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.upstream.load_balancer import LoadBalancer, LoadBalancerFactory

_MAX_RINGS = 16  # rings kept at once (one per distinct set of endpoints: priorities, retries)


class RingHashConfig(BaseModel):
    """Envoy's ``ring_hash_lb_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum_ring_size: Annotated[int, Field(ge=1, le=8_388_608)] = 1024
    maximum_ring_size: Annotated[int, Field(ge=1, le=8_388_608)] = 8_388_608
    hash_function: Literal["XX_HASH"] = "XX_HASH"  # MURMUR_HASH_2 is not supported


class Ring:
    """Sorted entry hashes and the endpoint of each."""

    __slots__ = ("endpoints", "hashes")

    def __init__(self, endpoints: Sequence[Endpoint], minimum: int, maximum: int) -> None:
        total = sum(e.weight for e in endpoints)
        shares = [e.weight / total for e in endpoints]
        lightest = min(shares)
        scale = min(math.ceil(lightest * minimum) / lightest, float(maximum))
        entries: list[tuple[int, Endpoint]] = []
        current = 0.0
        target = 0.0
        h = xxhash.xxh64_intdigest
        for e, share in zip(endpoints, shares, strict=True):
            prefix = f"{e.address}_"
            target += scale * share
            n = 0
            while current < target:
                entries.append((h(f"{prefix}{n}".encode()), e))
                n += 1
                current += 1
        entries.sort(key=lambda t: t[0])
        self.hashes = [t[0] for t in entries]
        self.endpoints = [t[1] for t in entries]

    def lookup(self, hash: int) -> Endpoint:
        i = bisect_left(self.hashes, hash)
        return self.endpoints[i if i < len(self.hashes) else 0]


class RingHash(LoadBalancer):
    needs_hash = True
    __slots__ = ("_config", "_rings", "_weights")

    def __init__(self, config: RingHashConfig) -> None:
        if config.minimum_ring_size > config.maximum_ring_size:
            raise ValueError(f"minimum_ring_size {config.minimum_ring_size} is above maximum_ring_size "
                             f"{config.maximum_ring_size}")
        self._config = config
        self._rings: dict[tuple[Endpoint, ...], Ring] = {}
        self._weights: tuple[tuple[str, int], ...] = ()

    def ring(self, endpoints: Sequence[Endpoint]) -> Ring:
        key = tuple(endpoints)
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) >= _MAX_RINGS:
                self._rings.clear()
            c = self._config
            ring = self._rings[key] = Ring(endpoints, c.minimum_ring_size, c.maximum_ring_size)
        return ring

    def choose(self, endpoints: Sequence[Endpoint], hash: int | None = None) -> Endpoint | None:
        if len(endpoints) == 1:
            return endpoints[0]
        return self.ring(endpoints).lookup(random.getrandbits(64) if hash is None else hash)

    def endpoints_changed(self, endpoints: Sequence[Endpoint]) -> None:
        """Rings are kept across health changes; a change of addresses or weights drops them."""
        weights = tuple((e.address, e.weight) for e in endpoints)
        if weights != self._weights:
            self._weights = weights
            self._rings.clear()


class RingHashFactory(LoadBalancerFactory):
    def create(self, config: Mapping[str, Any] | None = None) -> LoadBalancer:
        return RingHash(RingHashConfig.model_validate(config or {}))


@hookimpl
def sofamesh_register_load_balancers(catalog: object) -> None:
    catalog.add("ring_hash", RingHashFactory())  # type: ignore[attr-defined]
