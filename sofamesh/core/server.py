"""Server: one data-plane process's lifecycle: start, serve, reload, drain on stop.

What it composes, each in a module of its own: building the objects a config needs
(``core/build.py``), owning the listeners (``core/listeners.py``) and applying an update
(``core/update.py``). Admin, the xDS client and plugins see it as a ``ServerView``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from sofamesh.core.build import build_runtime, plugin_rows, proxy_host
from sofamesh.core.errors import ConfigError, ConfigErrors, MeshError
from sofamesh.core.listeners import ListenerHandle, ListenerSet
from sofamesh.core.overload import OverloadManager
from sofamesh.core.plugin_host import PluginHost
from sofamesh.core.reload import PluginSources
from sofamesh.core.update import apply_update

if TYPE_CHECKING:
    from sofamesh.core.admin import AdminServer
    from sofamesh.core.config.check import Catalogs
    from sofamesh.core.config.model import ProxyConfig
    from sofamesh.core.server_view import ConfigSource, HotUpgradeView
    from sofamesh.core.upstream.cluster import Cluster

log = logging.getLogger("sofamesh.server")


class Server:
    """One data-plane process: listeners, clusters, admin."""

    def __init__(self, config: ProxyConfig, host: PluginHost | None = None, *, reuse_port: bool = False,
                 admin_address: str | None = None, worker: int | None = None) -> None:
        self.config = config
        self.host = host or proxy_host()
        self.reuse_port = reuse_port
        self.worker = worker
        self.admin_address = admin_address if admin_address is not None else (
            config.admin.address if config.admin else None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.catalogs: Catalogs | None = None
        self.clusters: dict[str, Cluster] = {}
        self._listeners: ListenerSet | None = None
        self.admin: AdminServer | None = None
        self.ready = False
        self.stopping = False
        self.cut = 0
        self.config_version = 0
        self.config_path: str | None = None
        self.plugin_sources = PluginSources(self.host)
        self._stop = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self.xds: ConfigSource | None = None  # the xDS client when the config comes from xDS
        self.hot_upgrade: HotUpgradeView | None = None  # the upgrade socket's owner (``core/upgrade.py``)
        self._held_admin: socket.socket | None = None
        self.overload: OverloadManager | None = None  # config.overload_manager (``apply`` follows it)

    @property
    def listeners(self) -> dict[str, ListenerHandle]:
        """Every listener by name (empty before ``start``)."""
        return self._listeners.handles if self._listeners is not None else {}

    @property
    def admin_bound(self) -> str | None:
        sock = self.admin.http.socket if self.admin is not None else None
        sock = sock or self._held_admin  # a hot upgrade's successor, before its admin answers
        if sock is None:
            return None
        host, port = sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def plugin_rows(self) -> list[dict[str, str]]:
        return plugin_rows(self.catalogs)

    def protocol_names(self) -> Collection[str]:
        return self.host.available()

    # -- running -----------------------------------------------------------------------------------
    async def start(self, inherited: Mapping[str, tuple[str, socket.socket]] | None = None,
                    admin_sock: socket.socket | None = None) -> None:
        """Build, bind and serve. ``inherited`` and ``admin_sock``: listening sockets handed over by
        a hot upgrade (listener name -> (address, socket)), served instead of binding new ones."""
        self.loop = asyncio.get_running_loop()
        built = build_runtime(self.config, self.host, self.loop)
        self.catalogs, self.clusters = built.catalogs, built.clusters
        for c in self.clusters.values():
            c.start()
        self._listeners = ListenerSet(self.loop, self.reuse_port)
        await self._listeners.start(self.config, built.listeners, inherited)
        if self.admin_address:
            from sofamesh.core.admin import AdminServer

            self.admin = AdminServer(self, self.admin_address)
            if inherited is None:
                await self.admin.start(admin_sock)
            else:
                self._held_admin = admin_sock  # shared with the old process: answers from ``release``
        self.config_version = 1
        for r in self.host.pm.hook.sofamesh_startup(server=self):
            if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                await r
        self._sweeper = self.loop.create_task(self._sweep())
        if self.config.overload_manager is not None and self.overload is None:  # (a config applied meanwhile)
            self.overload = OverloadManager(self.config.overload_manager, self._listeners)
            self.overload.start(self.loop)
        self.plugin_sources.snapshot()
        self.ready = True

    def hold_listeners(self) -> bool:
        """Listeners a config adds from now on are bound but accept only at ``release``, as Envoy's
        init manager keeps a starting proxy's listeners closed until its initial xDS fetch is
        complete. False when they are held already (a hot upgrade's successor releases them)."""
        if self._listeners is None or self._listeners.holding:
            return False
        self._listeners.holding = True
        return True

    async def release(self) -> None:
        """A hot upgrade's successor whose config is complete: accept on the listeners (and admin)
        ``start`` held back. Nothing to do for a process that started on its own."""
        if self._listeners is not None and self._listeners.holding:
            await self._listeners.release()
            if self.admin is not None and self.admin.http.socket is None:
                sock, self._held_admin = self._held_admin, None
                await self.admin.start(sock)

    async def _sweep(self) -> None:
        assert self.loop is not None and self._listeners is not None
        while True:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            for c in self.clusters.values():
                for pool in list(c.pools.values()):
                    pool.sweep(now)
            self._listeners.sweep(now)

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
        return self._listeners.active_requests() if self._listeners is not None else 0

    async def shutdown(self) -> int:
        """Stop accepting, let in-flight requests finish for the grace period, then cut the rest."""
        assert self.loop is not None and self._listeners is not None
        listeners = self._listeners
        self.stopping = True
        self.ready = False
        if self.xds is not None:
            await self.xds.stop()  # no config change while draining
        listeners.drain()
        deadline = self.loop.time() + self.config.drain_timeout_ms / 1000.0
        while self.loop.time() < deadline and self.active_requests() > 0:
            await asyncio.sleep(0.05)
        cut = self.active_requests()
        listeners.abort_all()
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
        if self.overload is not None:
            self.overload.stop()
        listeners.close_filters()
        for c in self.clusters.values():
            c.close()
        if self.admin is not None:
            await self.admin.stop()
        await listeners.wait_closed()
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

    def apply(self, config: ProxyConfig) -> None:
        """Swap in a new config atomically; nothing changes when it raises ``ConfigErrors``
        (what is kept and what drains: ``core/update.py``)."""
        assert self.loop is not None and self._listeners is not None
        built = build_runtime(config, self.host, self.loop)
        self.clusters = apply_update(self._listeners, self.clusters, built, config, self.loop)
        self.catalogs, self.config = built.catalogs, config
        self.config_version += 1
        self._overload_settings(config)
        self.host.pm.hook.sofamesh_config_updated(snapshot=config)

    def _overload_settings(self, config: ProxyConfig) -> None:
        """The overload manager follows the applied config: started, given new settings, or
        closed (every action off) when the config no longer has one."""
        assert self.loop is not None and self._listeners is not None
        wanted = config.overload_manager
        if wanted is None:
            if self.overload is not None:
                self.overload.close()
                self.overload = None
        elif self.overload is None:
            if self.ready:  # before that, ``start`` makes it
                self.overload = OverloadManager(wanted, self._listeners)
                self.overload.start(self.loop)
        else:
            self.overload.reconfigure(wanted)


__all__ = ["Server"]
