"""What the overload manager (``core/overload.py``) decided for this process, and its counters.

Read by downstream connections on accept (connection limits, refusing) and by each request through
one attribute (``per_request``: shedding or keep-alive off). One per process: ``--workers N``
runs N processes, each with its own. Written only by the overload manager and the connections.
"""

from __future__ import annotations

RESET_MIN_BYTES = 1024 * 1024  # a connection holding less is not worth resetting (Envoy: 1 MiB accounts)


class Pressure:
    __slots__ = (
        "active_cx",
        "counters",
        "held",
        "held_limit",
        "max_cx",
        "no_keepalive",
        "per_request",
        "reject",
        "shed",
        "values",
    )

    def __init__(self) -> None:
        self.active_cx = 0  # downstream connections open in this process, every listener
        self.max_cx = 0  # Envoy's global_downstream_max_connections; 0 = no limit
        self.reject = False  # new connections are closed on accept
        self.shed = False  # new requests get the protocol's overload reply
        self.no_keepalive = False  # HTTP/1 responses close their connection; HTTP/2 says GOAWAY
        self.per_request = False  # shed or no_keepalive: the one thing a request looks at
        # bytes held in messages that span reads (a big RPC frame arriving), every connection; past
        # ``held_limit`` (0 = none) a connection holding RESET_MIN_BYTES or more is reset as it grows,
        # between two measurements of the overload manager
        self.held = 0
        self.held_limit = 0
        self.counters: dict[str, int] = {}  # overload.* counters, by name without the prefix
        self.values: dict[str, float] = {}  # gauges: pressures, RSS

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {
            "downstream_cx_active": self.active_cx,
            "max_active_downstream_connections": self.max_cx,
            "held_bytes": self.held,
            "held_limit_bytes": self.held_limit,
        }
        out.update(self.values)
        out.update(self.counters)
        return dict(sorted(out.items()))


PROCESS = Pressure()
"""This process's pressure."""


__all__ = ["PROCESS", "RESET_MIN_BYTES", "Pressure"]
