"""The Nacos 2.x gRPC protocol that Nacos 2 clients speak (on the Nacos port + 1000, 9848 by default),
served by the ``nacos`` registry in Pilot's own event loop (grpc.aio, like the xDS server).

A client opens one channel: ``ServerCheckRequest`` (unary) returns its connection id, then the
``requestBiStream`` call starts with ``ConnectionSetupRequest``, and every later request travels on
``/Request/request``. A connection is one HTTP/2 transport (gRPC's peer address), as Nacos keys it.

Requests served (``grpc_wire.py`` carries them): ``HealthCheckRequest``; ``InstanceRequest``
(``registerInstance`` / ``deregisterInstance``: ephemeral, owned by the connection),
``BatchInstanceRequest`` (``batchRegisterInstance``: the connection's instances of that service
become exactly those), ``PersistentInstanceRequest`` (kept until deleted); ``ServiceQueryRequest``,
``SubscribeServiceRequest`` (``subscribe`` true / false), ``ServiceListRequest``. A subscription is
answered with the service's ``ServiceInfo`` and, after every change of that mesh service, gets a
``NotifySubscriberRequest`` on the stream (acked by ``NotifySubscriberResponse``).

An instance registered on a connection leaves when its connection ends (the stream ends or the
channel closes; gRPC keepalive finds a silent peer within ``keepalive_s`` + 10 s), or when the
connection, silent for ``idle_s`` (20 s, Nacos's keep-alive time), leaves a ``ClientDetectionRequest``
unanswered for 3 s (Nacos's ConnectionManager does the same; its clients answer
``ClientDetectionResponse`` and health-check every 5 s when idle). While it lives
it is renewed every ``beat_interval_s``, so with ``shared`` replicas a registration whose replica died
lapses like a missed beat (unhealthy after ``heartbeat_timeout_s``, gone after ``ip_delete_timeout_s``)
while its client reconnects to another replica and registers again (the clients' redo). A replica
that stops leaves its connections' registrations to that lapse too, so they stay in the mesh while
their clients move.

Errors answer as Nacos's server does, as an ``ErrorResponse`` (``resultCode`` 500): an unknown type
``errorCode`` 302 "RequestHandler Not Found"; a request on a connection that has not set up its
stream 301 "Connection is unregistered."; a body that is no JSON object 502 with the parser's
message; a bad field 400 naming it. Bytes that are no ``Payload`` end the call with status
INTERNAL, as gRPC-Java does. Nothing a client sends stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.config import split_address
from sofamesh.pilot.model import MeshModel
from sofamesh.plugins.registries.nacos import grpc_wire as wire
from sofamesh.plugins.registries.nacos import mapping
from sofamesh.plugins.registries.nacos.mapping import NacosName
from sofamesh.plugins.registries.served import Entry

log = logging.getLogger("sofamesh.pilot.registry.nacos.grpc")
PORT_OFFSET = 1000  # Nacos clients find the gRPC port at the HTTP port + 1000
UN_REGISTER, NO_HANDLER, INVALID_PARAM, BAD_GATEWAY, SERVER_ERROR = 301, 302, 400, 502, 500
_CHECKED_MAX = 65536
DETECT_TIMEOUT_S = 3.0  # an idle connection's time to answer a ClientDetectionRequest
_PEER = re.compile(r"^(?:ipv4|ipv6):\[?(.*?)\]?:(\d+)$")


class NacosNaming(Protocol):
    """What the protocol needs of the ``nacos`` registry (``api.py``)."""

    name: str
    mesh: MeshModel
    heartbeat_timeout_s: float
    ip_delete_timeout_s: float
    beat_interval_s: float

    def entry(self, service: str, instance_id: str) -> Entry | None: ...

    def put(self, entry: Entry) -> None: ...

    def remove(self, service: str, instance_id: str) -> Entry | None: ...

    def renew(self, service: str, instance_id: str) -> Entry | None: ...

    def names(self, namespace: str, group: str) -> list[str]: ...

    def service_info(
        self, where: NacosName, clusters: str = "", healthy_only: bool = False, name: str | None = None
    ) -> dict[str, Any]: ...


@dataclass(eq=False)
class Connection:
    """One client connection: its stream's outgoing queue, what it registered and subscribed to."""

    id: str
    peer: str
    client_ip: str
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)  # None: closed; b"": pushes due
    setup: dict[str, Any] = field(default_factory=dict)
    owned: set[tuple[str, str]] = field(default_factory=set)  # (mesh service, instance id)
    subscribed: set[tuple[NacosName, str]] = field(default_factory=set)  # (where, clusters)
    pending: set[tuple[NacosName, str]] = field(default_factory=set)  # pushes queued, not yet built
    pushes: int = 0
    acks: int = 0
    active_at: float = field(default_factory=time.monotonic)  # its last request or answer
    detect_sent_at: float = 0.0  # the last ClientDetectionRequest sent to it
    connected_at: float = field(default_factory=time.time)


def _split_peer(peer: str) -> tuple[str, str]:
    m = _PEER.match(peer)
    return (m.group(1), m.group(2)) if m else (peer, "0")


class NacosGrpcServer:
    """Nacos 2's gRPC protocol over one ``nacos`` registry."""

    def __init__(self, registry: NacosNaming, address: str, keepalive_s: float = 20.0, idle_s: float = 20.0) -> None:
        self.registry = registry
        self.address = address
        self.keepalive_s = keepalive_s
        self.idle_s = idle_s
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._checked: dict[str, str] = {}  # peer -> connection id handed out by ServerCheckResponse
        self.connections: dict[str, Connection] = {}  # by peer, once the stream set up
        self._subs: dict[str, set[tuple[Connection, NacosName, str]]] = {}  # mesh service -> subscribers
        self._ids = itertools.count(1)
        self._renewer: asyncio.Task[None] | None = None
        self._detector: asyncio.Task[None] | None = None
        self._stopping = False
        self.errors = 0
        self._handlers = {
            "HealthCheckRequest": self._health,
            "InstanceRequest": self._instance,
            "BatchInstanceRequest": self._batch,
            "PersistentInstanceRequest": self._persistent,
            "ServiceQueryRequest": self._query,
            "SubscribeServiceRequest": self._subscribe,
            "ServiceListRequest": self._list,
        }

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> int:
        where = f"registries.{self.registry.name}.options.grpc_address"
        host, port = split_address(self.address, where)
        keepalive_ms = int(self.keepalive_s * 1000)
        server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", keepalive_ms),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.http2.max_ping_strikes", 0),
                ("grpc.max_receive_message_length", 10 * 1024 * 1024),
                ("grpc.server.max_pending_requests", 10_000),
                ("grpc.server.max_pending_requests_hard_limit", 20_000),
            ]
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    wire.REQUEST_SERVICE, {wire.REQUEST_METHOD: grpc.unary_unary_rpc_method_handler(self._request)}
                ),
                grpc.method_handlers_generic_handler(
                    wire.BI_STREAM_SERVICE,
                    {wire.BI_STREAM_METHOD: grpc.stream_stream_rpc_method_handler(self._bi_stream)},
                ),
            )
        )
        try:
            bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except RuntimeError as exc:
            raise ConfigError(where, f"cannot listen on {self.address}: {exc}") from exc
        await server.start()
        self._server, self.port = server, int(bound)
        self.registry.mesh.add_listener(self._on_change)
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        self._detector = asyncio.get_running_loop().create_task(self._detect_forever())
        log.info("registry %s: serving Nacos gRPC on %s:%d", self.registry.name, host, self.port)
        return self.port

    async def stop(self) -> None:
        for task in (self._renewer, self._detector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._renewer = self._detector = None
        self._stopping = True  # registrations stay in a shared store: they lapse, or move with their client
        for conn in list(self.connections.values()):
            conn.queue.put_nowait(None)
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None

    def describe(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "connections": len(self.connections),
            "errors": self.errors,
            "subscriptions": sum(len(c.subscribed) for c in self.connections.values()),
            "instances": sum(len(c.owned) for c in self.connections.values()),
            "acks": sum(c.acks for c in self.connections.values()),
        }

    # -- the unary call ------------------------------------------------------------------------
    async def _request(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            kind, body, _headers = wire.decode(raw)
        except wire.BadPayload as exc:
            self.errors += 1
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        peer = context.peer()
        try:
            rtype, answer = self.answer(peer, kind, body)
        except Exception as exc:  # a handler's fault answers this request, never the others
            log.exception("registry %s: Nacos gRPC %s failed", self.registry.name, kind)
            rtype, answer = "ErrorResponse", wire.error(SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        if rtype == "ErrorResponse":
            self.errors += 1
        return wire.encode(rtype, answer)

    def answer(self, peer: str, kind: str, body: bytes) -> tuple[str, dict[str, Any]]:
        """(response type, response body) for a request of type ``kind`` from ``peer``."""
        if kind == "ServerCheckRequest":
            ip, port = _split_peer(peer)
            conn_id = self._checked.get(peer) or f"{int(time.time() * 1000)}_{ip}_{port}"
            self._checked[peer] = conn_id
            if len(self._checked) > _CHECKED_MAX:  # server checks never followed by a stream
                del self._checked[next(iter(self._checked))]
            return "ServerCheckResponse", wire.response(connectionId=conn_id, supportAbilityNegotiation=False)
        handler = self._handlers.get(kind)
        if handler is None:
            return "ErrorResponse", wire.error(NO_HANDLER, "RequestHandler Not Found")
        conn = self.connections.get(peer)
        if conn is None:
            return "ErrorResponse", wire.error(UN_REGISTER, "Connection is unregistered.")
        conn.active_at = time.monotonic()
        try:
            request = wire.body_of(body)
        except ValueError as exc:
            return "ErrorResponse", wire.error(BAD_GATEWAY, str(exc))
        request_id = str(request.get("requestId") or "")
        try:
            rtype, fields = handler(conn, request)
        except ConfigError as exc:
            return "ErrorResponse", wire.error(INVALID_PARAM, exc.message, request_id)
        return rtype, wire.response(request_id, **fields)

    # -- the bidirectional stream --------------------------------------------------------------
    async def _bi_stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        peer = context.peer()
        ip, port = _split_peer(peer)
        conn = Connection(self._checked.pop(peer, "") or f"{int(time.time() * 1000)}_{ip}_{port}", peer, ip)
        reader = asyncio.get_running_loop().create_task(self._read(requests, conn))
        try:
            while True:
                out = await conn.queue.get()
                if out is None:
                    break
                if out:
                    yield out
                    continue
                for sub in list(conn.pending):  # b"": build the pushes that are due, from the model now
                    conn.pending.discard(sub)
                    if sub in conn.subscribed:
                        yield self._notify_payload(conn, *sub)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._close(conn)

    async def _read(self, requests: AsyncIterator[bytes], conn: Connection) -> None:
        try:
            async for raw in requests:
                try:
                    kind, body, _headers = wire.decode(raw)
                    self._on_stream_payload(conn, kind, body)
                except Exception as exc:  # one bad payload is dropped, the stream goes on
                    self.errors += 1
                    log.info("registry %s: Nacos gRPC stream %s: %s", self.registry.name, conn.id, exc)
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
            pass
        finally:
            conn.queue.put_nowait(None)

    def _on_stream_payload(self, conn: Connection, kind: str, body: bytes) -> None:
        conn.active_at = time.monotonic()
        if kind == "ConnectionSetupRequest":
            conn.setup = wire.body_of(body)
            old = self.connections.get(conn.peer)
            if old is not None and old is not conn:
                old.queue.put_nowait(None)
            self.connections[conn.peer] = conn
            log.debug("registry %s: Nacos connection %s set up", self.registry.name, conn.id)
        elif kind.endswith("Response"):  # NotifySubscriberResponse, ClientDetectionResponse
            conn.acks += 1
        else:
            raise ValueError(f"{kind or 'a payload without type'} is not taken on the stream")

    def _close(self, conn: Connection) -> None:
        if self.connections.get(conn.peer) is conn:
            del self.connections[conn.peer]
        self._checked.pop(conn.peer, None)
        for where, clusters in conn.subscribed:
            subs = self._subs.get(where.service)
            if subs is not None:
                subs.discard((conn, where, clusters))
                if not subs:
                    del self._subs[where.service]
        conn.subscribed.clear()
        if self._stopping:
            conn.owned.clear()
            return
        for service, iid in conn.owned:
            entry = self.registry.entry(service, iid)
            if entry is not None and entry.wire.get("connection") == conn.id:
                self.registry.remove(service, iid)
        if conn.owned:
            log.info(
                "registry %s: Nacos connection %s closed: %d instance(s) removed",
                self.registry.name,
                conn.id,
                len(conn.owned),
            )
        conn.owned.clear()

    # -- pushes --------------------------------------------------------------------------------
    def _on_change(self, names: frozenset[str]) -> None:
        for name in names:
            for conn, where, clusters in self._subs.get(name, ()):
                sub = (where, clusters)
                if sub not in conn.pending:
                    conn.pending.add(sub)
                    conn.queue.put_nowait(b"")

    def _notify_payload(self, conn: Connection, where: NacosName, clusters: str) -> bytes:
        conn.pushes += 1
        request = {
            "headers": {},
            "requestId": str(next(self._ids)),
            "module": "naming",
            "namespace": where.namespace,
            "serviceName": where.name,
            "groupName": where.group,
            "serviceInfo": self._service_info(where, clusters),
        }
        return wire.encode("NotifySubscriberRequest", request)

    # -- requests ------------------------------------------------------------------------------
    @staticmethod
    def _where(request: dict[str, Any]) -> NacosName:
        return mapping.nacos_name(
            str(request.get("serviceName") or ""),
            str(request.get("groupName") or ""),
            str(request.get("namespace") or ""),
        )

    def _service_info(self, where: NacosName, clusters: str, healthy_only: bool = False) -> dict[str, Any]:
        return self.registry.service_info(where, clusters, healthy_only, name=where.name)

    def _health(self, conn: Connection, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "HealthCheckResponse", {}

    def _entry(self, conn: Connection | None, where: NacosName, instance: object) -> Entry:
        if not isinstance(instance, dict):
            raise ConfigError("instance", "Param 'instance' is required: an object with ip and port.")
        params = {**instance, "clusterName": instance.get("clusterName") or mapping.DEFAULT_CLUSTER}
        service, inst = mapping.from_nacos(where, params, self.registry.name)
        kept: dict[str, Any] = {k: params[k] for k in ("clusterName", "weight", "enabled", "metadata") if k in params}
        kept["where"] = where
        if conn is None:
            return Entry(service, inst, wire=kept)
        kept["connection"] = conn.id
        reg = self.registry
        return Entry(service, inst, lease_s=reg.heartbeat_timeout_s, remove_after_s=reg.ip_delete_timeout_s, wire=kept)

    def _instance(self, conn: Connection, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        where = self._where(request)
        kind = request.get("type")
        entry = self._entry(conn, where, request.get("instance"))
        if kind == "registerInstance":
            self.registry.put(entry)
            conn.owned.add((entry.service.name, entry.instance.id))
        elif kind == "deregisterInstance":
            self.registry.remove(entry.service.name, entry.instance.id)
            conn.owned.discard((entry.service.name, entry.instance.id))
        else:
            raise ConfigError("type", f"Unsupported request type {kind}")
        return "InstanceResponse", {"type": kind}

    def _batch(self, conn: Connection, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        where = self._where(request)
        if request.get("type") != "batchRegisterInstance":
            raise ConfigError("type", f"Unsupported request type {request.get('type')}")
        instances = request.get("instances")
        if not isinstance(instances, list):
            raise ConfigError("instances", "Param 'instances' must be a list of instances.")
        entries = [self._entry(conn, where, i) for i in instances]
        keep = {(e.service.name, e.instance.id) for e in entries}
        for service, iid in list(conn.owned):
            if (service, iid) not in keep and service == where.service:
                entry = self.registry.entry(service, iid)
                if entry is not None and entry.wire.get("where") == where:
                    self.registry.remove(service, iid)
                    conn.owned.discard((service, iid))
        for entry in entries:
            self.registry.put(entry)
            conn.owned.add((entry.service.name, entry.instance.id))
        return "BatchInstanceResponse", {"type": "batchRegisterInstance"}

    def _persistent(self, conn: Connection, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        where = self._where(request)
        kind = request.get("type")
        entry = self._entry(None, where, request.get("instance"))
        if kind == "registerInstance":
            self.registry.put(entry)
        elif kind == "deregisterInstance":
            self.registry.remove(entry.service.name, entry.instance.id)
        else:
            raise ConfigError("type", f"Unsupported request type {kind}")
        return "InstanceResponse", {"type": kind}

    def _query(self, conn: Connection, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        where = self._where(request)
        info = self._service_info(where, str(request.get("cluster") or ""), bool(request.get("healthOnly")))
        return "QueryServiceResponse", {"serviceInfo": info}

    def _subscribe(self, conn: Connection, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        where = self._where(request)
        clusters = str(request.get("clusters") or "")
        sub = (where, clusters)
        if request.get("subscribe", True) is False:
            conn.subscribed.discard(sub)
            subs = self._subs.get(where.service)
            if subs is not None:
                subs.discard((conn, where, clusters))
        else:
            conn.subscribed.add(sub)
            self._subs.setdefault(where.service, set()).add((conn, where, clusters))
        return "SubscribeServiceResponse", {"serviceInfo": self._service_info(where, clusters)}

    def _list(self, conn: Connection, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ns = str(request.get("namespace") or mapping.DEFAULT_NAMESPACE)
        ns = mapping.DEFAULT_NAMESPACE if ns == "default" else ns
        names = self.registry.names(ns, str(request.get("groupName") or mapping.DEFAULT_GROUP))
        try:
            page, size = max(1, int(request.get("pageNo") or 1)), max(1, int(request.get("pageSize") or 10))
        except (TypeError, ValueError):
            raise ConfigError("pageNo", "Param 'pageNo' and 'pageSize' must be numbers.") from None
        return "ServiceListResponse", {"count": len(names), "serviceNames": names[(page - 1) * size : page * size]}

    # -- liveness under shared replicas ----------------------------------------------------------
    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.registry.beat_interval_s)
            try:
                for conn in list(self.connections.values()):
                    for service, iid in conn.owned:
                        entry = self.registry.entry(service, iid)
                        if entry is not None and entry.wire.get("connection") == conn.id:
                            self.registry.renew(service, iid)
            except Exception:
                log.exception("registry %s: renewing Nacos gRPC registrations failed", self.registry.name)

    # -- idle connections (Nacos's ConnectionManager) -------------------------------------------------
    def detect(self, now: float) -> list[Connection]:
        """Send a ``ClientDetectionRequest`` on each connection idle for ``idle_s``; end those that
        have not answered one within ``DETECT_TIMEOUT_S`` (their instances leave). Returns those ended."""
        ended = []
        for conn in list(self.connections.values()):
            if conn.detect_sent_at > conn.active_at:  # asked, no answer yet
                if now - conn.detect_sent_at >= DETECT_TIMEOUT_S:
                    log.info(
                        "registry %s: Nacos connection %s did not answer its detection: closed",
                        self.registry.name,
                        conn.id,
                    )
                    ended.append(conn)
                    conn.queue.put_nowait(None)
            elif now - conn.active_at >= self.idle_s:
                conn.detect_sent_at = now
                request = {"headers": {}, "requestId": str(next(self._ids)), "module": "internal"}
                conn.queue.put_nowait(wire.encode("ClientDetectionRequest", request))
        return ended

    async def _detect_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_s / 4))
            try:
                self.detect(time.monotonic())
            except Exception:
                log.exception("registry %s: detecting idle Nacos connections failed", self.registry.name)


def default_address(http_address: str | None) -> str | None:
    """The gRPC address Nacos clients derive from the HTTP one: the port + 1000 (0 stays 0)."""
    if http_address is None:
        return None
    host, _, port = http_address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        return None
    return f"{host}:{number + PORT_OFFSET if number else 0}"


__all__ = ["PORT_OFFSET", "Connection", "NacosGrpcServer", "default_address"]
