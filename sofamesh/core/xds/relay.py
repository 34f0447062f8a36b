"""The xDS stream of a ``--workers N`` process: one client in the parent, every config it applies
relayed to each worker over a pipe, so N workers hold one stream to the management server (not N)
and apply the same config versions in the same order.

Parent side: :class:`Relay` stands in for the ``Server`` the xDS client feeds. Each applied config
gets the next relay version and is written, pickled and length-prefixed, to every worker's pipe
(the pipes are the parent's own, to its own forks). Worker side: :func:`follow` reads its pipe and
applies each config with ``Server.apply``; its ``/config_dump`` and ``/stats`` show the relay
version it applied (``xds.relay_version``), so the parent's admin can show each worker's version.
A config a worker cannot apply is logged there and leaves it on its previous version, visible as a
version behind the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from sofamesh.core.errors import MeshError

if TYPE_CHECKING:
    from sofamesh.core.config.model import ProxyConfig
    from sofamesh.core.server_view import ServerView
    from sofamesh.core.xds.client import XdsClient

log = logging.getLogger("sofamesh.xds.relay")
_HEAD = struct.Struct("!I")


class Relay:
    """What the parent's xDS client applies its configs to."""

    # The parent's admin aggregates the workers' stats in its own shape: Pilot's dashboard is not
    # pointed at it (docs/dashboard.md), so no ``sofamesh.admin`` metadata is sent.
    admin_bound: str | None = None

    def __init__(self, config: ProxyConfig, protocols: Collection[str], pipes: Sequence[int]) -> None:
        self.config = config
        self.config_version = 0
        self._protocols = frozenset(protocols)
        self._pipes = list(pipes)
        self._writers: list[asyncio.WriteTransport] = []
        self.client: XdsClient | None = None
        self._opened = 0.0

    @property
    def settled(self) -> bool:
        """The first complete config arrived, or ``initial_fetch_timeout_ms`` passed (as ``attach``)."""
        if self.client is None:
            return False
        waited = time.monotonic() - self._opened
        return self.client.synced.is_set() or waited * 1000 >= self.client.xds.initial_fetch_timeout_ms

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._opened = time.monotonic()
        for fd in self._pipes:
            transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(fd, "wb", buffering=0))
            self._writers.append(transport)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        for w in self._writers:
            w.close()
        self._writers = []

    def protocol_names(self) -> Collection[str]:
        return self._protocols

    def apply(self, config: ProxyConfig) -> None:
        self.config = config
        self.config_version += 1
        # sent once the client has recorded the versions this config stands for (right after this call)
        asyncio.get_running_loop().call_soon(self._send, self.config_version, config)

    def _send(self, version: int, config: ProxyConfig) -> None:
        xds = self.client.describe() if self.client is not None else {}
        versions = {t: s["version"] for t, s in xds.get("types", {}).items()}
        synced = self.client is not None and self.client.synced.is_set()  # complete: a taking-over worker serves it
        body = pickle.dumps((version, versions, config, synced), protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEAD.pack(len(body)) + body
        for w in self._writers:
            if not w.is_closing():
                w.write(frame)

    def describe(self) -> dict[str, Any]:
        return {"relay_version": self.config_version, **(self.client.describe() if self.client else {})}


class Relayed:
    """A worker's config source: what it last applied from the parent's relay."""

    def __init__(self, server: ServerView) -> None:
        self.server = server
        self.relay_version = 0
        self.xds_versions: dict[str, str] = {}
        self.failed: str | None = None
        self.synced = asyncio.Event()  # a complete config (the parent's client was synced) is applied
        self._task: asyncio.Task[None] | None = None

    async def wait_synced(self, config: ProxyConfig) -> bool:
        """Until a complete config is applied, or ``initial_fetch_timeout_ms`` passed (False)."""
        timeout = config.xds.initial_fetch_timeout_ms / 1000.0 if config.xds is not None else 0.0
        try:
            await asyncio.wait_for(self.synced.wait(), timeout or None)
        except TimeoutError:
            return False
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "relayed": True,
            "relay_version": self.relay_version,
            "versions": self.xds_versions,
            "last_error": self.failed,
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                size = _HEAD.unpack(await reader.readexactly(_HEAD.size))[0]
                version, versions, config, synced = pickle.loads(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                log.warning("worker %s: the parent's relay closed", self.server.worker)
                return
            try:
                if config != self.server.config:
                    self.server.apply(config)
            except MeshError as exc:
                self.failed = f"relay version {version}: {exc}"
                log.error("worker %s: cannot apply relay version %d: %s", self.server.worker, version, exc)
                continue
            self.relay_version, self.xds_versions, self.failed = version, versions, None
            self.server.ready = True
            if synced:
                self.synced.set()


async def follow(server: ServerView, fd: int) -> Relayed:
    """Apply every config the parent relays on ``fd`` (a worker's side of its pipe)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    relayed = Relayed(server)
    relayed._task = loop.create_task(relayed._follow(reader))
    server.xds = relayed
    return relayed


__all__ = ["Relay", "Relayed", "follow"]
