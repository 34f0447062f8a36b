"""Server: builds the runtime from a config, binds listeners and the admin port, drains on stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import Any

from sofamesh.core.codec import CodecFactory, CodecLimits
from sofamesh.core.config.check import Catalogs, build_filters, resolve
from sofamesh.core.config.model import ListenerConfig, ProxyConfig
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

            def factory(h: ListenerHandle = handle, lp: asyncio.AbstractEventLoop = self.loop) -> DownstreamConnection:
                return DownstreamConnection(h.rt, lp)

            handle.listener = Listener(name, lc.address, factory, self.reuse_port, path=f"listeners[{i}].address")
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
        """Swap in a new config: requests that start from now on (on new and existing connections) use
        it; requests in flight finish on the objects they started with. No connection is closed.
        Listener addresses must stay the same (new addresses need a restart in this version)."""
        old_addrs = {h.config.address for h in self.listeners.values()}
        new_addrs = {lc.address for lc in config.listeners}
        if old_addrs != new_addrs:
            raise ConfigErrors([ConfigError("listeners", "a reload cannot add or remove listener addresses "
                                                         f"(serving {sorted(old_addrs)}, got {sorted(new_addrs)})")])
        cats, clusters, runtimes = self._build(config)
        by_addr = {h.config.address: h for h in self.listeners.values()}
        new_handles: dict[str, ListenerHandle] = {}
        for i, lc in enumerate(config.listeners):
            name = lc.name or f"listener{i}"
            h = by_addr[lc.address]
            old_rt = h.rt
            new_rt = runtimes[name]
            new_rt.stats = old_rt.stats  # counters continue across reloads
            new_rt.rpc_stats = old_rt.rpc_stats
            for conn in list(old_rt.connections):
                conn.rebind(new_rt)
            h.old.append(old_rt)
            h.rt = new_rt
            h.config = lc
            self._retire(h)
            new_handles[name] = h
        old_clusters = self.clusters
        for name, c in list(clusters.items()):
            prev = old_clusters.get(name)
            if prev is not None and prev.config == c.config:
                prev.lb = c.lb
                prev.protocol = c.protocol
                clusters[name] = prev  # same endpoints: keep its pools, counters and health
        self.listeners = new_handles
        self.catalogs, self.clusters, self.config = cats, clusters, config
        self.config_version += 1
        for name, c in old_clusters.items():
            if clusters.get(name) is not c:
                self.loop.call_later(self.config.drain_timeout_ms / 1000.0 + 1.0, c.close)  # type: ignore[union-attr]
        self.host.pm.hook.sofamesh_config_updated(snapshot=config)


__all__ = ["Server"]
