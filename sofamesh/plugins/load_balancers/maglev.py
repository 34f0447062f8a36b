"""``maglev``: Envoy's Maglev balancer (Google's Maglev paper, with Envoy's weighting), built the
way Envoy builds it so a key lands on the same endpoint behind sofamesh as behind Envoy.

Each endpoint has a permutation of the table's slots: ``offset = xxHash64(address) % size`` and
``skip = xxHash64(address, seed 1) % (size - 1) + 1``. Endpoints take turns claiming their next free
slot until the table is full; with unequal weights an endpoint takes its turn only when its running
share allows (normalized weight against the heaviest). A request goes to ``table[hash % size]``;
without a hash to a random slot. ``table_size`` must be prime (default 65537).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sofamesh.core.endpoint import Endpoint
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.upstream.load_balancer import LoadBalancer, LoadBalancerFactory

_MAX_TABLES = 8  # tables kept at once (one per set of endpoints seen lately: health changes, retries)


class MaglevConfig(BaseModel):
    """Envoy's ``maglev_lb_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table_size: Annotated[int, Field(ge=2, le=5_000_011)] = 65537

    @field_validator("table_size")
    @classmethod
    def _prime(cls, v: int) -> int:
        if v < 2 or any(v % d == 0 for d in range(2, int(v ** 0.5) + 1)):
            raise ValueError(f"table_size {v} is not a prime number")
        return v


def build_table(endpoints: Sequence[Endpoint], size: int) -> list[Endpoint]:
    """The Maglev lookup table for ``endpoints`` (in their order) of ``size`` slots. Pure Python:
    about M ln M probes (a quarter of a second for 65537 slots here), which is why tables are kept."""
    total = sum(e.weight for e in endpoints)
    shares = [e.weight / total for e in endpoints]
    heaviest = max(shares)
    weighted = len(set(shares)) > 1
    h = xxhash.xxh64_intdigest
    slots = []  # each endpoint's next slot in its permutation (offset + skip x n) % size
    skips = []
    for e in endpoints:
        key = e.address.encode()
        slots.append(h(key) % size)
        skips.append(h(key, seed=1) % (size - 1) + 1)
    targets = [0.0] * len(endpoints)
    owner = [-1] * size
    filled = 0
    iteration = 1
    turns = range(len(endpoints))
    while filled < size:
        for i in turns:
            if filled >= size:
                break
            if weighted:
                if iteration * shares[i] < targets[i]:
                    continue
                targets[i] += heaviest
            slot = slots[i]
            skip = skips[i]
            while owner[slot] >= 0:
                slot += skip
                if slot >= size:
                    slot -= size
            owner[slot] = i
            slot += skip
            slots[i] = slot - size if slot >= size else slot
            filled += 1
        iteration += 1
    return [endpoints[i] for i in owner]


class Maglev(LoadBalancer):
    needs_hash = True
    __slots__ = ("_size", "_tables", "_weights")

    def __init__(self, config: MaglevConfig) -> None:
        self._size = config.table_size
        self._tables: dict[tuple[Endpoint, ...], list[Endpoint]] = {}
        self._weights: tuple[tuple[str, int], ...] = ()

    def table(self, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        key = tuple(endpoints)
        t = self._tables.get(key)
        if t is None:
            if len(self._tables) >= _MAX_TABLES:
                self._tables.clear()
            t = self._tables[key] = build_table(endpoints, self._size)
        return t

    def choose(self, endpoints: Sequence[Endpoint], hash: int | None = None) -> Endpoint | None:
        if len(endpoints) == 1:
            return endpoints[0]
        h = random.getrandbits(64) if hash is None else hash
        return self.table(endpoints)[h % self._size]

    def endpoints_changed(self, endpoints: Sequence[Endpoint]) -> None:
        """Tables are kept across health changes (an endpoint that comes back finds its table
        built); only a change of addresses or weights drops them."""
        weights = tuple((e.address, e.weight) for e in endpoints)
        if weights != self._weights:
            self._weights = weights
            self._tables.clear()


class MaglevFactory(LoadBalancerFactory):
    def create(self, config: Mapping[str, Any] | None = None) -> LoadBalancer:
        return Maglev(MaglevConfig.model_validate(config or {}))


@hookimpl
def sofamesh_register_load_balancers(catalog: object) -> None:
    catalog.add("maglev", MaglevFactory())  # type: ignore[attr-defined]
