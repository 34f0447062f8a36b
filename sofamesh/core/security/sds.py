"""An Envoy SDS server (``envoy.service.secret.v3.SecretDiscoveryService``) over a Unix socket,
serving the secrets of a :class:`SecretStore` (``default``: certificate chain and key, ``ROOTCA``:
trust bundle) to a co-located Envoy, as istio-agent does.

State of the world (``StreamSecrets``), delta (``DeltaSecrets``) and ``FetchSecrets``. A stream
answers a name once the store has it and again after every change of it; NACKs are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from sofamesh.core.net.secrets import CertificateSecret, SecretStore, TrustSecret

log = logging.getLogger("sofamesh.sds")
_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def secret_message(name: str, secret: CertificateSecret | TrustSecret) -> Any:
    """The Envoy ``Secret`` for one stored secret (inline bytes)."""
    if isinstance(secret, CertificateSecret):
        return secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=secret.chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=secret.key_pem)))
    return secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=secret.roots_pem)))


def _packed(name: str, secret: CertificateSecret | TrustSecret) -> Any:
    a = any_pb2.Any()
    a.Pack(secret_message(name, secret))
    return a


class SdsServer:
    """Serves ``store`` on ``unix:PATH``; ``await start(path)``, then ``await stop()``."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store
        self.path = ""
        self.streams = 0
        self.pushes = 0
        self.nacks = 0
        self._server: grpc.aio.Server | None = None
        self._wakers: set[asyncio.Event] = set()
        self._versions: dict[str, int] = {}
        self._unwatch = store.watch(self._changed)

    def _changed(self, name: str) -> None:
        self._versions[name] = self._versions.get(name, 0) + 1
        for ev in self._wakers:
            ev.set()

    def _version(self, name: str) -> str:
        return str(self._versions.get(name, 0))

    async def start(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = grpc.aio.server()
        handlers = {
            "StreamSecrets": grpc.stream_stream_rpc_method_handler(
                self.StreamSecrets, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString),
            "DeltaSecrets": grpc.stream_stream_rpc_method_handler(
                self.DeltaSecrets, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString),
            "FetchSecrets": grpc.unary_unary_rpc_method_handler(
                self.FetchSecrets, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
        old = os.umask(0o077)  # the socket hands out a private key: only this user may connect
        try:
            server.add_insecure_port(f"unix:{path}")
            await server.start()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._server, self.path = server, path
        log.info("sds: serving %s on unix:%s", ", ".join(self.store.names()) or "(nothing yet)", path)

    async def stop(self, grace: float = 0.5) -> None:
        self._unwatch()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            if self.path:
                os.unlink(self.path)

    def _available(self, names: Iterable[str]) -> list[tuple[str, CertificateSecret | TrustSecret]]:
        out = []
        for n in sorted(names):
            s = self.store.get(n)
            if s is not None:
                out.append((n, s))
        return out

    async def _requests(self, requests: AsyncIterator[Any], queue: asyncio.Queue[Any], wake: asyncio.Event) -> None:
        try:
            async for req in requests:
                queue.put_nowait(req)
                wake.set()
        except (asyncio.CancelledError, grpc.RpcError):
            pass
        finally:
            queue.put_nowait(None)
            wake.set()

    async def _stream(self, requests: AsyncIterator[Any], delta: bool) -> AsyncIterator[Any]:
        """One stream: follow the names asked for; send each one's newest version it has not had."""
        self.streams += 1
        queue: asyncio.Queue[Any] = asyncio.Queue()
        wake = asyncio.Event()
        self._wakers.add(wake)
        reader = asyncio.get_running_loop().create_task(self._requests(requests, queue, wake))
        names: set[str] = set()
        sent: dict[str, str] = {}  # name -> version sent on this stream
        nonce = 0
        try:
            while True:
                await wake.wait()
                wake.clear()
                closed = False
                while not queue.empty():
                    req = queue.get_nowait()
                    if req is None:
                        closed = True
                        break
                    if req.HasField("error_detail"):
                        self.nacks += 1
                        log.warning("sds: NACK from %s: %s", req.node.id or "envoy", req.error_detail.message)
                    if delta:
                        names |= set(req.resource_names_subscribe)
                        names -= set(req.resource_names_unsubscribe)
                        for n in req.resource_names_unsubscribe:
                            sent.pop(n, None)
                    else:
                        wanted = set(req.resource_names)
                        if wanted != names:
                            names = wanted
                            sent = {n: v for n, v in sent.items() if n in names}
                if closed:
                    return
                fresh = [(n, s) for n, s in self._available(names) if sent.get(n) != self._version(n)]
                if not fresh:
                    continue
                nonce += 1
                for n, _ in fresh:
                    sent[n] = self._version(n)
                self.pushes += 1
                if delta:
                    yield discovery_pb2.DeltaDiscoveryResponse(
                        type_url=SECRET_TYPE, nonce=str(nonce), system_version_info=str(nonce),
                        resources=[discovery_pb2.Resource(name=n, version=self._version(n), resource=_packed(n, s))
                                   for n, s in fresh])
                else:  # SotW: every subscribed name this stream has
                    yield discovery_pb2.DiscoveryResponse(
                        type_url=SECRET_TYPE, nonce=str(nonce),
                        version_info="-".join(f"{n}.{self._version(n)}" for n in sorted(sent)),
                        resources=[_packed(n, s) for n, s in self._available(sent)])
        finally:
            self._wakers.discard(wake)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def StreamSecrets(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for resp in self._stream(requests, delta=False):
            yield resp

    async def DeltaSecrets(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for resp in self._stream(requests, delta=True):
            yield resp

    async def FetchSecrets(self, request: Any, context: Any) -> Any:
        found = self._available(request.resource_names)
        return discovery_pb2.DiscoveryResponse(
            type_url=SECRET_TYPE, version_info="-".join(f"{n}.{self._version(n)}" for n, _ in found),
            resources=[_packed(n, s) for n, s in found])


__all__ = ["SECRET_TYPE", "SdsServer", "secret_message"]
