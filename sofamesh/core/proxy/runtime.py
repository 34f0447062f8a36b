"""ListenerRuntime: everything one listener serves with (codec factories, router, filters, clusters,
limits, counters). Built from config, replaced whole (never mutated) on reload; the connections and
streams that started on one finish on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sofamesh.core.stats import ListenerStats, RpcStats

if TYPE_CHECKING:
    from sofamesh.core.codec import CodecFactory, CodecLimits
    from sofamesh.core.proxy.filter_chain import FilterChain
    from sofamesh.core.proxy.router import Router
    from sofamesh.core.upstream.cluster import Cluster


class ServedConnection(Protocol):
    """A downstream connection as its listener's owner sees it (``core/listeners.py``): what it asks
    of connections on reload, idle sweeps and shutdown. ``DownstreamConnection`` is one."""

    @property
    def tcp(self) -> object | None: ...

    @property
    def last_active(self) -> float: ...

    def idle(self) -> bool: ...
    def drain(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def rebind(self, rt: ListenerRuntime) -> None: ...


class ListenerRuntime:
    """What one listener serves with. Built from config; replaced (never mutated) on reload."""

    __slots__ = ("_rpc_last", "_rpc_method", "_rpc_protocol", "_rpc_service", "_rpc_table", "clusters",
                 "connections", "draining", "factories", "filters", "limits", "max_connections", "name", "router",
                 "rpc_stats", "stats", "streams")

    def __init__(self, name: str, factories: list[CodecFactory], router: Router, filters: FilterChain,
                 clusters: dict[str, Cluster], limits: CodecLimits, stats: ListenerStats | None = None,
                 rpc_stats: dict[tuple[str, str, str], RpcStats] | None = None, max_connections: int = 0) -> None:
        self.name = name
        self.max_connections = max_connections  # the listener's connection limit; 0 = none of its own
        # Decoding protocols sniff first; passthrough (tcp) only when nothing else matched.
        self.factories = sorted(factories, key=lambda f: f.passthrough)
        self.router = router
        self.filters = filters
        self.clusters = clusters
        self.limits = limits
        self.stats = stats if stats is not None else ListenerStats()
        self.rpc_stats = rpc_stats if rpc_stats is not None else {}
        self.connections: set[ServedConnection] = set()
        self.streams = 0  # streams started on this runtime and not finished yet
        self.draining = False
        # ``rpc_for``'s last answer and the very strings (and table) it was for
        self._rpc_last: RpcStats | None = None
        self._rpc_protocol = self._rpc_service = self._rpc_method = ""
        self._rpc_table: dict[tuple[str, str, str], RpcStats] | None = None

    def rpc_for(self, protocol: str, service: str, method: str) -> RpcStats:
        """The counters of (``protocol``, ``service``, ``method``) in ``rpc_stats``, made on first use.

        A connection sends the same call again and again, and its codec hands out the same string
        objects for it (Bolt's header maps and Dubbo's body heads are decoded once per distinct
        bytes): the last answer is kept and given again when the strings are those very objects,
        with no key tuple built and hashed per request."""
        last = self._rpc_last
        table = self.rpc_stats
        if (last is not None and service is self._rpc_service and method is self._rpc_method
                and protocol is self._rpc_protocol and table is self._rpc_table):
            return last
        key = (protocol, service, method)
        s = table.get(key)
        if s is None:
            s = table[key] = RpcStats()
        self._rpc_last = s
        self._rpc_protocol = protocol
        self._rpc_service = service
        self._rpc_method = method
        self._rpc_table = table
        return s

    def close_filters(self) -> None:
        """This runtime serves nothing any more: let its filters release files and timers."""
        self.filters.close()
        for route in self.router.routes:
            route.filters.close()


__all__ = ["ListenerRuntime", "ServedConnection"]
