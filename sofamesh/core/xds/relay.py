"""The xDS stream of a ``--workers N`` process: one client in the parent, every config it applies
relayed to each worker over a pipe, so N workers hold one stream to the management server (not N)
and apply the same config versions in the same order.

Parent side: :class:`Relay` stands in for the ``Server`` the xDS client feeds. Each applied config
gets the next relay version and is written, pickled and length-prefixed, to every worker's pipe
(the pipes are the parent's own, to its own forks). Worker side: :func:`follow` reads its pipe and
applies each config with ``Server.apply``; its ``/config_dump`` and ``/stats`` show the relay
version it applied (``xds.relay_version``), so the parent's admin can show each worker's version.

Secrets the client fetched over ADS (a gateway's ``credentialName``) travel in each frame, and a
worker puts them in its own secret store before it applies the config that names them; a rotated
one is relayed with the unchanged config, so every worker's next handshake gets it. (The agent's
``default`` / ``ROOTCA`` have their own pipe: ``core/security/secret_relay.py``.)

Each worker answers every relay version on a second pipe: applied, or the error (a listener port
another process holds, say: what only a worker binds). ``Relay.apply`` returns a future the xDS
client awaits before it answers the management server: it ACKs once every worker applied the
version and NACKs with the workers' errors otherwise; a worker that does not answer within
``ANSWER_TIMEOUT_S`` counts as failed, named. After a failure the previous config is relayed again
(as the next relay version), so the workers that did apply it go back: every worker serves what
the management server was told is applied, as one Envoy process would.
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
from sofamesh.core.net.secrets import DEFAULT_CERT, PROCESS_SECRETS, ROOT_CA, Secret

if TYPE_CHECKING:
    from sofamesh.core.config.model import ProxyConfig
    from sofamesh.core.server_view import ServerView
    from sofamesh.core.xds.client import XdsClient

log = logging.getLogger("sofamesh.xds.relay")
_HEAD = struct.Struct("!I")
ANSWER_TIMEOUT_S = 10.0
"""How long the parent waits for a worker's answer to a relay version before counting it failed."""


def fetched_secrets() -> dict[str, Secret]:
    """The process's secrets but the agent's: those the xDS client fetched over ADS."""
    out = {}
    for name in PROCESS_SECRETS.names():
        secret = PROCESS_SECRETS.get(name)
        if secret is not None and name not in (DEFAULT_CERT, ROOT_CA):
            out[name] = secret
    return out


class _Pending:
    """One relay version awaiting its workers' answers."""

    __slots__ = ("errors", "future", "previous", "timer", "waiting")

    def __init__(self, future: asyncio.Future[str | None], waiting: set[int], previous: ProxyConfig) -> None:
        self.future = future
        self.waiting = waiting
        self.previous = previous
        self.errors: dict[int, str] = {}
        self.timer: asyncio.TimerHandle | None = None


class Relay:
    """What the parent's xDS client applies its configs to."""

    # The parent's admin aggregates the workers' stats in its own shape: Pilot's dashboard is not
    # pointed at it (docs/dashboard.md), so no ``sofamesh.admin`` metadata is sent.
    admin_bound: str | None = None

    def __init__(
        self,
        config: ProxyConfig,
        protocols: Collection[str],
        pipes: Sequence[int],
        answers: Sequence[int],
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.config_version = 0
        self._protocols = frozenset(protocols)
        self._pipes = list(pipes)
        self._answer_fds = list(answers)
        self._writers: list[asyncio.WriteTransport] = []
        self._readers: list[asyncio.Task[None]] = []
        self._answer_pipes: list[asyncio.ReadTransport] = []
        self._alive = set(range(len(self._answer_fds)))  # workers whose answer pipe is open
        self._following: set[int] = set()  # workers that read the relay (a starting one answers late)
        self._pending: dict[int, _Pending] = {}
        self.answer_timeout_s = answer_timeout_s
        self.rejected = 0  # relay versions some worker failed to apply
        self.last_rejection: str | None = None
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
        for index, fd in enumerate(self._answer_fds):
            reader = asyncio.StreamReader()
            pipe, _ = await loop.connect_read_pipe(
                lambda r=reader: asyncio.StreamReaderProtocol(r),  # type: ignore[misc]
                os.fdopen(fd, "rb", buffering=0),
            )
            self._answer_pipes.append(pipe)
            self._readers.append(loop.create_task(self._answers(index, reader)))

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        for w in self._writers:
            w.close()
        self._writers = []
        for t in self._readers:
            t.cancel()
        for p in self._answer_pipes:
            p.close()
        self._readers, self._answer_pipes = [], []
        for version in list(self._pending):
            self._settle(version, "the relay stopped")

    async def _answers(self, index: int, reader: asyncio.StreamReader) -> None:
        """One worker's answers: ``(relay version, error or None)`` per version it read."""
        while True:
            try:
                size = _HEAD.unpack(await reader.readexactly(_HEAD.size))[0]
                version, error = pickle.loads(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                break
            if version == 0:  # the worker follows the relay from now on
                self._following.add(index)
                continue
            p = self._pending.get(version)
            if p is None or index not in p.waiting:
                continue
            p.waiting.discard(index)
            if error is not None:
                p.errors[index] = error
            if not p.waiting:
                self._settle(version)
        # the worker exited (its process is ending or handing over): no longer waited for
        log.warning("relay: worker %d's answer pipe closed", index)
        self._alive.discard(index)
        for version, p in list(self._pending.items()):
            p.waiting.discard(index)
            if not p.waiting:
                self._settle(version)

    def _expire(self, version: int) -> None:
        p = self._pending.get(version)
        if p is None:
            return
        for index in p.waiting & self._following:
            p.errors[index] = f"no answer within {self.answer_timeout_s:g} s"
        p.waiting -= self._following
        if p.waiting:  # still starting (their start has its own bound: supervise's): wait on
            p.timer = asyncio.get_running_loop().call_later(self.answer_timeout_s, self._expire, version)
            return
        self._settle(version)

    def _settle(self, version: int, error: str | None = None) -> None:
        p = self._pending.pop(version)
        if p.timer is not None:
            p.timer.cancel()
        if error is None and p.errors:
            error = "; ".join(f"worker {i}: {e}" for i, e in sorted(p.errors.items()))
        if error is not None and version == self.config_version and self._writers:
            # the workers that applied it go back: every worker serves the config last ACKed
            self.rejected += 1
            self.last_rejection = f"relay version {version}: {error}"
            self.config = p.previous
            self.config_version += 1
            self._send(self.config_version, p.previous)
        if not p.future.done():
            p.future.set_result(error)

    def protocol_names(self) -> Collection[str]:
        return self._protocols

    def apply(self, config: ProxyConfig) -> asyncio.Future[str | None]:
        """Relay ``config``; the future gives ``None`` once every worker applied it, else the errors."""
        loop = asyncio.get_running_loop()
        previous, self.config = self.config, config
        self.config_version += 1
        version = self.config_version
        p = _Pending(loop.create_future(), set(self._alive), previous)
        self._pending[version] = p
        self._send(version, config)
        if p.waiting:
            p.timer = loop.call_later(self.answer_timeout_s, self._expire, version)
        else:
            self._settle(version)
        return p.future

    def secrets_changed(self) -> asyncio.Future[str | None]:
        """A secret fetched over ADS changed while the config did not: relay the config again with it."""
        return self.apply(self.config)

    def _send(self, version: int, config: ProxyConfig) -> None:
        versions: dict[str, str] = {}
        complete = False  # a taking-over worker serves only a complete config
        if self.client is not None:
            versions = {t: s["version"] for t, s in self.client.describe().get("types", {}).items()}
            if config is not self.client.applying_config:  # a config going back: what the client holds
                complete = self.client.synced.is_set()
            else:  # the config being applied: the versions and completeness it stands for
                versions[self.client.applying[0]] = self.client.applying[1]
                complete = self.client.applying_complete
        frame_body = (version, versions, config, complete, fetched_secrets())
        body = pickle.dumps(frame_body, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEAD.pack(len(body)) + body
        for w in self._writers:
            if not w.is_closing():
                w.write(frame)

    def describe(self) -> dict[str, Any]:
        return {
            "relay_version": self.config_version,
            "relay_rejected": self.rejected,
            "relay_last_rejection": self.last_rejection,
            **(self.client.describe() if self.client else {}),
        }


class Relayed:
    """A worker's config source: what it last applied from the parent's relay."""

    def __init__(self, server: ServerView, answers: asyncio.WriteTransport) -> None:
        self.server = server
        self._answers = answers
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

    def _answer(self, version: int, error: str | None) -> None:
        if not self._answers.is_closing():
            body = pickle.dumps((version, error), protocol=pickle.HIGHEST_PROTOCOL)
            self._answers.write(_HEAD.pack(len(body)) + body)

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                size = _HEAD.unpack(await reader.readexactly(_HEAD.size))[0]
                version, versions, config, synced, secrets = pickle.loads(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                log.warning("worker %s: the parent's relay closed", self.server.worker)
                return
            for name, secret in secrets.items():  # before the listeners naming them are built
                PROCESS_SECRETS.set(name, secret)
            try:
                if config != self.server.config:
                    self.server.apply(config)
            except MeshError as exc:
                self.failed = f"relay version {version}: {exc}"
                log.error("worker %s: cannot apply relay version %d: %s", self.server.worker, version, exc)
                self._answer(version, str(exc))
                continue
            self._answer(version, None)
            self.relay_version, self.xds_versions, self.failed = version, versions, None
            self.server.ready = True
            if synced:
                self.synced.set()


async def follow(server: ServerView, fd: int, answer_fd: int) -> Relayed:
    """Apply every config the parent relays on ``fd`` (a worker's side of its pipe), answering each
    relay version on ``answer_fd``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    answers, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(answer_fd, "wb", buffering=0))
    relayed = Relayed(server, answers)
    relayed._answer(0, None)  # following
    relayed._task = loop.create_task(relayed._follow(reader))
    server.xds = relayed
    return relayed


__all__ = ["Relay", "Relayed", "follow"]
