"""A SOFARegistry session server inside Pilot: the HTTP server list and the Bolt + hessian exchange.

Owns the client protocol of SOFARegistry as ``sofa-registry-node`` speaks it:
- HTTP ``GET /api/servers/query?env=&zone=&dataCenter=&appName=&instanceId=`` answers the
  session servers as plain text ``ip:port`` (``;``-separated): here, this server's Bolt address.
- Bolt v1 (codec hessian2) requests whose class name is ``PublisherRegister``,
  ``SubscriberRegister``, ``ConfiguratorRegister`` or ``SyncConfigRequest``, answered with
  ``RegisterResponse`` / ``SyncConfigResponse``; heartbeats answered locally.
- pushes: a Bolt request ``ReceivedData`` to each subscriber of a ``(dataId, group)`` whenever its
  publications change (and right after it subscribes); the client answers with ``Result``.
A connection that closes takes its publishers and subscribers with it (a session's registrations
live as long as its connection, as with SOFARegistry's session servers).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sofamesh.core.admin import HttpMini
from sofamesh.core.config.model import parse_address
from sofamesh.core.hessian import HessianError, JavaLong, JavaObject
from sofamesh.core.hessian.draft import decode, encode
from sofamesh.plugins.protocols.bolt import frames as bf

log = logging.getLogger("sofamesh.pilot.registry.sofaregistry")

MODEL = "com.alipay.sofa.registry.core.model."
PUBLISHER_REGISTER = MODEL + "PublisherRegister"
SUBSCRIBER_REGISTER = MODEL + "SubscriberRegister"
CONFIGURATOR_REGISTER = MODEL + "ConfiguratorRegister"
SYNC_CONFIG_REQUEST = MODEL + "SyncConfigRequest"
REGISTER_RESPONSE = MODEL + "RegisterResponse"
SYNC_CONFIG_RESPONSE = MODEL + "SyncConfigResponse"
RECEIVED_DATA = MODEL + "ReceivedData"
DATA_BOX = MODEL + "DataBox"
SEGMENT = "sofamesh"
_MAX_FRAME = 16 * 1024 * 1024


@dataclass(slots=True)
class Publication:
    """What one publisher (``registId``) currently publishes under ``(data_id, group)``."""

    regist_id: str
    data_id: str
    group: str
    data: list[str]
    zone: str
    app: str
    version: int
    session: Session


@dataclass(slots=True)
class Subscription:
    regist_id: str
    data_id: str
    group: str
    zone: str
    scope: str
    session: Session


@dataclass(eq=False, slots=True)
class Session:
    """One client connection."""

    writer: asyncio.StreamWriter
    peer: str
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    regist_ids: set[str] = field(default_factory=set)

    def send(self, frame: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame)


def register_response(success: bool, regist_id: str | None, version: int, message: str | None = None) -> bytes:
    return encode(JavaObject(REGISTER_RESPONSE, {"success": success, "registId": regist_id,
                                                 "version": JavaLong(version), "refused": False,
                                                 "message": message}))


def received_data(data_id: str, group: str, regist_ids: list[str], by_zone: dict[str, list[str]],
                  version: int, local_zone: str, scope: str) -> bytes:
    """A ``ReceivedData`` push; ``data`` is keyed by zone, each a list of ``DataBox``."""
    data = {zone: [JavaObject(DATA_BOX, {"data": d}) for d in items] for zone, items in by_zone.items()}
    return encode(JavaObject(RECEIVED_DATA, {
        "dataId": data_id, "group": group, "instanceId": None, "segment": SEGMENT, "scope": scope,
        "subscriberRegistIds": regist_ids, "data": data, "version": JavaLong(version),
        "localZone": local_zone}))


class SessionServer:
    """Serves SOFARegistry clients; calls ``on_change(data_id)`` when a publication changes."""

    def __init__(self, bolt_address: str, http_address: str | None, advertise: str | None = None,
                 on_change: Callable[[str], object] = lambda data_id: None) -> None:
        self.bolt_address = bolt_address
        self.http = HttpMini(http_address, self._http) if http_address else None
        self._advertise = advertise
        self.on_change = on_change
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._server: asyncio.Server | None = None
        self._sessions: set[Session] = set()
        self._version = time.time_ns() // 1_000_000  # data versions only grow, across restarts too
        self.pushes = 0

    @property
    def bolt_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def advertise(self) -> str:
        if self._advertise:
            return self._advertise
        host, _ = parse_address(self.bolt_address)
        return f"{host}:{self.bolt_port}"

    async def start(self) -> None:
        host, port = parse_address(self.bolt_address)
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        if self.http is not None:
            await self.http.start()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self._server is not None:
            self._server.close()
        for s in list(self._sessions):
            s.writer.close()

    # -- HTTP --------------------------------------------------------------------------------
    async def _http(self, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        if path == "/api/servers/query":
            return 200, "text/plain", self.advertise.encode()
        return 404, "text/plain", b"not found\n"

    # -- Bolt --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        session = Session(writer, f"{peer[0]}:{peer[1]}" if peer else "?")
        self._sessions.add(session)
        try:
            while True:
                head = await reader.readexactly(1)
                if head[0] != bf.PROTO_V1:
                    log.warning("sofaregistry: %s speaks bolt protocol %d; only v1 is served", session.peer, head[0])
                    return
                rest = await reader.readexactly(bf.V1_RESPONSE.size - 1)
                kind = rest[0]
                if kind == bf.TYPE_RESPONSE:
                    (_p, _t, _cmd, _v, _rid, _codec, _st, cl, hl, bl) = bf.V1_RESPONSE.unpack(head + rest)
                    await reader.readexactly(cl + hl + bl)  # the client's Result for a push
                    continue
                rest += await reader.readexactly(bf.V1_REQUEST.size - bf.V1_RESPONSE.size)
                (_p, kind, cmd, _v, rid, codec, _to, cl, hl, bl) = bf.V1_REQUEST.unpack(head + rest)
                if cl + hl + bl > _MAX_FRAME:
                    log.warning("sofaregistry: %s sent a %d-byte frame; closing", session.peer, cl + hl + bl)
                    return
                body = await reader.readexactly(cl + hl + bl)
                if cmd == bf.CMD_HEARTBEAT:
                    session.send(bf.encode_response(rid, bf.STATUS_SUCCESS, cmdcode=bf.CMD_HEARTBEAT))
                    continue
                class_name = body[:cl].decode("utf-8", "replace")
                status, answer_class, answer = self._handle(session, class_name, codec, body[cl + hl:])
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("sofaregistry: %s request %d %s -> status %d %s", session.peer, rid, class_name,
                              status, answer_class)
                if kind != bf.TYPE_ONEWAY:
                    session.send(bf.encode_response(rid, status, class_name=answer_class.encode(),
                                                    content=answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._sessions.discard(session)
            writer.close()
            self._drop_session(session)

    def _handle(self, session: Session, class_name: str, codec: int, content: bytes) -> tuple[int, str, bytes]:
        if codec != bf.CODEC_HESSIAN2:
            return bf.STATUS_CODEC_EXCEPTION, "", b""
        try:
            obj = decode(content)
        except HessianError as exc:
            log.warning("sofaregistry: %s sent an unreadable %s: %s", session.peer, class_name, exc)
            return bf.STATUS_SERVER_DESERIAL_EXCEPTION, "", b""
        if not isinstance(obj, JavaObject):
            return bf.STATUS_SERVER_DESERIAL_EXCEPTION, "", b""
        if obj.class_name == PUBLISHER_REGISTER:
            return bf.STATUS_SUCCESS, REGISTER_RESPONSE, self._publish(session, obj)
        if obj.class_name == SUBSCRIBER_REGISTER:
            return bf.STATUS_SUCCESS, REGISTER_RESPONSE, self._subscribe(session, obj)
        if obj.class_name == CONFIGURATOR_REGISTER:
            # Config data is not part of the mesh model: acknowledged, nothing is pushed.
            return bf.STATUS_SUCCESS, REGISTER_RESPONSE, register_response(
                True, obj.get("registId"), _int(obj.get("version")))
        if obj.class_name == SYNC_CONFIG_REQUEST:
            return bf.STATUS_SUCCESS, SYNC_CONFIG_RESPONSE, encode(JavaObject(SYNC_CONFIG_RESPONSE, {
                "success": True, "message": None, "availableSegments": [SEGMENT], "retryInterval": 30000}))
        log.warning("sofaregistry: %s sent unknown class %s", session.peer, obj.class_name)
        return bf.STATUS_NO_PROCESSOR, "", b""

    def _publish(self, session: Session, obj: JavaObject) -> bytes:
        regist_id, data_id = obj.get("registId"), obj.get("dataId")
        version = _int(obj.get("version"))
        if not isinstance(regist_id, str) or not isinstance(data_id, str) or not data_id:
            return register_response(False, regist_id if isinstance(regist_id, str) else None, version,
                                     "registId and dataId are required")
        group = obj.get("group") or "DEFAULT_GROUP"
        old = self.publications.get(regist_id)
        if old is not None and old.version > version:
            return register_response(True, regist_id, old.version)  # a late retry of an older state
        if obj.get("eventType") == "UNREGISTER":
            self.publications.pop(regist_id, None)
            session.regist_ids.discard(regist_id)
        else:
            boxes = obj.get("dataList") or []
            data = [b.get("data") for b in boxes if isinstance(b, JavaObject) and isinstance(b.get("data"), str)]
            self.publications[regist_id] = Publication(
                regist_id, data_id, group, data, obj.get("zone") or "DEFAULT_ZONE", obj.get("appName") or "",
                version, session)
            session.regist_ids.add(regist_id)
        self._changed(data_id, group)
        return register_response(True, regist_id, version)

    def _subscribe(self, session: Session, obj: JavaObject) -> bytes:
        regist_id, data_id = obj.get("registId"), obj.get("dataId")
        version = _int(obj.get("version"))
        if not isinstance(regist_id, str) or not isinstance(data_id, str) or not data_id:
            return register_response(False, None, version, "registId and dataId are required")
        if obj.get("eventType") == "UNREGISTER":
            self.subscriptions.pop(regist_id, None)
            session.regist_ids.discard(regist_id)
            return register_response(True, regist_id, version)
        sub = Subscription(regist_id, data_id, obj.get("group") or "DEFAULT_GROUP",
                           obj.get("zone") or "DEFAULT_ZONE", obj.get("scope") or "zone", session)
        self.subscriptions[regist_id] = sub
        session.regist_ids.add(regist_id)
        # push after the response is on the wire: the client knows the subscriber by then
        asyncio.get_running_loop().call_soon(self._push, sub.data_id, sub.group, [sub])
        return register_response(True, regist_id, version)

    def _drop_session(self, session: Session) -> None:
        changed = set()
        for rid in session.regist_ids:
            pub = self.publications.pop(rid, None)
            if pub is not None:
                changed.add((pub.data_id, pub.group))
            self.subscriptions.pop(rid, None)
        session.regist_ids.clear()
        for data_id, group in changed:
            self._changed(data_id, group)

    def _changed(self, data_id: str, group: str) -> None:
        self._push(data_id, group, None)
        self.on_change(data_id)

    def data_of(self, data_id: str, group: str | None = None) -> list[Publication]:
        return [p for p in self.publications.values()
                if p.data_id == data_id and (group is None or p.group == group)]

    def _push(self, data_id: str, group: str, subs: list[Subscription] | None) -> None:
        if subs is None:
            subs = [s for s in self.subscriptions.values() if s.data_id == data_id and s.group == group]
        if not subs:
            return
        by_zone: dict[str, list[str]] = {}
        for pub in self.data_of(data_id, group):
            by_zone.setdefault(pub.zone, []).extend(pub.data)
        self._version += 1
        by_session: dict[Session, list[Subscription]] = {}
        for s in subs:
            by_session.setdefault(s.session, []).append(s)
        for session, ss in by_session.items():
            content = received_data(data_id, group, [s.regist_id for s in ss], by_zone, self._version,
                                    ss[0].zone, ss[0].scope)
            session.send(bf.encode_request(next(session.ids), timeout_ms=3000,
                                           class_name=RECEIVED_DATA.encode(), content=content))
            self.pushes += 1

    def describe(self) -> dict[str, object]:
        return {"bolt": self.advertise, "http": self.http.address if self.http else None,
                "sessions": len(self._sessions), "pushes": self.pushes,
                "publishers": {rid: {"dataId": p.data_id, "group": p.group, "data": p.data, "zone": p.zone,
                                     "app": p.app, "session": p.session.peer}
                               for rid, p in sorted(self.publications.items())},
                "subscribers": {rid: {"dataId": s.data_id, "group": s.group, "session": s.session.peer}
                                for rid, s in sorted(self.subscriptions.items())}}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


