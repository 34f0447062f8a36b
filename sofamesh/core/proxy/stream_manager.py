"""DownstreamConnection: sniffs the protocol, drives the codec, and turns its events into Streams.

Also the undecoded ``tcp`` passthrough session. What a connection serves with (routes, filters,
clusters) is its ``ListenerRuntime`` (``core/proxy/runtime.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from sofamesh.core.codec import Codec, CodecFactory, CodecState, ReplyStatus, Role, Sniff
from sofamesh.core.errors import ProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfMessage,
    GoAway,
    Heartbeat,
    RequestHead,
    StreamReset,
    WindowOpened,
)
from sofamesh.core.net.connection import Connection
from sofamesh.core.net.tls import peer_identity
from sofamesh.core.pressure import PROCESS, RESET_MIN_BYTES
from sofamesh.core.proxy.sni import MORE, server_name
from sofamesh.core.proxy.stream import Stream

if TYPE_CHECKING:
    from sofamesh.core.endpoint import Endpoint
    from sofamesh.core.proxy.router import Route
    from sofamesh.core.proxy.runtime import ListenerRuntime
    from sofamesh.core.upstream.cluster import Cluster

log = logging.getLogger("sofamesh.connection")

_MAX_SNIFF = 64
HELLO_TIMEOUT_S = 15.0  # a connection that chooses by SNI and sends no ClientHello (Envoy's listener filter timeout)
_MAX_STREAM_ID = 2**31 - 1
GOAWAY_GRACE = 1.0
"""Seconds between a draining connection's first GOAWAY and its last (RFC 9113 6.8: at least one
round trip, for streams the client opened before it saw the first)."""


class DownstreamConnection(Connection):
    """One accepted connection: the StreamManager of the architecture."""

    __slots__ = ("active", "backlog", "born", "codec", "codec_sends", "discarding", "draining", "factory", "head_at",
                 "held", "multiplexed", "peer_identity", "ping_at", "ping_wait", "prefix", "refused", "resumed",
                 "retiring", "rt", "rx", "rx_at", "rx_seen", "streams", "tcp", "tx_at", "tx_seen")

    def __init__(self, rt: ListenerRuntime, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.rt = rt
        self.codec: Codec = None  # type: ignore[assignment]
        self.factory: CodecFactory = None  # type: ignore[assignment]
        self.prefix = b""
        self.multiplexed = False
        self.codec_sends = True  # whether the codec may have bytes of its own to write (data_to_send)
        self.streams: dict[int, Stream] = {}
        self.active: Stream | None = None
        self.backlog: deque[object] | None = None  # events waiting for the active stream; made on first use
        self.discarding = False
        self.draining = 0  # ``drain``: 1 after a graceful GOAWAY (streams may still come), 2 closing when idle
        self.peer_identity: str | None = None
        self.tcp: TcpSession | None = None
        self.resumed: tuple[CodecFactory | None, CodecState] | None = None  # moved in by a hot upgrade
        # slow-peer marks, read by the listener's sweep (``slow_peers.py``), not on the request path
        self.head_at = 0.0  # loop time of the first read of a message not decoded yet; 0: none
        self.rx = 0  # reads so far
        self.born = self.rx_at = self.tx_at = self.last_active
        self.rx_seen = self.tx_seen = 0
        self.ping_at = 0.0  # a keepalive ping went out then and nothing came back yet
        self.ping_wait = 0.0  # the silence (s) the next keepalive ping waits for, jitter drawn; 0: not drawn yet
        self.retiring = 0.0  # max_connection_duration reached then: draining
        self.refused = False  # closed on accept (a connection limit or overload): never counted
        self.held = 0  # bytes of an undecoded message counted in PROCESS.held (``_hold``)

    # -- lifecycle ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        rt = self.rt
        p = PROCESS
        if p.reject or (p.max_cx and p.active_cx >= p.max_cx) or (
                rt.max_connections and rt.stats.downstream_cx_active >= rt.max_connections):
            self._refuse(transport)
            return
        p.active_cx += 1
        if self.resumed is None:
            rt.stats.downstream_cx_total += 1  # a connection moved in by a hot upgrade is not a new one
        rt.stats.downstream_cx_active += 1
        rt.connections.add(self)
        if transport.get_extra_info("ssl_object") is not None:
            self.peer_identity = peer_identity(transport)
        if self.resumed is not None:
            self._resume(*self.resumed)
        elif len(rt.factories) == 1 and rt.factories[0].passthrough:
            self._use(rt.factories[0])
        # A decoding listener's codec is made on the first bytes: an idle connection holds none.

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        """Close a connection on accept: a listener's or the process's limit, or overload."""
        self.refused = True
        rt, p = self.rt, PROCESS
        if p.reject:
            rt.stats.downstream_cx_overload_reject += 1
        elif p.max_cx and p.active_cx >= p.max_cx:
            rt.stats.downstream_global_cx_overflow += 1
        else:
            rt.stats.downstream_cx_overflow += 1
        transport.abort()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.refused:
            return
        PROCESS.active_cx -= 1
        if self.held:
            self._release()
        rt = self.rt
        rt.stats.downstream_cx_active -= 1
        rt.connections.discard(self)
        if self.tcp is not None:
            self.tcp.downstream_lost()
        streams = list(self.streams.values())
        if self.active is not None:
            streams.append(self.active)
        self.streams.clear()
        self.active = None
        if self.backlog:
            self.backlog.clear()
        if streams:
            rt.stats.downstream_cx_destroy_with_active_rq += 1
        for s in streams:
            s.abort()

    def _use(self, factory: CodecFactory) -> None:
        self.factory = factory
        if factory.passthrough:
            self.tcp = TcpSession(self)
            return
        self.codec = factory.new_codec(Role.SERVER, self.rt.limits)
        self.multiplexed = factory.multiplexed
        # a codec that keeps the base data_to_send never has any: skip the call after each read
        self.codec_sends = type(self.codec).data_to_send is not Codec.data_to_send

    # -- bytes in ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.rx += 1
        if not self.head_at:
            self.head_at = self.loop.time()
        if self.codec is None:
            if self.tcp is not None:
                self.tcp.downstream_data(data)
                return
            factories = self.rt.factories
            if len(factories) == 1:
                self._use(factories[0])  # one protocol: nothing to sniff
            else:
                data = self._sniff(data)
                if not data:
                    return
            if self.tcp is not None:
                self.tcp.downstream_data(data)
                return
        self.codec.receive_data(data)
        batch = self.batch
        batch.depth += 1  # batch.begin(), inlined: this runs for every read
        try:
            self._pump()
        finally:
            batch.end_read()
        if self.head_at:  # nothing decoded from this read: the codec holds a message spanning reads
            self._hold(len(data))
        elif self.held:
            self._release()

    def _hold(self, n: int) -> None:
        """Count ``n`` more bytes of an undecoded message against the process's budget
        (``Pressure.held_limit``, set by the overload manager's ``reset_high_memory_stream``); a
        connection holding at least ``RESET_MIN_BYTES`` when the budget is spent is reset."""
        self.held += n
        p = PROCESS
        p.held += n
        if p.held_limit and p.held > p.held_limit and self.held >= RESET_MIN_BYTES:
            self.reset_for_overload(self.held)

    def reset_for_overload(self, held: int) -> None:
        """The overload manager's ``reset_high_memory_stream``: reset this connection (holding
        ``held`` bytes) and free what its codec holds at once. The aborted transport keeps this
        object alive for a while after (until the loop lets go of it), and the bytes with it."""
        self.rt.stats.downstream_rq_overload_reset += max(1, len(self.streams) + (self.active is not None))
        PROCESS.count("reset_high_memory_stream.resets")
        log.warning("listener %s: overload: resetting %s, holding %d bytes", self.rt.name, self.peer, held)
        if self.held:
            self._release()
        self.abort()
        if self.codec is not None:
            self.codec = self.factory.new_codec(Role.SERVER, self.rt.limits)

    def _release(self) -> None:
        PROCESS.held -= self.held
        self.held = 0

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.codec is not None:
            self.codec.write_blocked(True)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.codec is not None:
            self.codec.write_blocked(False)

    def eof_received(self) -> bool | None:
        if self.tcp is not None:
            return self.tcp.downstream_eof()
        if self.codec is not None:
            self.codec.receive_data(b"")
            self._pump()
        return None

    def _sniff(self, data: bytes) -> bytes:
        prefix = self.prefix + data
        undecided = False
        fallback: CodecFactory | None = None  # a passthrough (tcp) after a protocol that needs more bytes
        for f in self.rt.factories:
            verdict = f.sniff(prefix[: max(f.sniff_bytes, 1)])
            if verdict is Sniff.MATCH:
                if undecided and f.passthrough:  # it takes any bytes: only once no protocol before it can
                    fallback = fallback or f
                    continue
                self.prefix = b""
                self._use(f)
                return prefix
            if verdict is Sniff.NEED_MORE:
                undecided = True
        if undecided and len(prefix) < _MAX_SNIFF:
            self.prefix = prefix
            return b""
        if fallback is not None:
            self.prefix = b""
            self._use(fallback)
            return prefix
        self.rt.stats.downstream_cx_sniff_fail += 1
        names = ", ".join(f.name for f in self.rt.factories)
        log.warning("listener %s: connection from %s speaks none of [%s] (first bytes %r); closing",
                    self.rt.name, self.peer, names, prefix[:16])
        self.abort()
        return b""

    def _pump(self) -> None:
        codec = self.codec
        try:
            while (ev := codec.next_event()) is not NEED_DATA:
                self.head_at = 0.0  # a message (or part of a body) was decoded: the next one starts later
                if self.backlog or (self.active is not None and type(ev) is RequestHead):
                    backlog = self.backlog
                    if backlog is None:
                        backlog = self.backlog = deque()
                    backlog.append(ev)
                    self.read_gate.pause(backlog)  # type: ignore[union-attr]
                    continue
                if type(ev) is RequestHead:
                    self._request(ev)
                else:
                    self._dispatch(ev)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if self.codec_sends:
            out = codec.data_to_send()
            if out:
                self.write(out)

    def _dispatch(self, ev: object) -> None:
        t = type(ev)
        if t is RequestHead:
            self._request(ev)  # type: ignore[arg-type]
        elif t is BodyChunk:
            bs = self._stream_for(ev)
            if bs is not None:
                bs.on_request_body(ev)  # type: ignore[arg-type]
        elif t is EndOfMessage:
            es = self._stream_for(ev)
            if es is not None:
                es.on_request_end(ev)  # type: ignore[arg-type]
            elif not self.multiplexed:
                self.discarding = False
                if not self.codec.keep_alive:
                    self.close()
        elif t is Heartbeat:
            assert isinstance(ev, Heartbeat)
            if not ev.reply:
                self.rt.stats.downstream_heartbeat += 1
                self.write(self.codec.heartbeat_reply(ev))
        elif t is ConnectionClosed:
            if not self.streams and self.active is None:
                self.close()
        elif t is WindowOpened:
            sid = ev.stream_id  # type: ignore[attr-defined]
            if sid:
                ws = self.streams.get(sid)
                if ws is not None and ws.resp_q:
                    ws.flush_response()
            else:
                for ws in list(self.streams.values()):
                    if ws.resp_q:
                        ws.flush_response()
        elif t is StreamReset:
            rs = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if rs is not None:
                rs.abort()  # the client gave up on this stream only
        elif t is GoAway:
            # The client opens no more streams here: serve those it opened (the codec keeps reading,
            # answering PING and WINDOW_UPDATE), then close (RFC 9113 6.8).
            self.codec.keep_alive = False
            if self.multiplexed and self.draining != 1:
                self.draining = 2
                if self.idle():
                    self.close()

    def _request(self, ev: RequestHead) -> None:
        now = self.last_active = self.loop.time()
        stats = self.rt.stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_active += 1
        s = Stream(self, ev, now)
        if self.multiplexed:
            self.streams[ev.request_id] = s
        else:
            self.active = s
            self.discarding = False
        if PROCESS.per_request and self._overloaded(s):
            return
        s.start()

    def _overloaded(self, s: Stream) -> bool:
        """The overload manager's request actions: keep-alive off, and shedding (the protocol's
        overload reply). Keep-alive off acts as Envoy's HTTP connection manager does: HTTP/1 closes
        after this response; an HTTP/2 connection drains (``drain``: GOAWAY now, the last GOAWAY a
        round trip later, closed once its streams end), this stream and those already on their
        way still served."""
        p = PROCESS
        codec = self.codec
        if p.no_keepalive and codec.keep_alive and not self.draining and (
                not self.multiplexed or self.factory.streaming):
            self.rt.stats.downstream_cx_overload_disable_keepalive += 1
            if self.multiplexed:
                self.drain()
            else:
                codec.keep_alive = False
        if p.shed:
            self.rt.stats.downstream_rq_overload_shed += 1
            p.count("stop_accepting_requests.shed")
            s.local_reply(ReplyStatus.OVERLOAD, "overloaded: the proxy sheds new requests")
            return True
        return False

    def _stream_for(self, ev: Any) -> Stream | None:
        if self.multiplexed:
            return self.streams.get(ev.stream_id)
        s = self.active
        if s is None or s.request_done:
            return None
        return s

    def _protocol_error(self, exc: ProtocolError) -> None:
        rt = self.rt
        rt.stats.downstream_cx_protocol_error += 1
        log.info("listener %s: protocol error from %s: %s", rt.name, self.peer, exc)
        status = {413: ReplyStatus.PAYLOAD_TOO_LARGE, 431: ReplyStatus.HEADERS_TOO_LARGE,
                  403: ReplyStatus.DENIED}.get(exc.status_hint, ReplyStatus.CODEC_ERROR)
        active = self.active
        if active is not None and not active.done and not active.response_started:
            active.fail(status, str(exc))  # the request being streamed broke: answer it, then close
        elif isinstance(exc.head, RequestHead) and (active is None or active.done):
            try:
                self.write(self.codec.local_reply(exc.head, status, str(exc)))
            except Exception:
                log.exception("listener %s: codec %s failed to build an error reply", rt.name, self.factory.name)
            rt.stats.downstream_rq_total += 1
            rt.stats.record_status(status.http_status)
        if self.codec_sends:
            # What the codec queued for this error (HTTP/2: GOAWAY with the error code and the last
            # stream id) goes out before the close, so the peer knows what it may retry.
            out = self.codec.data_to_send()
            if out:
                self.write(out)
        self.close()

    # -- streams finishing -------------------------------------------------------------------------
    def stream_done(self, s: Stream) -> None:
        self.rt.stats.downstream_rq_active -= 1
        if self.multiplexed:
            self.streams.pop(s.head.request_id, None)
        elif self.active is s:
            self.active = None
            if not s.request_done:
                self.discarding = True  # the rest of this request's body is read and dropped
            if not self.codec.keep_alive:
                if s.request_done or self.closed or s.upgraded:  # a tunnel ends with either side
                    self.close()
                return
            if self.backlog:
                self.loop.call_soon(self._drain_backlog)
        closing = self.draining == 2 or (self.rt.draining and self.draining != 1)  # not between two GOAWAYs
        if closing and not self.streams and self.active is None:
            self.close()

    def _drain_backlog(self) -> None:
        backlog = self.backlog
        if backlog is None:
            return
        while backlog and not self.closed:
            if self.active is not None and type(backlog[0]) is RequestHead:
                return  # the next pipelined request waits for this one's response (HTTP/1 order)
            self._dispatch(backlog.popleft())
        if not backlog and self.read_gate is not None:
            self.read_gate.resume(backlog)

    def rebind(self, rt: ListenerRuntime) -> None:
        """A reload: requests that start from now on use ``rt``; streams in flight finish on theirs."""
        self.rt.connections.discard(self)
        self.rt = rt
        rt.connections.add(self)

    def idle(self) -> bool:
        return not self.streams and self.active is None and not self.backlog

    # -- hot upgrade (``core/upgrade.py``) ---------------------------------------------------------
    def movable(self) -> bool:
        """Whether another process could carry this connection on: plain TCP (TLS state stays in
        this process), decoded (a tcp session holds its upstream) by a codec that exports state."""
        if self.tcp is not None or self.peer_identity is not None or self.transport is None:
            return False
        if self.transport.get_extra_info("ssl_object") is not None:
            return False
        return self.codec is None or type(self.codec).export_state is not Codec.export_state

    def handover_state(self) -> tuple[str, CodecState] | None:
        """(protocol, codec state) when the connection sits at a message boundary with nothing in
        flight and nothing unwritten, so its socket can move now; else ``None`` (ask again later).
        The protocol is ``""`` before sniffing decided one (the sniffed prefix is the unread bytes)."""
        t = self.transport
        if self.closed or t is None or not self.idle() or self.wbuf or t.get_write_buffer_size():
            return None
        if self.codec is None:
            return "", CodecState(b"", self.prefix)
        st = self.codec.export_state()
        return None if st is None else (self.factory.name, st)

    def resume(self, factory: CodecFactory | None, state: CodecState) -> None:
        """Before ``connection_made``: carry on a connection another process handed over."""
        self.resumed = (factory, state)

    def _resume(self, factory: CodecFactory | None, state: CodecState) -> None:
        if factory is not None:
            self._use(factory)
            self.codec.import_state(state.state)
        if state.unread:
            self.data_received(state.unread)

    def drain(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after their streams end. A
        codec with a graceful GOAWAY (HTTP/2) announces it first, as Envoy's drain does: GOAWAY with
        the largest stream id (the client opens new streams elsewhere; those already on their way
        are served), then after ``GOAWAY_GRACE`` seconds (more than a round trip) a GOAWAY naming
        the last stream the client opened; the connection closes when those have ended."""
        if self.tcp is not None or self.draining:
            return
        codec = self.codec
        if codec is not None:
            if codec.graceful_goaway and not self.closed:
                if self.rt.draining and self.idle():  # the process (or this listener) is going: no grace
                    self.draining = 2
                    self.write(codec.send(GoAway(reason="draining")))
                    self.close()
                    return
                self.draining = 1
                self.write(codec.send(GoAway(reason="draining", last_request_id=_MAX_STREAM_ID)))
                self.loop.call_later(GOAWAY_GRACE, self._last_goaway)
                return
            codec.keep_alive = False
        self.draining = 2
        if self.idle():
            self.close()

    def _last_goaway(self) -> None:
        self.draining = 2
        if self.closed:
            return
        self.write(self.codec.send(GoAway(reason="draining")))
        if self.idle():
            self.close()


class TcpSession:
    """``tcp`` passthrough: bytes to a route's cluster, untouched, with backpressure both ways. The
    first route takes every connection, unless routes match the TLS server name (``host``): then the
    ClientHello is read first (not consumed) and the first route whose name matches takes it."""

    __slots__ = ("buffer", "cluster", "down", "endpoint", "hello", "timer", "up", "up_eof")

    def __init__(self, down: DownstreamConnection) -> None:
        self.down = down
        self.buffer: list[bytes] = []
        self.up: _TcpUpstream | None = None
        self.up_eof = False
        self.endpoint: Endpoint | None = None
        self.cluster: Cluster | None = None
        self.hello: bytes | None = None
        self.timer: asyncio.TimerHandle | None = None
        router = down.rt.router
        if router.by_server_name:
            self.hello = b""
            self.timer = down.loop.call_later(HELLO_TIMEOUT_S, down.abort)
            return
        self._start(router.routes[0] if router.routes else None)

    def _start(self, route: Route | None) -> None:
        down = self.down
        rt = down.rt
        cluster = rt.clusters.get(route.pick_cluster()) if route is not None else None
        self.cluster = cluster
        if cluster is None:
            log.warning("listener %s: tcp connection from %s has no route/cluster; closing", rt.name, down.peer)
            down.loop.call_soon(down.abort)
            return
        self._connect(())

    def _peek(self, data: bytes, eof: bool = False) -> None:
        hello = (self.hello or b"") + data
        name = server_name(hello)
        if name is MORE and not eof:
            self.hello = hello
            return
        self.hello = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if hello:
            self.buffer.append(hello)
        self._start(self.down.rt.router.for_server_name(name if isinstance(name, str) else None))

    def _connect(self, tried: tuple[Any, ...]) -> None:
        cluster = self.cluster
        assert cluster is not None
        ep = cluster.choose(tried)
        down = self.down
        if ep is None:
            down.abort()
            return
        self.endpoint = ep
        up = self.up = _TcpUpstream(self)
        cluster.stats.upstream_cx_total += 1
        cluster.stats.upstream_rq_total += 1

        async def connect() -> None:
            try:
                await asyncio.wait_for(down.loop.create_connection(lambda: up, ep.host, ep.port),
                                       cluster.config.connect_timeout_ms / 1000.0)
            except (TimeoutError, OSError):
                cluster.stats.upstream_cx_connect_fail += 1
                cluster.report_failure(ep)
                if len(tried) + 1 < min(3, len(cluster.endpoints)) and not down.closed:
                    self._connect((*tried, ep))
                else:
                    down.abort()

        task = down.loop.create_task(connect())
        up.task = task
        down.read_gate.pause(self)  # type: ignore[union-attr]

    def downstream_data(self, data: bytes) -> None:
        if self.hello is not None:
            self._peek(data)
            return
        up = self.up
        if up is not None and up.transport is not None:
            up.write(data)
            if up.write_gate.blocked:
                up.write_gate.hold(self.down.read_gate)  # type: ignore[arg-type]
        else:
            self.buffer.append(data)

    def downstream_eof(self) -> bool:
        if self.hello is not None:
            self._peek(b"", eof=True)
        up = self.up
        if up is not None and up.transport is not None and up.transport.can_write_eof():
            up.transport.write_eof()
        else:
            self.up_eof = True
        return True  # keep our side open for the upstream's answer

    def downstream_lost(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.up is not None:
            self.up.close()

    def upstream_ready(self) -> None:
        up = self.up
        assert up is not None
        if self.buffer:
            up.write(b"".join(self.buffer))
            self.buffer = []
        if self.up_eof and up.transport is not None and up.transport.can_write_eof():
            up.transport.write_eof()
        self.down.read_gate.resume(self)  # type: ignore[union-attr]


class _TcpUpstream(Connection):
    __slots__ = ("session", "task")

    def __init__(self, session: TcpSession) -> None:
        super().__init__(session.down.loop)
        self.session = session
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.session.upstream_ready()

    def data_received(self, data: bytes) -> None:
        down = self.session.down
        down.write(data)
        if down.write_gate.blocked and self.read_gate is not None:
            down.write_gate.hold(self.read_gate)

    def eof_received(self) -> bool | None:
        t = self.session.down.transport
        if t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.session.down.close()


__all__ = ["DownstreamConnection", "TcpSession"]
