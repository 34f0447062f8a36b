"""Owning listeners: each bound socket, the runtime its new connections get, and the replaced
runtimes still draining. Binds, switches, drains and closes; decides nothing about configs."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING

from sofamesh.core.build import listener_name
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.net.listener import Listener
from sofamesh.core.net.tls import TlsSniffer, TlsSource
from sofamesh.core.proxy.runtime import ListenerRuntime, ServedConnection
from sofamesh.core.proxy.slow_peers import PeerTimeouts, expire
from sofamesh.core.proxy.sni_tls import ServerNames, SniTls
from sofamesh.core.proxy.stream_manager import DownstreamConnection

if TYPE_CHECKING:
    from sofamesh.core.config.model import ListenerConfig, ProxyConfig

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


def _server_ssl(lc: ListenerConfig, i: int = 0) -> ssl.SSLContext | None:
    """The context the listening socket does TLS with; None when it takes plaintext too (its
    connections then start with a ``TlsSniffer``)."""
    if lc.tls is None or lc.tls.plaintext:
        return None
    return TlsSource(lc.tls, server=True, path=f"listeners[{i}].tls").server_context()


def same_codecs(a: ListenerConfig, b: ListenerConfig) -> bool:
    """Whether a connection accepted under ``a`` can carry on under ``b``."""
    return (a.address, a.protocols, a.limits, a.tls, a.tls_servers) == (b.address, b.protocols, b.limits, b.tls,
                                                                         b.tls_servers)


class ListenerSet:
    """Every listener of one process, by name."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reuse_port: bool) -> None:
        self.loop = loop
        self.reuse_port = reuse_port
        self.handles: dict[str, ListenerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # A hot upgrade's successor: the listening sockets the old process handed over that no
        # listener serves yet (an xDS config names its listeners later), and while ``holding``, the
        # listeners built but not accepting until ``release`` (the config is complete).
        self.inherited: dict[str, tuple[str, socket.socket]] = {}
        self.holding = False
        self._held: list[ListenerHandle] = []

    # -- starting ----------------------------------------------------------------------------------
    def _handle(self, i: int, name: str, lc: ListenerConfig, rt: ListenerRuntime) -> ListenerHandle:
        """A handle with its socket bound (``ConfigError`` naming the address when it cannot be), or
        serving the socket a hot upgrade handed over for this name and address."""
        handle = ListenerHandle(lc, rt)
        got = self.inherited.get(name)
        sock = None
        if got is not None and got[0] == lc.address:
            sock = self.inherited.pop(name)[1]
        handle.listener = Listener(name, lc.address, self._protocol_factory(handle, lc, i), self.reuse_port,
                                   path=f"listeners[{i}].address", sock=sock)
        return handle

    def _protocol_factory(self, handle: ListenerHandle, lc: ListenerConfig,
                          i: int = 0) -> Callable[[], asyncio.Protocol]:
        factory: Callable[[], asyncio.Protocol] = self._conn_factory(handle)
        if lc.tls is not None and lc.tls.plaintext:
            ctx = TlsSource(lc.tls, server=True, path=f"listeners[{i}].tls").server_context()
            factory = partial(TlsSniffer, self.loop, ctx, factory)
        elif lc.tls_servers:  # the certificate is chosen by the ClientHello's server name
            factory = partial(SniTls, self.loop, ServerNames(lc.tls_servers, f"listeners[{i}].tls_servers"), factory)
        return factory

    async def start(self, config: ProxyConfig, runtimes: dict[str, ListenerRuntime],
                    inherited: Mapping[str, tuple[str, socket.socket]] | None = None) -> None:
        """Bind every listener of ``config`` and start accepting. ``inherited``: listening sockets a
        hot upgrade handed over, by listener name, with their address; a listener of the same name
        and address (now or in a later config) serves on that socket instead of binding a new one,
        and no listener accepts before ``release``."""
        if inherited is not None:
            self.inherited = dict(inherited)
            self.holding = True
        for i, lc in enumerate(config.listeners):
            name = listener_name(i, lc)
            self.handles[name] = self._handle(i, name, lc, runtimes[name])
        for i, h in enumerate(self.handles.values()):
            assert h.listener is not None
            if self.holding:
                self._held.append(h)
            else:
                await h.listener.start(self.loop, ssl=_server_ssl(h.config, i))

    async def release(self) -> None:
        """Start accepting on the listeners held back while the config was being completed; close
        the handed-over sockets no listener took (the old process still holds its own)."""
        self.holding = False
        held, self._held = self._held, []
        current = {id(h) for h in self.handles.values()}
        for h in held:
            if id(h) in current and h.listener is not None:
                await h.listener.start(self.loop, ssl=_server_ssl(h.config))
        for _address, sock in self.inherited.values():
            sock.close()
        self.inherited = {}

    def _conn_factory(self, handle: ListenerHandle) -> Callable[[], DownstreamConnection]:
        lp = self.loop

        def factory() -> DownstreamConnection:
            return DownstreamConnection(handle.rt, lp)

        return factory

    def _start_listener(self, h: ListenerHandle) -> None:
        assert h.listener is not None
        if self.holding:
            self._held.append(h)
            return
        task = self.loop.create_task(h.listener.start(self.loop, ssl=_server_ssl(h.config)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- switching to a new config ---------------------------------------------------------------
    def bind_new(self, config: ProxyConfig, runtimes: dict[str, ListenerRuntime]) -> dict[str, ListenerHandle]:
        """Bind the sockets ``config`` needs that are not bound yet. Nothing serving changes; on a
        bind failure every socket bound here is closed again and ``ConfigErrors`` is raised."""
        bound: dict[str, ListenerHandle] = {}
        held = {h.config.address: (n, h) for n, h in self.handles.items()}
        try:
            for i, lc in enumerate(config.listeners):
                name = listener_name(i, lc)
                old = self.handles.get(name)
                if old is not None and old.config.address == lc.address:
                    continue
                holder = held.get(lc.address)
                if holder is not None and holder[0] != name and self._address_freed(holder[1], config):
                    continue  # renamed: the new name takes the socket over in switch_to()
                bound[name] = self._handle(i, name, lc, runtimes[name])
        except ConfigError as exc:
            for h in bound.values():
                if h.listener is not None:
                    h.listener.close_socket()
            raise ConfigErrors([exc]) from None
        return bound

    def switch_to(self, config: ProxyConfig, runtimes: dict[str, ListenerRuntime],
                  bound: dict[str, ListenerHandle], grace: float) -> None:
        """Commit: every listener of ``config`` serves its new runtime; removed ones drain."""
        old_handles = self.handles
        new_handles: dict[str, ListenerHandle] = {}
        by_addr = {h.config.address: h for h in old_handles.values()}
        for i, lc in enumerate(config.listeners):
            name = listener_name(i, lc)
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
                h.listener.close_socket()  # one that never started (held for a hot upgrade)
            self._retire_runtime(h, grace)
            log.info("listener %s (%s) removed; its connections drain for %.1f s", name, h.config.address, grace)
        self.handles = new_handles

    def _address_freed(self, holder: ListenerHandle, config: ProxyConfig) -> bool:
        """True when the listener holding an address is leaving it in ``config`` (renamed)."""
        holder_name = next((n for n, h in self.handles.items() if h is holder), None)
        for i, lc in enumerate(config.listeners):
            if listener_name(i, lc) == holder_name:
                return lc.address != holder.config.address
        return True

    def _switch(self, h: ListenerHandle, new_rt: ListenerRuntime, lc: ListenerConfig, grace: float) -> None:
        """Requests that start from now on use ``new_rt``. Connections whose codec still fits (same
        address, protocols, limits and TLS) are rebound to it and never closed; otherwise they drain
        for ``grace`` (new connections get ``new_rt``)."""
        old_rt = h.rt
        new_rt.stats = old_rt.stats  # counters continue across reloads
        new_rt.rpc_stats = old_rt.rpc_stats
        if same_codecs(h.config, lc):
            for conn in list(old_rt.connections):
                conn.rebind(new_rt)
            h.old.append(old_rt)
        else:
            self._retire_runtime(h, grace)
        tls_changed = h.config.tls != lc.tls or h.config.tls_servers != lc.tls_servers
        h.rt = new_rt
        h.config = lc
        self._retire(h)
        if tls_changed and h.listener is not None:  # TLS is set up when a socket accepts: serve it anew
            task = self.loop.create_task(h.listener.serve_anew(self.loop, self._protocol_factory(h, lc),
                                                               ssl=_server_ssl(lc)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _retire_runtime(self, h: ListenerHandle, grace: float) -> None:
        """New connections stop reaching ``h.rt``; its connections drain, then are cut after ``grace``."""
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

    @staticmethod
    def _retire(h: ListenerHandle) -> None:
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

    # -- periodic work and shutdown ---------------------------------------------------------------
    def runtimes(self) -> Iterator[ListenerRuntime]:
        """Every runtime still serving a connection: current and replaced ones."""
        for h in self.handles.values():
            yield h.rt
            yield from h.old

    def sweep(self, now: float) -> None:
        """Close replaced runtimes' filters when they are idle, and apply each listener's slow-peer
        timeouts to its connections (``core/proxy/slow_peers.py``)."""
        for h in self.handles.values():
            self._retire(h)
            timeouts = PeerTimeouts(h.config)
            for rt in (h.rt, *h.old):
                for conn in list(rt.connections):
                    if isinstance(conn, DownstreamConnection):
                        expire(conn, now, timeouts)

    def pause_accepting(self) -> list[str]:
        """Stop accepting on every listener that accepts now (the overload manager); new
        connections wait in the backlog. Returns their names, for ``resume_accepting``."""
        paused = []
        for name, h in self.handles.items():
            if h.listener is not None and h.listener.serving:
                h.listener.pause_accepting()
                paused.append(name)
        return paused

    def resume_accepting(self, names: list[str]) -> None:
        """Accept again on the listeners ``pause_accepting`` stopped (those still here)."""
        for name in names:
            h = self.handles.get(name)
            if h is not None and h.listener is not None and not h.listener.serving:
                self._start_listener(h)

    def active_requests(self) -> int:
        # A reload hands the same counters to the new runtime: count each listener's once.
        return sum(h.rt.stats.downstream_rq_active for h in self.handles.values())

    def drain(self) -> None:
        """Stop accepting; idle connections close, busy ones finish their current streams."""
        for h in self.handles.values():
            if h.listener is not None:
                h.listener.stop_accepting()
        conns: list[ServedConnection] = []
        for rt in self.runtimes():
            rt.draining = True
            conns.extend(rt.connections)
        for conn in conns:
            conn.drain()

    def abort_all(self) -> None:
        for rt in list(self.runtimes()):
            for conn in list(rt.connections):
                conn.abort()

    def close_filters(self) -> None:
        for h in self.handles.values():
            for rt in (h.rt, *h.old):
                rt.close_filters()
            h.old = []

    async def wait_closed(self) -> None:
        for h in self.handles.values():
            if h.listener is not None:
                await h.listener.wait_closed()


__all__ = ["ListenerHandle", "ListenerSet", "same_codecs"]
