"""Server: builds the runtime from a config, binds listeners and the admin port, drains on stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from typing import Any

from sofamesh.core.codec import CodecFactory, CodecLimits
from sofamesh.core.config.check import Catalogs, build_filters, resolve
from sofamesh.core.config.model import ClusterConfig, ListenerConfig, ProxyConfig
from sofamesh.core.errors import ConfigError, ConfigErrors, MeshError
from sofamesh.core.net.listener import Listener
from sofamesh.core.net.tls import TlsSource
from sofamesh.core.plugin_host import PluginHost
from sofamesh.core.proxy.filter_chain import EMPTY_CHAIN, FilterChain
from sofamesh.core.proxy.router import Route, Router
from sofamesh.core.proxy.stream_manager import DownstreamConnection, ListenerRuntime
from sofamesh.core.reload import PluginSources
from sofamesh.core.upstream.cluster import Cluster

log = logging.getLogger("sofamesh.server")


class ListenerHandle:
    """A bound listener and the runtime new requests get (swapped on reload). ``old`` holds replaced
    runtimes until their last in-flight stream ends; then their filters are closed."""

    __slots__ = ("config", "listener", "old", "rt")

    def __init__(self, config: ListenerConfig, rt: ListenerRuntime) -> None:
        self.config = config
        self.rt = rt
        self.old: list[ListenerRuntime] = []
        self.listener: Listener | None = None


class Server:
    """One data-plane process: listeners, clusters, admin."""

    def __init__(self, config: ProxyConfig, host: PluginHost | None = None, *, reuse_port: bool = False,
                 admin_address: str | None = None, worker: int | None = None) -> None:
        self.config = config
        self.host = host or PluginHost()
        self.reuse_port = reuse_port
        self.worker = worker
        self.admin_address = admin_address if admin_address is not None else (
            config.admin.address if config.admin else None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.catalogs: Catalogs | None = None
        self.clusters: dict[str, Cluster] = {}
        self.listeners: dict[str, ListenerHandle] = {}
        self.admin: Any = None
        self.ready = False
        self.stopping = False
        self.cut = 0
        self.config_version = 0
        self.config_path: str | None = None
        self.plugin_sources = PluginSources(self.host)
        self._stop = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.xds: Any = None  # the xDS client when the config comes from xDS (its ``describe()`` is dumped)

    # -- building ----------------------------------------------------------------------------------
    def _build(self, config: ProxyConfig) -> tuple[Catalogs, dict[str, Cluster], dict[str, ListenerRuntime]]:
        assert self.loop is not None
        self.host.pm.hook.sofamesh_configure(config=config)
        cats = resolve(config, self.host)
        clusters: dict[str, Cluster] = {}
        for c in config.clusters:
            lb = cats.load_balancers.get(c.lb).create()
            proto = cats.protocols.get(c.protocol) if c.protocol else None
            clusters[c.name] = Cluster(c, lb, proto, self.loop)
        runtimes: dict[str, ListenerRuntime] = {}
        errors: list[ConfigError] = []
        for i, lc in enumerate(config.listeners):
            name = lc.name or f"listener{i}"
            try:
                runtimes[name] = self._build_listener(i, name, lc, cats, clusters)
            except ConfigErrors as exc:
                errors.extend(exc.errors)
        if errors:
            raise ConfigErrors(errors)
        return cats, clusters, runtimes

    def _build_listener(self, i: int, name: str, lc: ListenerConfig, cats: Catalogs,
                        clusters: dict[str, Cluster]) -> ListenerRuntime:
        factories: list[CodecFactory]
        if lc.protocols == "auto":
            factories = [f for _, f in cats.protocols.items()]
        else:
            factories = [cats.protocols.get(p, f"listeners[{i}].protocols") for p in lc.protocols]
        chain = FilterChain(build_filters(cats, list(lc.filters), f"listeners[{i}].filters"))
        routes = []
        for k, rc in enumerate(lc.routes):
            rf = build_filters(cats, list(rc.filters), f"listeners[{i}].routes[{k}].filters") if rc.filters else []
            routes.append(Route(k, rc, FilterChain(rf) if rf else EMPTY_CHAIN))
        lim = lc.limits
        limits = CodecLimits(lim.max_frame_bytes, lim.max_header_bytes, lim.max_headers, lim.max_body_bytes)
        return ListenerRuntime(name, factories, Router(routes), chain, clusters, limits)

    # -- running -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        cats, clusters, runtimes = self._build(self.config)
        self.catalogs, self.clusters = cats, clusters
        for i, lc in enumerate(self.config.listeners):
            name = lc.name or f"listener{i}"
            handle = ListenerHandle(lc, runtimes[name])
            handle.listener = Listener(name, lc.address, self._conn_factory(handle), self.reuse_port,
                                       path=f"listeners[{i}].address")
            self.listeners[name] = handle
        for i, h in enumerate(self.listeners.values()):
            assert h.listener is not None
            await h.listener.start(self.loop, ssl=self._server_ssl(h.config, i))
        if self.admin_address:
            from sofamesh.core.admin import AdminServer

            self.admin = AdminServer(self, self.admin_address)
            await self.admin.start()
        self.config_version = 1
        for r in self.host.pm.hook.sofamesh_startup(server=self):
            if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                await r
        self._sweeper = self.loop.create_task(self._sweep())
        self.plugin_sources.snapshot()
        self.ready = True

    def _server_ssl(self, lc: ListenerConfig, i: int = 0) -> ssl.SSLContext | None:
        if lc.tls is None:
            return None
        return TlsSource(lc.tls, server=True, path=f"listeners[{i}].tls").server_context()

    async def _sweep(self) -> None:
        assert self.loop is not None
        while True:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            for c in self.clusters.values():
                for pool in list(c.pools.values()):
                    pool.sweep(now)
            for h in self.listeners.values():
                self._retire(h)
                limit = h.config.idle_timeout_ms / 1000.0
                if not limit:
                    continue
                for rt in (h.rt, *h.old):
                    for conn in list(rt.connections):
                        if conn.tcp is None and conn.idle() and now - conn.last_active > limit:
                            conn.close()

    def request_stop(self) -> None:
        self._stop.set()

    async def serve_until_stopped(self, install_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or ``request_stop``), then drain. Returns requests cut."""
        assert self.loop is not None
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self._stop.set)
            self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self._stop.wait()
        return await self.shutdown()

    def _on_sighup(self) -> None:
        try:
            version, packages = self.reload()
        except MeshError as exc:
            log.error("SIGHUP: reload refused, the old config keeps serving:\n%s", exc)
            return
        log.info("SIGHUP: config version %d is serving (plugin packages re-imported: %s)", version,
                 ", ".join(packages) or "none")

    def active_requests(self) -> int:
        # A reload hands the same counters to the new runtime: count each listener's once.
        return sum(h.rt.stats.downstream_rq_active for h in self.listeners.values())

    async def shutdown(self) -> int:
        """Stop accepting, let in-flight requests finish for the grace period, then cut the rest."""
        assert self.loop is not None
        self.stopping = True
        self.ready = False
        if self.xds is not None:
            await self.xds.stop()  # no config change while draining
        for h in self.listeners.values():
            if h.listener is not None:
                h.listener.stop_accepting()
        conns: list[DownstreamConnection] = []
        for h in self.listeners.values():
            for rt in (h.rt, *h.old):
                rt.draining = True
                conns.extend(rt.connections)
        for conn in conns:
            conn.drain()
        deadline = self.loop.time() + self.config.drain_timeout_ms / 1000.0
        while self.loop.time() < deadline and self.active_requests() > 0:
            await asyncio.sleep(0.05)
        cut = self.active_requests()
        for h in self.listeners.values():
            for rt in (h.rt, *h.old):
                for conn in list(rt.connections):
                    conn.abort()
        self.cut = cut
        if cut:
            log.warning("shutdown: %d in-flight request(s) cut after the %d ms grace period", cut,
                        self.config.drain_timeout_ms)
        else:
            log.info("shutdown: every in-flight request finished")
        for r in self.host.pm.hook.sofamesh_shutdown(server=self):
            if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                try:
                    await asyncio.wait_for(r, self.config.drain_timeout_ms / 1000.0 or 1.0)
                except TimeoutError:
                    log.warning("shutdown: a plugin's shutdown hook did not finish in time")
        if self._sweeper is not None:
            self._sweeper.cancel()
        for h in self.listeners.values():
            for rt in (h.rt, *h.old):
                rt.close_filters()
            h.old = []
        for c in self.clusters.values():
            c.close()
        if self.admin is not None:
            await self.admin.stop()
        for h in self.listeners.values():
            if h.listener is not None:
                await h.listener.wait_closed()
        return cut

    # -- reload ------------------------------------------------------------------------------------
    def reload(self, text: str | None = None) -> tuple[int, list[str]]:
        """Re-read the config (``text``, else the config file), re-import plugin packages whose files
        changed, and apply both. Returns (config version, re-imported packages).

        All or nothing: a config or plugin that fails to load, import or build raises ``MeshError``
        and the old config, plugin code and objects keep serving.
        """
        from sofamesh.core.config.loader import load_file, load_text

        if text is not None and text.strip():
            config = load_text(text, "<posted config>")
        elif self.config_path:
            config = load_file(self.config_path)
        else:
            raise ConfigErrors([ConfigError("", "no config file to re-read; POST the YAML as the body")])
        self.host.rescan()
        packages = self.plugin_sources.changed()
        undo = self.plugin_sources.reimport(packages)
        try:
            self.apply(config)
        except BaseException:
            undo()
            raise
        self.plugin_sources.snapshot()
        return self.config_version, packages

    def _retire(self, h: ListenerHandle) -> None:
        """Close the filters of replaced runtimes whose last in-flight stream has ended."""
        if not h.old:
            return
        keep = []
        for rt in h.old:
            if rt.streams or rt.connections:
                keep.append(rt)
            else:
                rt.close_filters()
        h.old = keep

    def apply(self, config: ProxyConfig) -> None:
        """Swap in a new config atomically; nothing changes when it raises ``ConfigErrors``.

        - requests that start from now on use the new config; requests in flight finish on the
          objects they started with;
        - a listener whose address, protocols, limits and TLS are unchanged keeps its socket and its
          connections: they are rebound to the new runtime (routes, filters, clusters), none closed;
        - a listener whose protocols, limits or TLS changed gets a new runtime on the same socket:
          new connections go to it, the old ones drain for ``drain_timeout_ms`` and are then cut;
        - a listener on a new address binds a new socket first; the old one stops accepting;
        - a listener no longer in the config stops accepting and drains the same way;
        - a cluster whose endpoints alone changed is updated in place: the kept endpoints keep their
          pools and counters, the removed ones' pools close after the grace period;
        - a removed cluster fails only the requests routed to it (a protocol-correct local reply).
        """
        assert self.loop is not None
        loop = self.loop
        cats, clusters, runtimes = self._build(config)
        grace = config.drain_timeout_ms / 1000.0
        # Bind every new address first: a failure leaves the running config untouched.
        bound: dict[str, ListenerHandle] = {}
        new_specs: list[tuple[str, ListenerConfig]] = []
        held = {h.config.address: (n, h) for n, h in self.listeners.items()}
        try:
            for i, lc in enumerate(config.listeners):
                name = lc.name or f"listener{i}"
                new_specs.append((name, lc))
                old = self.listeners.get(name)
                if old is not None and old.config.address == lc.address:
                    continue
                holder = held.get(lc.address)
                if holder is not None and holder[0] != name and self._address_freed(holder[1], config):
                    continue  # renamed: the new name takes the socket over below
                handle = ListenerHandle(lc, runtimes[name])
                handle.listener = Listener(name, lc.address, self._conn_factory(handle), self.reuse_port,
                                           path=f"listeners[{i}].address")
                bound[name] = handle
        except ConfigError as exc:
            for h in bound.values():
                if h.listener is not None:
                    h.listener.close_socket()
            raise ConfigErrors([exc]) from None
        # Commit.
        old_clusters = self.clusters
        for name, c in list(clusters.items()):
            prev = old_clusters.get(name)
            if prev is None:
                continue
            if prev.config == c.config or _same_but_endpoints(prev.config, c.config):
                if prev.config != c.config:
                    self._update_endpoints(prev, c, grace)
                prev.lb = c.lb if prev.config.lb != c.config.lb else prev.lb
                prev.protocol = c.protocol
                prev.config = c.config
                clusters[name] = prev  # keep its pools, counters and health
        old_handles = self.listeners
        new_handles: dict[str, ListenerHandle] = {}
        by_addr = {h.config.address: h for h in old_handles.values()}
        for name, lc in new_specs:
            new_rt = runtimes[name]
            prev_h = old_handles.get(name)
            if prev_h is None or prev_h.config.address != lc.address:
                if name in bound:
                    h = bound[name]
                    self._start_listener(h)
                else:  # the address was served under another name: take its socket over
                    h = by_addr[lc.address]
                    self._switch(h, new_rt, lc, grace)
                new_handles[name] = h
                continue
            self._switch(prev_h, new_rt, lc, grace)
            new_handles[name] = prev_h
        kept = {id(h) for h in new_handles.values()}
        for name, h in old_handles.items():
            if id(h) in kept:
                continue
            if h.listener is not None:
                h.listener.stop_accepting()
            self._retire_runtime(h, grace)
            log.info("listener %s (%s) removed; its connections drain for %.1f s", name, h.config.address, grace)
        self.listeners = new_handles
        self.catalogs, self.clusters, self.config = cats, clusters, config
        self.config_version += 1
        for name, c in old_clusters.items():
            if clusters.get(name) is not c:
                loop.call_later(grace + 1.0, c.close)
        self.host.pm.hook.sofamesh_config_updated(snapshot=config)

    def _address_freed(self, holder: ListenerHandle, config: ProxyConfig) -> bool:
        """True when the listener holding an address is leaving it in ``config`` (renamed)."""
        holder_name = next((n for n, h in self.listeners.items() if h is holder), None)
        for i, lc in enumerate(config.listeners):
            if (lc.name or f"listener{i}") == holder_name:
                return lc.address != holder.config.address
        return True

    def _conn_factory(self, handle: ListenerHandle) -> Callable[[], DownstreamConnection]:
        assert self.loop is not None
        lp = self.loop

        def factory() -> DownstreamConnection:
            return DownstreamConnection(handle.rt, lp)

        return factory

    def _start_listener(self, h: ListenerHandle) -> None:
        assert self.loop is not None and h.listener is not None
        task = self.loop.create_task(h.listener.start(self.loop, ssl=self._server_ssl(h.config)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _switch(self, h: ListenerHandle, new_rt: ListenerRuntime, lc: ListenerConfig, grace: float) -> None:
        """Requests that start from now on use ``new_rt``. Connections whose codec still fits (same
        address, protocols, limits and TLS) are rebound to it and never closed; otherwise they drain
        for ``grace`` (new connections get ``new_rt``)."""
        old_rt = h.rt
        new_rt.stats = old_rt.stats  # counters continue across reloads
        new_rt.rpc_stats = old_rt.rpc_stats
        if _same_codecs(h.config, lc):
            for conn in list(old_rt.connections):
                conn.rebind(new_rt)
            h.old.append(old_rt)
        else:
            self._retire_runtime(h, grace)
        h.rt = new_rt
        h.config = lc
        self._retire(h)

    def _retire_runtime(self, h: ListenerHandle, grace: float) -> None:
        """New connections stop reaching ``h.rt``; its connections drain, then are cut after ``grace``."""
        assert self.loop is not None
        loop = self.loop
        old_rt = h.rt
        old_rt.draining = True
        h.old.append(old_rt)
        for conn in list(old_rt.connections):
            conn.drain()

        def cut() -> None:
            left = list(old_rt.connections)
            for conn in left:
                conn.abort()
            if left:
                log.info("listener %s: %d draining connection(s) cut after %.1f s", old_rt.name, len(left), grace)
            loop.call_soon(self._retire, h)

        loop.call_later(grace, cut)

    def _update_endpoints(self, prev: Cluster, fresh: Cluster, grace: float) -> None:
        """Put ``fresh``'s endpoints into ``prev`` in place; pools of removed endpoints close later."""
        assert self.loop is not None
        by_addr = {e.address: e for e in prev.endpoints}
        merged = []
        for e in fresh.endpoints:
            old = by_addr.pop(e.address, None)
            if old is not None:
                old.weight = e.weight
                old.labels = e.labels
                merged.append(old)
            else:
                merged.append(e)
        prev.endpoints[:] = merged
        gone = set(by_addr)
        if gone:
            def close_gone() -> None:
                still = {e.address for e in prev.endpoints}
                for key in [k for k in prev.pools if k[0] in gone and k[0] not in still]:
                    prev.pools.pop(key).close()

            self.loop.call_later(grace + 1.0, close_gone)


def _same_but_endpoints(a: ClusterConfig, b: ClusterConfig) -> bool:
    return a.model_copy(update={"endpoints": []}) == b.model_copy(update={"endpoints": []})


def _same_codecs(a: ListenerConfig, b: ListenerConfig) -> bool:
    """Whether a connection accepted under ``a`` can carry on under ``b``."""
    return (a.address, a.protocols, a.limits, a.tls) == (b.address, b.protocols, b.limits, b.tls)


__all__ = ["Server"]
