"""The ``native`` xDS transport: Pilot's ADS served on the project's own HTTP/2 codec.

One asyncio protocol per connection drives a server-role :class:`Http2Codec` (frames, HPACK,
SETTINGS, flow control, PING answered inside the codec); this module adds gRPC on top (PROTOCOL-
HTTP2.md): the 5-byte message prefix, ``application/grpc`` heads, ``grpc-status``/``grpc-message``
trailers (trailers-only when nothing was sent), ``grpc-timeout`` ignored (an ADS stream has none).
Each ADS stream is one task reading :meth:`AdsServer.responses`; the server's serialized
responses (shared across clients) are written as they are, behind their prefix. Requests are
parsed as they arrive and handed to the server, no extra task per stream.

Errors answer the stream that made them, the connection serves on: a compressed message
(UNIMPLEMENTED: no ``grpc-encoding`` is accepted), a message over 4 MiB (RESOURCE_EXHAUSTED), one
that does not parse (INTERNAL, as grpcio's deserializer failure), a stream ending inside a message
(INTERNAL), an unknown method (UNIMPLEMENTED), a content-type that is not gRPC (HTTP 415). An
HTTP/2 connection error (the codec's) is a GOAWAY naming it and the end of that connection only.
Stopping sends GOAWAY(NO_ERROR) on every connection, then ends its streams with ``grpc-status: 0``.

Other services on the port (the CSR API's grpc generic handler) are served as unary calls: the
handler gets the parsed request and a context with ``peer()``, ``invocation_metadata()`` (``-bin``
values base64-decoded) and ``abort(code, details)``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
from google.protobuf.message import DecodeError

from sofamesh.core.catalog import Catalog
from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.errors import RemoteProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    BodyChunk,
    EndOfMessage,
    GoAway,
    RequestHead,
    ResponseHead,
    StreamReset,
    WindowOpened,
)
from sofamesh.core.headers import Headers
from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.xds.server import AdsServer, Stream
from sofamesh.pilot.xds.transport import ADS_METHODS, ADS_SERVICE, AdsStreams, XdsTransport, XdsTransportFactory
from sofamesh.plugins.protocols.http2 import frames
from sofamesh.plugins.protocols.http2.codec import Http2Codec
from sofamesh.plugins.protocols.http2.grpc import encode_message, is_grpc

log = logging.getLogger("sofamesh.pilot.xds")

MAX_MESSAGE = 4 * 1024 * 1024  # gRPC's default receive limit
_ADS_PATHS = {f"/{ADS_SERVICE}/{method}": (mode, request) for method, (mode, request) in ADS_METHODS.items()}
_HEAD = Headers([("content-type", "application/grpc")])
_OK = Headers([("grpc-status", "0")])
_OK_CODE = 0
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]
_UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


class _Call:
    """One gRPC stream on a connection."""

    __slots__ = (
        "buf",
        "done",
        "drained",
        "handler",
        "mode",
        "parse",
        "pending",
        "remote_done",
        "sid",
        "started",
        "stream",
        "task",
    )

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.buf = bytearray()  # received bytes of a message not complete yet
        self.mode = ""  # "sotw" / "delta" for ADS; "" for a unary call
        self.parse: Any = None  # the request type's FromString
        self.stream: Stream | None = None
        self.handler: Any = None  # grpc RpcMethodHandler of a unary call
        self.pending = b""  # a message the stream's send window did not take yet
        self.drained: asyncio.Future[None] | None = None  # set when ``pending`` went out, or the call died
        self.started = False  # response HEADERS sent
        self.remote_done = False
        self.done = False  # answered (trailers sent) or reset
        self.task: asyncio.Task[None] | None = None


class _Aborted(Exception):
    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code


class _CallDetails(NamedTuple):  # grpc.HandlerCallDetails' fields
    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class _UnaryContext:
    """What a unary handler on the port may ask of its call (the CSR API's use of grpc's context)."""

    def __init__(self, peer: str, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self._peer = peer
        self._metadata = metadata

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code.value[0], details)


def _metadata(headers: Headers) -> tuple[tuple[str, str | bytes], ...]:
    out: list[tuple[str, str | bytes]] = []
    for k, v in headers:
        key = k.lower()
        if key[:1] == ":" or key in ("content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"):
            continue
        if key.endswith("-bin"):
            try:
                out.append((key, base64.b64decode(v + "=" * (-len(v) % 4))))
            except ValueError:
                continue  # not base64: dropped, as gRPC does
        else:
            out.append((key, v))
    return tuple(out)


class _Connection(asyncio.Protocol):
    def __init__(self, server: NativeTransport) -> None:
        self.server = server
        self.ads = server.ads
        self.codec = Http2Codec(
            Role.SERVER,
            CodecLimits(max_header_bytes=64 * 1024),
            initial_window_size=1024 * 1024,
            connection_window_size=16 * 1024 * 1024,
        )
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.paused: asyncio.Future[None] | None = None  # the socket's write buffer is full
        self.closed = False
        self._batch: list[bytes] | None = None  # while reading: what to write once the read is handled

    # -- connection ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host, port = peer[0], peer[1]
            self.peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self._write(self.codec.data_to_send())  # our SETTINGS

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for call in list(self.calls.values()):
            self._dead(call)
        self.calls.clear()
        self._resume()

    def pause_writing(self) -> None:
        self.codec.write_blocked(True)  # frames the peer makes us queue now count as a flood
        if self.paused is None:
            self.paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.codec.write_blocked(False)
        self._resume()

    def _resume(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    def _write(self, data: bytes) -> None:
        if data and not self.closed and self.transport is not None:
            if self._batch is not None:
                self._batch.append(data)
            else:
                self.transport.write(data)

    def goaway(self) -> None:
        if not self.closed:
            self._write(self.codec.send(GoAway(reason="pilot shutting down")))

    def data_received(self, data: bytes) -> None:
        codec = self.codec
        codec.receive_data(data)
        batch: list[bytes] = []
        self._batch = batch
        try:
            while True:
                ev = codec.next_event()
                if ev is NEED_DATA:
                    break
                t = type(ev)
                if t is BodyChunk:
                    assert isinstance(ev, BodyChunk)
                    self._body(ev.stream_id, ev.data)
                elif t is RequestHead:
                    assert isinstance(ev, RequestHead)
                    self._request(ev)
                elif t is EndOfMessage:
                    assert isinstance(ev, EndOfMessage)
                    self._end(ev.stream_id)
                elif t is WindowOpened:
                    assert isinstance(ev, WindowOpened)
                    self._window(ev.stream_id)
                elif t is StreamReset:
                    assert isinstance(ev, StreamReset)
                    call = self.calls.pop(ev.stream_id, None)
                    if call is not None:
                        self._dead(call)
                # GoAway from the client: its open streams go on; Heartbeat: the codec answered the PING
        except RemoteProtocolError as exc:
            log.warning("xds %s: closing the connection: %s", self.peer, exc)
            batch.append(codec.data_to_send())  # the GOAWAY naming the error
            self._flush_batch()
            self.server.protocol_errors += 1
            if self.transport is not None:
                self.transport.close()
            return
        except Exception:  # a bug here must not take the batch (or the loop) with it
            log.exception("xds %s: closing the connection", self.peer)
            self._flush_batch()
            if self.transport is not None:
                self.transport.close()
            return
        batch.append(codec.data_to_send())
        self._flush_batch()

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch:
            self._write(b"".join(batch))

    # -- requests ------------------------------------------------------------------------------
    def _request(self, head: RequestHead) -> None:
        sid = head.request_id
        call = _Call(sid)
        self.calls[sid] = call
        call.remote_done = head.end_stream
        if not is_grpc(head.headers.get("content-type")):
            self.calls.pop(sid, None)
            call.done = True
            self._write(
                self.codec.send(
                    ResponseHead(
                        protocol="http2",
                        request_id=sid,
                        status=415,
                        http_status=415,
                        headers=Headers([("content-type", "text/plain")]),
                        end_stream=True,
                    )
                )
            )
            if not head.end_stream:
                self._write(self.codec.reset(sid, frames.NO_ERROR))
            return
        ads = _ADS_PATHS.get(head.path)
        if ads is not None:
            call.mode, request = ads
            call.parse = request.FromString
            call.stream = st = self.ads.open_stream(call.mode, self.peer)
            call.task = asyncio.get_running_loop().create_task(self._respond(call, st))
            return
        method_handler = None
        details = _CallDetails(head.path, _metadata(head.headers))
        for h in self.server.extra:
            method_handler = h.service(details)
            if method_handler is not None:
                break
        if method_handler is None or method_handler.unary_unary is None:
            self._finish(call, _UNIMPLEMENTED, f"unknown method {head.path}")
            return
        call.handler = (method_handler, details)
        if head.end_stream:
            self._finish(call, _INTERNAL, "the request carries no message")

    def _body(self, sid: int, data: bytes) -> None:
        self._write(self.codec.acknowledge(sid, len(data)))  # parsed now: the window is not held for it
        call = self.calls.get(sid)
        if call is None or call.done:
            return
        buf = call.buf
        buf += data
        while len(buf) >= 5:
            flag = buf[0]
            size = int.from_bytes(buf[1:5], "big")
            if flag != 0:
                self._finish(
                    call,
                    _UNIMPLEMENTED,
                    "compressed message: no grpc-encoding is accepted"
                    if flag == 1
                    else f"message prefix flag {flag} is neither 0 nor 1",
                )
                return
            if size > MAX_MESSAGE:
                self._finish(call, _RESOURCE_EXHAUSTED, f"message of {size} bytes is over the {MAX_MESSAGE}-byte limit")
                return
            if len(buf) < 5 + size:
                return
            message = bytes(buf[5 : 5 + size])
            del buf[: 5 + size]
            if call.stream is None:  # a unary call: one message, handled when the client ends the stream
                if call.handler is None or len(call.handler) > 2:
                    self._finish(call, _UNIMPLEMENTED, "more than one message on a unary call")
                    return
                call.handler = (*call.handler, message)
                continue
            try:
                request = call.parse(message)
            except DecodeError as exc:
                self._finish(
                    call, _INTERNAL, f"malformed {'Delta' if call.mode == 'delta' else ''}DiscoveryRequest: {exc}"
                )
                return
            AdsServer.received(call.stream, request)

    def _end(self, sid: int) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        call.remote_done = True
        if call.done:
            return
        if call.buf:
            self._finish(call, _INTERNAL, f"the stream ended inside a message ({len(call.buf)} bytes of it)")
            return
        if call.stream is not None:
            AdsServer.ended(call.stream)  # the responder finishes with grpc-status 0
        elif call.handler is not None and len(call.handler) == 3:
            call.task = asyncio.get_running_loop().create_task(self._unary(call))
        else:
            self._finish(call, _INTERNAL, "the request carries no message")

    def _window(self, sid: int) -> None:
        if sid == 0:
            for waiting in list(self.calls.values()):
                if waiting.pending:
                    self._send_pending(waiting)
        else:
            call = self.calls.get(sid)
            if call is not None and call.pending:
                self._send_pending(call)

    # -- responses -----------------------------------------------------------------------------
    def _head(self, call: _Call) -> None:
        if not call.started:
            call.started = True
            self._write(
                self.codec.send(
                    ResponseHead(
                        protocol="http2",
                        request_id=call.sid,
                        status=200,
                        http_status=200,
                        headers=_HEAD,
                        end_stream=False,
                    )
                )
            )

    def _send_pending(self, call: _Call) -> None:
        room = self.codec.sendable(call.sid)
        data = call.pending
        if room <= 0:
            return
        if room >= len(data):
            call.pending = b""
            self._write(self.codec.send(BodyChunk(data=data, stream_id=call.sid)))
            drained, call.drained = call.drained, None
            if drained is not None and not drained.done():
                drained.set_result(None)
        else:
            call.pending = data[room:]
            self._write(self.codec.send(BodyChunk(data=data[:room], stream_id=call.sid)))

    async def _send(self, call: _Call, message: bytes) -> None:
        """One gRPC message; returns once the windows took all of it (or the call died)."""
        if self.paused is not None:
            await self.paused
        if call.done:
            return
        self._head(call)
        call.pending = len(message).to_bytes(5, "big") + message  # flag 0: not compressed
        self._send_pending(call)
        if call.pending and not call.done:
            call.drained = asyncio.get_running_loop().create_future()
            await call.drained

    async def _respond(self, call: _Call, st: Stream) -> None:
        try:
            async with contextlib.aclosing(self.ads.responses(st)) as responses:
                async for resp in responses:
                    await self._send(call, resp)
                    if call.done:
                        return
            self._finish(call, _OK_CODE, "")
        except Exception:  # a bug in the stream logic must not end the connection
            log.exception("xds %s: stream %d failed", self.peer, call.sid)
            self._finish(call, _INTERNAL, "pilot failed serving this stream")

    async def _unary(self, call: _Call) -> None:
        method_handler, details, message = call.handler
        try:
            try:
                request = method_handler.request_deserializer(message)
            except DecodeError as exc:
                raise _Aborted(_INTERNAL, f"malformed request: {exc}") from None
            result = method_handler.unary_unary(request, _UnaryContext(self.peer, details.invocation_metadata))
            if inspect.isawaitable(result):
                result = await result
            await self._send(call, method_handler.response_serializer(result))
            self._finish(call, _OK_CODE, "")
        except _Aborted as exc:
            self._finish(call, exc.code, str(exc))
        except Exception:
            log.exception("xds %s: %s failed", self.peer, details.method)
            self._finish(call, _INTERNAL, f"{details.method} failed")

    def _finish(self, call: _Call, code: int, message: str) -> None:
        """Trailers (trailers-only when nothing was sent) and the end of the call."""
        if call.done:
            return
        call.done = True
        if self.closed:
            self._dead(call)
            return
        fields = [("grpc-status", str(code))]
        if message:
            fields.append(("grpc-message", encode_message(message)))
        sid = call.sid
        if call.started:
            out = self.codec.send(EndOfMessage(trailers=_OK if code == _OK_CODE else Headers(fields), stream_id=sid))
        else:
            out = self.codec.send(
                ResponseHead(
                    protocol="http2",
                    request_id=sid,
                    status=200,
                    http_status=200,
                    headers=Headers([("content-type", "application/grpc"), *fields]),
                    end_stream=True,
                )
            )
        if not call.remote_done:  # the client is still sending: stop it (RFC 9113 8.1)
            out += self.codec.reset(sid, frames.NO_ERROR)
        self._write(out)
        self.calls.pop(sid, None)
        self._dead(call)

    def _dead(self, call: _Call) -> None:
        call.done = True
        call.pending = b""
        if call.stream is not None:
            AdsServer.ended(call.stream)
        drained, call.drained = call.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


class NativeTransport(XdsTransport):
    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.connections: set[_Connection] = set()
        self.extra: Sequence[Any] = ()
        self.protocol_errors = 0
        self._ads: AdsServer | None = None

    @property
    def ads(self) -> AdsServer:
        assert self._ads is not None
        return self._ads

    async def start(
        self, ads: AdsStreams, host: str, port: int, extra: Sequence[Any], loopback: bool
    ) -> tuple[int, int]:
        assert isinstance(ads, AdsServer)
        self._ads, self.extra = ads, extra
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096)
        self.servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        loopback_port = 0
        if loopback:
            lo = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, backlog=4096)
            self.servers.append(lo)
            loopback_port = int(lo.sockets[0].getsockname()[1])
        return bound, loopback_port

    async def stop(self, grace: float) -> None:
        """No new connections, GOAWAY(NO_ERROR) on every connection (no new streams on it, as gRPC's
        graceful stop); the streams (told to end by the server) finish with their status within
        ``grace``; then the connections close."""
        for server in self.servers:
            server.close()
        self.servers.clear()
        conns = list(self.connections)
        for conn in conns:
            conn.goaway()
        tasks = [c.task for conn in conns for c in conn.calls.values() if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()  # after what is buffered is written

    def describe(self) -> dict[str, Any]:
        return {"connections": len(self.connections), "protocol_errors": self.protocol_errors}


class _Factory:
    def create(self) -> XdsTransport:
        return NativeTransport()


@hookimpl
def pilot_register_xds_transports(catalog: Catalog[XdsTransportFactory]) -> None:
    catalog.add("native", _Factory())


__all__ = ["MAX_MESSAGE", "NativeTransport"]
