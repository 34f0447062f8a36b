"""The workload certificate of a ``--workers N`` sidecar: one agent in the parent (one key, one
certificate, one renewal, as istio-agent serves every Envoy worker thread), each secret it publishes
sent to every worker over a pipe, where it goes into the worker's own :data:`PROCESS_SECRETS`.

The pipes are the parent's own, to its own forks (the key leaves the parent only to them, as it
leaves istio-agent only over SDS to its Envoy). Frames are length-prefixed pickles of
``(name, secret)``; a worker applies each as it arrives, so a renewal reaches every worker's next
handshake without a restart. A worker waits for ``default`` and ``ROOTCA`` before it starts its
listeners, as a single process waits for its agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
from collections.abc import Callable, Sequence

from sofamesh.core.errors import MeshError
from sofamesh.core.net.secrets import DEFAULT_CERT, ROOT_CA, CertificateSecret, SecretStore, TrustSecret

log = logging.getLogger("sofamesh.agent")
_HEAD = struct.Struct("!I")


class SecretSender:
    """Parent side: every secret of ``store``, now and after each change, to each pipe."""

    def __init__(self, store: SecretStore, pipes: Sequence[int]) -> None:
        self.store = store
        self._pipes = list(pipes)
        self._writers: list[asyncio.WriteTransport] = []
        self._unwatch: Callable[[], None] | None = None
        self.sent = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._pipes:
            transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(fd, "wb", buffering=0))
            self._writers.append(transport)
        for name in self.store.names():
            self._send(name)
        self._unwatch = self.store.watch(self._send)

    def _send(self, name: str) -> None:
        secret = self.store.get(name)
        if secret is None:
            return
        body = pickle.dumps((name, secret), protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEAD.pack(len(body)) + body
        self.sent += 1
        for w in self._writers:
            if not w.is_closing():
                w.write(frame)

    async def stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        for w in self._writers:
            w.close()
        self._writers = []


async def receive_secrets(fd: int, store: SecretStore, timeout_s: float) -> asyncio.Task[None]:
    """Worker side: apply every secret the parent sends on ``fd`` to ``store``; returns once
    ``default`` and ``ROOTCA`` are there (the task goes on applying renewals). :class:`MeshError`
    when they do not come within ``timeout_s`` or the parent closes the pipe first."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    ready = asyncio.Event()

    async def follow() -> None:
        while True:
            try:
                size = _HEAD.unpack(await reader.readexactly(_HEAD.size))[0]
                name, secret = pickle.loads(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                log.warning("the parent's secret relay closed")
                ready.set()
                return
            if isinstance(name, str) and isinstance(secret, CertificateSecret | TrustSecret):
                store.set(name, secret)
            if store.get(DEFAULT_CERT) is not None and store.get(ROOT_CA) is not None:
                ready.set()

    task = loop.create_task(follow())
    try:
        await asyncio.wait_for(ready.wait(), timeout_s)
    except TimeoutError:
        task.cancel()
        raise MeshError(f"no workload certificate from the parent's agent within {timeout_s:g}s") from None
    if store.get(DEFAULT_CERT) is None or store.get(ROOT_CA) is None:
        raise MeshError("the parent's agent stopped before it sent the workload certificate")
    return task


__all__ = ["SecretSender", "receive_secrets"]
