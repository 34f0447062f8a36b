"""Applying an update: which running objects a new config keeps, which it replaces, in what order.

- requests that start from now on use the new config; requests in flight finish on the objects
  they started with;
- a listener whose address, protocols, limits and TLS are unchanged keeps its socket and its
  connections: they are rebound to the new runtime (routes, filters, clusters), none closed;
- a listener whose protocols, limits or TLS changed gets a new runtime on the same socket: new
  connections go to it, the old ones drain for ``drain_timeout_ms`` and are then cut;
- a listener on a new address binds a new socket first; the old one stops accepting;
- a listener no longer in the config stops accepting and drains the same way;
- a cluster whose endpoints alone changed is updated in place: the kept endpoints keep their pools
  and counters, the removed ones' pools close after the grace period;
- a removed cluster fails only the requests routed to it (a protocol-correct local reply).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.endpoint import EDS_HEALTH
from sofamesh.core.upstream.cluster import link_local

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.build import Runtime
    from sofamesh.core.config.model import ClusterConfig, ProxyConfig
    from sofamesh.core.listeners import ListenerSet
    from sofamesh.core.upstream.cluster import Cluster


def apply_update(listeners: ListenerSet, clusters: dict[str, Cluster], built: Runtime, config: ProxyConfig,
                 loop: asyncio.AbstractEventLoop) -> dict[str, Cluster]:
    """Switch ``listeners`` to ``built`` (made from ``config``); return the clusters now serving.

    Every new address is bound first: a failure raises ``ConfigErrors`` with nothing changed.
    """
    grace = config.drain_timeout_ms / 1000.0
    bound = listeners.bind_new(config, built.listeners)
    fresh = built.clusters
    for name, c in list(fresh.items()):
        prev = clusters.get(name)
        if prev is None:
            continue
        if prev.config == c.config or _same_but_endpoints(prev.config, c.config):
            if prev.config != c.config:
                _update_endpoints(prev, c, grace, loop)
            prev.lb = c.lb if prev.config.lb != c.config.lb else prev.lb
            prev.protocol = c.protocol
            prev.http = c.http
            prev.config = c.config
            fresh[name] = prev  # keep its pools, counters and health
    loc = config.node.locality
    link_local(fresh, config.cluster_manager.local_cluster_name, (loc.region, loc.zone, loc.sub_zone))
    listeners.switch_to(config, built.listeners, bound, grace)
    for name, c in clusters.items():
        if fresh.get(name) is not c:
            loop.call_later(grace + 1.0, c.close)
    for c in fresh.values():
        c.start()
    return fresh


def _same_but_endpoints(a: ClusterConfig, b: ClusterConfig) -> bool:
    return a.model_copy(update={"endpoints": []}) == b.model_copy(update={"endpoints": []})


def _update_endpoints(prev: Cluster, fresh: Cluster, grace: float, loop: asyncio.AbstractEventLoop) -> None:
    """Put ``fresh``'s endpoints into ``prev`` in place; pools of removed endpoints close later."""
    by_addr = {e.address: e for e in prev.endpoints}
    merged = []
    added = []
    for e in fresh.endpoints:
        old = by_addr.pop(e.address, None)
        if old is not None:
            old.weight = e.weight
            old.labels = e.labels
            old.priority = e.priority
            old.locality = e.locality
            old.locality_weight = e.locality_weight
            old.down = (old.down & ~EDS_HEALTH) | (e.down & EDS_HEALTH)
            merged.append(old)
        else:
            merged.append(e)
            added.append(e)
    prev.endpoints[:] = merged
    prev.endpoints_updated(added)
    gone = set(by_addr)
    if gone:
        def close_gone() -> None:
            still = {e.address for e in prev.endpoints}
            for key in [k for k in prev.pools if k[0] in gone and k[0] not in still]:
                prev.pools.pop(key).close()

        loop.call_later(grace + 1.0, close_gone)


__all__ = ["apply_update"]
