"""Connection pools: exclusive keep-alive (HTTP/1) and multiplexed with request-id remap (Bolt, Dubbo).

Pools and upstream connections talk to streams through a small callback surface:
``on_upstream_ready(conn)`` (exclusive), ``on_connect_failed(reason, timeout)``,
``on_response_head/body/end(event)``, ``on_upstream_reset(reason, refused)`` and ``on_overflow()``.

With circuit breakers (``PoolOwner.breaker``) a pool counts its connections and the requests
waiting for one (pending), and answers overflow when a threshold is reached; a request that needs a
new connection beyond ``max_connections`` waits for one of the pool's own to free up, as in Envoy.

A multiplexed pool probes its connection with the protocol's ping: every ``heartbeat_interval_ms``
by default, or as the cluster's ``connection_keepalive`` says (Envoy's: ``interval_ms`` of silence
plus jitter, ``timeout_ms`` for an answer, and ``connection_idle_interval_ms``: a ping ahead of a
request on a connection that long silent); one that does not answer is closed and the next request
opens a new one.

Connection limits (Envoy's ``max_requests_per_connection``, ``max_connection_duration`` and
``idle_timeout``): a connection that served its last request or lived its time takes no new one; an
HTTP/1 connection then closes when its exchange ends, a multiplexed one is retired (new requests
open the next) and closed by the sweep once its last response came. A pool without limits counts
nothing (``Pool.limited``).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import deque
from typing import TYPE_CHECKING, ClassVar, Protocol

from sofamesh.core.codec import Codec, CodecFactory, CodecLimits, Http2Options, Role
from sofamesh.core.errors import ProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfMessage,
    GoAway,
    Heartbeat,
    RequestHead,
    ResponseHead,
    StreamReset,
    WindowOpened,
)
from sofamesh.core.net.connection import Connection
from sofamesh.core.net.tls import PeerCheck

if TYPE_CHECKING:
    from sofamesh.core.config.model import ClusterConfig, Http2ProtocolOptionsConfig, KeepaliveConfig
    from sofamesh.core.endpoint import Endpoint
    from sofamesh.core.net.flow_control import ReadGate
    from sofamesh.core.net.tls import TlsSource
    from sofamesh.core.stats import ClusterStats
    from sofamesh.core.upstream.circuit_breaker import CircuitBreaker

_LIMITS = CodecLimits()


def http2_options(config: Http2ProtocolOptionsConfig | None) -> Http2Options:
    """A listener's or cluster's ``http2_protocol_options`` as the codec takes them."""
    if config is None:
        return _LIMITS.http2
    return Http2Options(
        config.max_concurrent_streams,
        config.initial_stream_window_size,
        config.initial_connection_window_size,
        config.max_outbound_frames,
        config.max_outbound_control_frames,
        config.max_consecutive_inbound_frames_with_empty_payload,
        config.max_inbound_priority_frames_per_stream,
        config.max_inbound_window_update_frames_per_data_frame_sent,
        config.hpack_table_size,
        tuple((p.identifier, p.value) for p in config.custom_settings_parameters),
        config.stream_error_on_invalid_http_message,
    )


def upstream_limits(config: ClusterConfig) -> CodecLimits:
    """What a cluster's upstream codecs enforce: the defaults, and its ``http2_protocol_options``."""
    if config.http2_protocol_options is None:
        return _LIMITS
    return CodecLimits(http2=http2_options(config.http2_protocol_options))


class PoolOwner(Protocol):
    """What a pool reads of the cluster that owns it (``core/upstream/cluster.py``'s ``Cluster``).
    Read at use, never copied: an update may replace the cluster's config in place."""

    stats: ClusterStats
    config: ClusterConfig
    tls: TlsSource | None
    loop: asyncio.AbstractEventLoop
    breaker: CircuitBreaker | None

    def tls_for(self, ep: Endpoint) -> TlsSource | None: ...


class Downstream(Protocol):
    """What a pool reads of the downstream connection a request came on: its read gate, held
    while the upstream cannot take more of the request."""

    @property
    def read_gate(self) -> ReadGate | None: ...


class PooledStream(Protocol):
    """A request in flight as a pool sees it (``core/proxy/stream.py``'s ``Stream`` is one): the
    state the pool reads and the callbacks it makes."""

    head: RequestHead
    upstream: ExclusiveConnection | MultiplexedConnection | None
    up_id: int
    head_sent: bool
    done: bool
    req_end: EndOfMessage | None
    req_end_sent: bool

    @property
    def req_q(self) -> deque[bytes] | None:
        """Request body not yet sent upstream (None or empty: none)."""
        ...
    @property
    def conn(self) -> Downstream: ...

    def flush_request(self) -> None: ...
    def on_upstream_ready(self, conn: ExclusiveConnection) -> None: ...
    def on_oneway_sent(self) -> None: ...
    def on_overflow(self) -> None: ...
    def on_connect_failed(self, reason: str, timeout: bool) -> None: ...
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, chunk: BodyChunk) -> None: ...
    def on_response_end(self, eom: EndOfMessage) -> None: ...
    def on_upstream_reset(self, reason: str, refused: bool = False) -> None: ...


class UpstreamConnection(Connection):
    """One connection to an endpoint, owned by a pool."""

    __slots__ = ("born", "codec", "codec_sends", "connect_timer", "connected", "idle_since", "pool", "served")

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool.loop)
        self.pool = pool
        self.codec = pool.factory.new_codec(Role.CLIENT, pool.limits)
        # a codec that keeps the base data_to_send never has any: skip the call after each read
        self.codec_sends = type(self.codec).data_to_send is not Codec.data_to_send
        self.connected = False
        self.connect_timer: asyncio.TimerHandle | None = None
        self.idle_since = self.born = self.loop.time()
        self.served = 0  # requests given to it (counted only by a pool with limits)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connected = True
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
        self.pool.cluster.stats.upstream_cx_active += 1
        self.pool.endpoint.cx_active += 1
        self.on_connected()

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        super().connection_lost(exc)
        if self.connected:
            cluster = self.pool.cluster
            cluster.stats.upstream_cx_active -= 1
            self.pool.endpoint.cx_active -= 1
            self.connected = False
            if cluster.breaker is not None:
                cluster.breaker.connections -= 1
        self.pool.forget(self)
        self.on_lost("upstream connection closed" if was_closed or exc is None else f"upstream reset: {exc}")

    def data_received(self, data: bytes) -> None:
        codec = self.codec
        codec.receive_data(data)
        batch = self.batch
        batch.depth += 1  # batch.begin(): responses go to their downstreams in one write each
        try:
            on_event = self.on_event
            while (ev := codec.next_event()) is not NEED_DATA:
                on_event(ev)
        except ProtocolError as exc:
            self.pool.cluster.stats.upstream_cx_protocol_error += 1
            self.on_lost(f"upstream protocol error: {exc}")
            out = codec.data_to_send() if self.codec_sends else b""
            if out:  # the codec's goodbye first (HTTP/2: GOAWAY(PROTOCOL_ERROR)), as Envoy closes
                self.write(out)
                self.close()
            else:
                self.abort()
            return
        finally:
            batch.end_read()
        if self.codec_sends:
            out = codec.data_to_send()
            if out:
                self.write(out)

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        return None

    def pause_writing(self) -> None:
        super().pause_writing()
        self.codec.write_blocked(True)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.codec.write_blocked(False)

    def on_connected(self) -> None:
        raise NotImplementedError

    def on_event(self, ev: object) -> None:
        raise NotImplementedError

    def on_lost(self, reason: str) -> None:
        raise NotImplementedError


class ExclusiveConnection(UpstreamConnection):
    """Carries one stream at a time (HTTP/1 keep-alive)."""

    __slots__ = ("discarding", "queued", "request_done", "stream")

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.stream: PooledStream | None = None
        self.request_done = False
        self.discarding = False  # reading the rest of a response nobody wants (a retried attempt's)
        self.queued = False  # its stream is counted pending by the circuit breaker until connected

    def bind(self, stream: PooledStream) -> None:
        self.stream = stream
        self.request_done = False

    def on_connected(self) -> None:
        pool = self.pool
        assert isinstance(pool, ExclusivePool)
        pool.on_connected(self)

    def on_event(self, ev: object) -> None:
        s = self.stream
        t = type(ev)
        if s is None:
            if self.discarding:
                if t is EndOfMessage:
                    self.discarding = False
                    self._exchange_done()
                return
            if t is not ConnectionClosed:
                self.abort()  # a response nobody asked for: the upstream broke the protocol; drop it
            return
        if t is ResponseHead:
            s.on_response_head(ev)  # type: ignore[arg-type]
        elif t is BodyChunk:
            s.on_response_body(ev)  # type: ignore[arg-type]
        elif t is EndOfMessage:
            self.stream = None
            s.on_response_end(ev)  # type: ignore[arg-type]
            self._exchange_done()

    def _exchange_done(self) -> None:
        pool = self.pool
        if self.request_done and self.codec.keep_alive and not self.closed and isinstance(pool, ExclusivePool):
            pool.release(self)
        else:
            self.close()

    def discard(self, ended: bool) -> None:
        """The stream no longer wants this response (it retries elsewhere): read the rest of it and
        keep the connection if the exchange then ends cleanly. ``ended``: the head had no body."""
        self.stream = None
        if ended:
            self._exchange_done()
        else:
            self.discarding = True

    def on_lost(self, reason: str) -> None:
        s, self.stream = self.stream, None
        if s is not None:
            s.on_upstream_reset(reason)

    def abandon(self) -> None:
        """The stream gave up mid-exchange (timeout, downstream gone): the connection is unusable."""
        self.stream = None
        self.discarding = False
        self.abort()


class MultiplexedConnection(UpstreamConnection):
    """Carries many requests at once, each under an upstream request id we allocate."""

    __slots__ = ("heartbeat_outstanding", "id_mask", "inflight", "last_rx", "next_id", "pending", "ping_at",
                 "ping_wait")

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.inflight: dict[int, PooledStream] = {}
        self.pending: list[PooledStream] = []
        self.id_mask = (1 << pool.factory.request_id_bits) - 1
        self.next_id = 1
        self.heartbeat_outstanding = False
        self.last_rx = self.loop.time()
        self.ping_at = 0.0  # connection_keepalive: a ping went out then (nothing read since: heartbeat_outstanding)
        self.ping_wait = 0.0  # the silence the next one waits for, jitter drawn; 0: not drawn yet

    def on_connected(self) -> None:
        pending, self.pending = self.pending, []
        self.pool.unqueue(len(pending))
        for s in pending:
            if not s.done:
                self.send(s)

    def send(self, stream: PooledStream) -> None:
        if not self.connected:
            if self.pool.queue(stream):
                self.pending.append(stream)
            return
        up_id = self.next_id
        inflight = self.inflight
        while up_id in inflight:  # a wrapped id still in flight: skip it
            up_id = (up_id + 1) & self.id_mask
        self.next_id = (up_id + 1) & self.id_mask or 1
        head = stream.head
        assert head.raw is not None
        self.write(self.codec.rewrite_request_id(head.raw, up_id))
        if head.oneway:
            stream.on_oneway_sent()
            return
        inflight[up_id] = stream
        stream.upstream = self
        stream.up_id = up_id
        if self.write_gate.blocked:
            self.write_gate.hold(stream.conn.read_gate)  # type: ignore[arg-type]

    def cancel(self, up_id: int) -> None:
        self.inflight.pop(up_id, None)

    def data_received(self, data: bytes) -> None:
        # Anything the upstream sends proves it is alive: marked once per read, not per response.
        self.last_rx = self.loop.time()
        self.heartbeat_outstanding = False
        UpstreamConnection.data_received(self, data)

    def on_event(self, ev: object) -> None:
        t = type(ev)
        if t is ResponseHead:
            s = self.inflight.pop(ev.request_id, None)  # type: ignore[attr-defined]
            if s is None:
                self.pool.cluster.stats.upstream_rq_late_response += 1
            else:
                s.on_response_head(ev)  # type: ignore[arg-type]
        elif t is Heartbeat:
            if not ev.reply:  # type: ignore[attr-defined]
                # Some peers (@dubbo.ts) answer a probe with a probe of their own: answer it too.
                self.write(self.codec.heartbeat_reply(ev))  # type: ignore[arg-type]
        elif t is GoAway:
            self.pool.retire(self)

    def on_lost(self, reason: str) -> None:
        inflight, self.inflight = self.inflight, {}
        pending, self.pending = self.pending, []
        self.pool.unqueue(len(pending))
        if inflight:
            self.pool.cluster.stats.upstream_cx_destroy_with_active_rq += 1
        for s in inflight.values():
            s.on_upstream_reset(reason)
        for s in pending:
            if not s.done:
                s.on_connect_failed(reason, timeout=False)

    def heartbeat_tick(self, now: float, interval: float) -> None:
        """Called by the pool every ``interval``: probe an idle connection; close a silent one."""
        if not self.connected or self.closed:
            return
        if now - self.last_rx < interval * 0.9:
            return
        if self.heartbeat_outstanding:
            self.pool.cluster.stats.upstream_heartbeat_failed += 1
            self.abort()  # it stopped answering: in-flight requests get local replies via on_lost
            return
        self.ping(now)

    def keepalive_tick(self, now: float, ka: KeepaliveConfig) -> None:
        """The cluster's ``connection_keepalive``, from the pool's sweep: a ping once nothing was read
        for ``interval_ms`` plus its jitter (drawn for each wait); closed when nothing at all is
        read within ``timeout_ms`` of a ping (this one's or ``ping``'s ahead of a request)."""
        if not self.connected or self.closed:
            return
        if self.ping_at:
            if not self.heartbeat_outstanding:  # a read since (the loop's clock may not have moved)
                self.ping_at = 0.0
            elif now - self.ping_at >= ka.timeout_ms / 1000.0:
                self.pool.cluster.stats.upstream_heartbeat_failed += 1
                self.abort()  # in-flight requests get local replies via on_lost; the next opens a new one
                return
            else:
                return
        if not ka.interval_ms:
            return
        wait = self.ping_wait
        if not wait:
            jitter = ka.interval_jitter_percent / 100.0 * random.random()
            wait = self.ping_wait = ka.interval_ms / 1000.0 * (1.0 + jitter)
        if now - self.last_rx >= wait:
            self.ping(now)

    def ping(self, now: float) -> None:
        """Send the protocol's ping (HTTP/2 PING, Bolt / Dubbo heartbeat; none for a protocol without
        one) at loop time ``now``. ``heartbeat_tick`` or ``keepalive_tick`` judges the answer."""
        try:
            beat = self.codec.heartbeat(self.next_id)
        except NotImplementedError:
            return
        self.next_id = (self.next_id + 1) & self.id_mask or 1
        self.heartbeat_outstanding = True  # until the next read
        self.ping_at = now
        self.ping_wait = 0.0
        self.pool.cluster.stats.upstream_heartbeat_sent += 1
        self.write(beat)


class StreamingConnection(MultiplexedConnection):
    """HTTP/2-style: one stream per request, bodies both ways under flow control, stream resets."""

    __slots__ = ()

    def on_connected(self) -> None:
        preface = self.codec.data_to_send()  # the client preface and SETTINGS
        if preface:
            self.write(preface)
        super().on_connected()

    def send(self, stream: PooledStream) -> None:
        if not self.connected:
            if self.pool.queue(stream):
                self.pending.append(stream)
            return
        codec = self.codec
        sid = codec.new_stream_id()
        head = stream.head
        if head.request_id != sid:
            head = _on_stream(head, sid)
        self.inflight[sid] = stream
        stream.upstream = self
        stream.up_id = sid
        stream.head_sent = True
        self.write(codec.send(head))
        if stream.req_q or stream.req_end is not None:
            stream.flush_request()

    def cancel(self, up_id: int) -> None:
        if self.inflight.pop(up_id, None) is not None and not self.closed:
            self.write(self.codec.reset(up_id))

    @property
    def full(self) -> bool:
        limit = getattr(self.codec, "max_outbound_streams", 100)
        return len(self.inflight) + len(self.pending) >= limit

    def on_event(self, ev: object) -> None:
        t = type(ev)
        inflight = self.inflight
        if t is BodyChunk:
            s = inflight.get(ev.stream_id)  # type: ignore[attr-defined]
            if s is not None:
                s.on_response_body(ev)  # type: ignore[arg-type]
            else:
                self.write(self.codec.acknowledge(ev.stream_id, len(ev.data)))  # type: ignore[attr-defined]
        elif t is ResponseHead:
            sid = ev.request_id  # type: ignore[attr-defined]
            s = inflight.get(sid)
            if s is None:
                self.pool.cluster.stats.upstream_rq_late_response += 1
                return
            if ev.end_stream:  # type: ignore[attr-defined]
                del inflight[sid]
            s.on_response_head(ev)  # type: ignore[arg-type]
        elif t is EndOfMessage:
            s = inflight.pop(ev.stream_id, None)  # type: ignore[attr-defined]
            if s is not None:
                s.on_response_end(ev)  # type: ignore[arg-type]
        elif t is WindowOpened:
            sid = ev.stream_id  # type: ignore[attr-defined]
            if sid:
                s = inflight.get(sid)
                if s is not None:
                    s.flush_request()
            else:
                for s in list(inflight.values()):
                    if s.req_q or (s.req_end is not None and not s.req_end_sent):
                        s.flush_request()
        elif t is StreamReset:
            s = inflight.pop(ev.stream_id, None)  # type: ignore[attr-defined]
            if s is not None:
                s.on_upstream_reset(f"upstream reset the stream ({ev.reason or ev.error_code})",  # type: ignore[attr-defined]
                                    ev.error_code == _REFUSED_STREAM)  # type: ignore[attr-defined]
        elif t is Heartbeat:
            if not ev.reply:  # type: ignore[attr-defined]
                self.write(self.codec.heartbeat_reply(ev))  # type: ignore[arg-type]
        elif t is GoAway:
            # No new streams here: the next request opens a new connection. This one keeps reading:
            # streams at or below the peer's last stream id finish; those above come as StreamReset
            # (REFUSED_STREAM) before this event, for the route's retry policy to send elsewhere. The
            # sweep closes it once its last stream ended (Envoy drains a connection the same way).
            self.pool.retire(self)


_REFUSED_STREAM = 0x7  # HTTP/2 REFUSED_STREAM: the peer did not process the stream; safe to retry


def _on_stream(head: RequestHead, sid: int) -> RequestHead:
    """``head`` under upstream stream id ``sid``. Every field spelled out: ``dataclasses.replace``
    costs about 4x this on every call (a unit test checks that no field is left behind)."""
    return RequestHead(head.protocol, sid, head.service, head.method, head.path, head.version, head.group,
                       head.headers, head.oneway, head.end_stream, head.raw, head.timeout_ms, head.resolve, head.meta)


class Pool:
    """Connections to one endpoint for one upstream protocol."""

    __slots__ = ("closed", "cluster", "endpoint", "factory", "limited", "limits", "loop", "max_duration",
                 "max_requests", "retired", "tasks")

    def __init__(self, cluster: PoolOwner, endpoint: Endpoint, factory: CodecFactory) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.factory = factory
        self.loop = cluster.loop
        self.tasks: set[asyncio.Task[object]] = set()
        self.closed = False
        c = cluster.config
        self.limits = upstream_limits(c)
        self.max_requests = c.max_requests_per_connection
        self.max_duration = c.max_connection_duration_ms / 1000.0
        self.limited = bool(self.max_requests or self.max_duration)
        self.retired: list[MultiplexedConnection] = []  # no new requests; closed when their last one ends

    def spent(self, conn: UpstreamConnection, now: float) -> bool:
        """``conn`` may take no more requests (limits only): counted once, when it is found so."""
        stats = self.cluster.stats
        if self.max_requests and conn.served >= self.max_requests:
            stats.upstream_cx_max_requests += 1
            return True
        if self.max_duration and now - conn.born >= self.max_duration:
            stats.upstream_cx_max_duration_reached += 1
            return True
        return False

    def _open(self, conn: UpstreamConnection, on_fail: list[PooledStream] | None = None) -> None:
        """Start connecting ``conn``; failures are reported through ``conn.on_lost`` or the callers."""
        stats = self.cluster.stats
        stats.upstream_cx_total += 1
        ep = self.endpoint
        cb = self.cluster.breaker
        if cb is not None:
            cb.connections += 1

        async def connect() -> None:
            try:
                tls = self.cluster.tls_for(ep)
                if tls is None:
                    await self.loop.create_connection(lambda: conn, ep.host, ep.port)
                elif tls.config.match_sans:
                    check = PeerCheck(tls, conn)
                    await self.loop.create_connection(lambda: check, ep.host, ep.port, ssl=tls.context(),
                                                      server_hostname=tls.config.sni or ep.host)
                    if check.refused is not None:
                        raise ssl.SSLError(f"TLS peer refused: {check.refused}")
                else:
                    await self.loop.create_connection(lambda: conn, ep.host, ep.port, ssl=tls.context(),
                                                      server_hostname=tls.config.sni or ep.host)
            except asyncio.CancelledError:
                if cb is not None:
                    cb.connections -= 1
                stats.upstream_cx_connect_timeout += 1
                stats.upstream_cx_connect_fail += 1
                self.connect_failed(conn, f"connect timeout after {self.cluster.config.connect_timeout_ms} ms "
                                          f"to {ep.address}", timeout=True)
            except OSError as exc:  # ssl.SSLError is an OSError: a failed handshake is a failed connect
                if cb is not None:
                    cb.connections -= 1
                stats.upstream_cx_connect_fail += 1
                reason = exc.strerror or str(exc) or type(exc).__name__
                self.connect_failed(conn, f"connect to {ep.address} failed: {reason}", timeout=False)

        task = self.loop.create_task(connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        conn.connect_timer = self.loop.call_later(self.cluster.config.connect_timeout_ms / 1000.0, task.cancel)

    def connect_failed(self, conn: UpstreamConnection, reason: str, timeout: bool) -> None:
        raise NotImplementedError

    def queue(self, stream: PooledStream) -> bool:
        """``stream`` is to wait for a connection: count it pending, or (over the circuit breaker's
        ``max_pending_requests``) answer it with overflow and return False."""
        cb = self.cluster.breaker
        if cb is None:
            return True
        stats = self.cluster.stats
        if cb.pending >= cb.max_pending_requests:
            stats.upstream_rq_pending_overflow += 1
            stream.on_overflow()
            return False
        cb.pending += 1
        stats.upstream_rq_pending_active += 1
        return True

    def unqueue(self, n: int) -> None:
        """``n`` requests counted by ``queue`` stopped waiting (connected, failed or gone)."""
        cb = self.cluster.breaker
        if cb is not None and n:
            cb.pending -= n
            self.cluster.stats.upstream_rq_pending_active -= n

    def at_connection_limit(self) -> bool:
        """The circuit breaker's ``max_connections`` is reached (counts ``upstream_cx_overflow``)."""
        cb = self.cluster.breaker
        if cb is not None and cb.connections >= cb.max_connections:
            self.cluster.stats.upstream_cx_overflow += 1
            return True
        return False

    def forget(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def retire(self, conn: MultiplexedConnection) -> None:
        """The peer said GOAWAY on ``conn``: no new requests on it; it closes when its last ends."""
        self.forget(conn)

    def attach(self, stream: PooledStream) -> None:
        raise NotImplementedError

    def withdraw(self, stream: PooledStream) -> None:
        """``stream`` gave up waiting for a connection (a retry's per-try timeout): forget it."""

    def sweep(self, now: float) -> None:
        """Periodic upkeep (idle timeouts, heartbeats)."""

    def close(self) -> None:
        self.closed = True
        for t in list(self.tasks):
            t.cancel()


class ExclusivePool(Pool):
    __slots__ = ("busy", "idle", "waiting")

    def __init__(self, cluster: PoolOwner, endpoint: Endpoint, factory: CodecFactory) -> None:
        super().__init__(cluster, endpoint, factory)
        self.idle: deque[ExclusiveConnection] = deque()
        self.busy: set[ExclusiveConnection] = set()
        self.waiting: deque[PooledStream] = deque()  # over max_connections: for the next free connection

    def attach(self, stream: PooledStream) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.busy.add(conn)
                conn.bind(stream)
                if self.limited:
                    conn.served += 1
                stream.on_upstream_ready(conn)
                return
        if len(self.busy) >= self.cluster.config.max_connections_per_endpoint:
            self.cluster.stats.upstream_cx_overflow += 1
            stream.on_overflow()
            return
        if self.cluster.breaker is not None:
            if not self.queue(stream):
                return
            if self.busy and self.at_connection_limit():
                self.waiting.append(stream)  # as Envoy: a pool with connections waits for one of them
                return
        self._connect_for(stream)

    def _connect_for(self, stream: PooledStream) -> None:
        conn = ExclusiveConnection(self)
        conn.stream = stream
        conn.served = 1
        conn.queued = self.cluster.breaker is not None
        self.busy.add(conn)
        stream.upstream = conn
        self._open(conn)

    def on_connected(self, conn: ExclusiveConnection) -> None:
        if conn.queued:
            conn.queued = False
            self.unqueue(1)
        s = conn.stream
        if s is None or s.done:
            conn.stream = None
            self.release(conn)
        else:
            s.on_upstream_ready(conn)

    def connect_failed(self, conn: UpstreamConnection, reason: str, timeout: bool) -> None:
        assert isinstance(conn, ExclusiveConnection)
        if conn.queued:
            conn.queued = False
            self.unqueue(1)
        self.busy.discard(conn)
        s, conn.stream = conn.stream, None
        if s is not None and not s.done:
            s.on_connect_failed(reason, timeout)
        self._serve_waiting()

    def release(self, conn: ExclusiveConnection) -> None:
        self.busy.discard(conn)
        if self.closed or conn.closed or (self.limited and self.spent(conn, self.loop.time())):
            conn.close()
            self._serve_waiting()
            return
        waiting = self.waiting
        while waiting:
            s = waiting.popleft()
            self.unqueue(1)
            if not s.done:
                self.busy.add(conn)
                conn.bind(s)
                conn.served += 1
                s.on_upstream_ready(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def withdraw(self, stream: PooledStream) -> None:
        try:
            self.waiting.remove(stream)
        except ValueError:
            return
        self.unqueue(1)

    def _serve_waiting(self) -> None:
        """A connection went away: a waiting request with no connection left to wait for gets its own."""
        waiting = self.waiting
        while waiting and not self.busy and not self.closed:
            s = waiting.popleft()
            self.unqueue(1)
            if not s.done:
                self._connect_for(s)
                return

    def forget(self, conn: UpstreamConnection) -> None:
        self.busy.discard(conn)
        try:
            self.idle.remove(conn)  # type: ignore[arg-type]
        except ValueError:
            pass
        if self.waiting:
            self._serve_waiting()

    def sweep(self, now: float) -> None:
        if self.max_duration:
            for conn in [c for c in self.idle if now - c.born >= self.max_duration]:
                self.idle.remove(conn)
                self.cluster.stats.upstream_cx_max_duration_reached += 1
                conn.close()
        limit = self.cluster.config.idle_timeout_ms / 1000.0
        if not limit:
            return
        while self.idle and now - self.idle[0].idle_since > limit:
            conn = self.idle.popleft()
            self.cluster.stats.upstream_cx_idle_timeout += 1
            conn.close()

    def close(self) -> None:
        super().close()
        while self.idle:
            self.idle.pop().close()
        self.unqueue(len(self.waiting))
        self.waiting.clear()


class MultiplexedPool(Pool):
    __slots__ = ("conn", "idle_ping", "last_beat")
    conn_class: ClassVar[type[MultiplexedConnection]] = MultiplexedConnection

    def __init__(self, cluster: PoolOwner, endpoint: Endpoint, factory: CodecFactory) -> None:
        super().__init__(cluster, endpoint, factory)
        self.conn: MultiplexedConnection | None = None
        self.last_beat = self.loop.time()
        ka = cluster.config.connection_keepalive  # connection_idle_interval: a ping ahead of a request
        self.idle_ping = ka.connection_idle_interval_ms / 1000.0 if ka is not None else 0.0

    def attach(self, stream: PooledStream) -> None:
        conn = self.conn
        if self.limited and conn is not None and not conn.closed:
            if self.spent(conn, self.loop.time()):
                self._retire(conn)
                conn = None
            else:
                conn.served += 1
        if conn is None or conn.closed or (isinstance(conn, StreamingConnection) and conn.full):
            if self.cluster.breaker is not None:
                if conn is not None and not conn.closed and self.at_connection_limit():
                    stream.on_overflow()  # a full HTTP/2 connection and no room for another
                    return
                if not self.queue(stream):
                    return
            conn = self.conn = self.conn_class(self)
            conn.pending.append(stream)
            conn.served = 1
            self._open(conn)
            return
        if self.idle_ping and conn.connected and not conn.ping_at:
            now = self.loop.time()
            if now - conn.last_rx >= self.idle_ping:
                conn.ping(now)  # Envoy's connection_idle_interval: a dead connection shows up quickly
        conn.send(stream)

    def _retire(self, conn: MultiplexedConnection) -> None:
        """No new requests on ``conn``; the sweep closes it once its last response came."""
        if self.conn is conn:
            self.conn = None
        if conn not in self.retired:
            self.retired.append(conn)

    def retire(self, conn: MultiplexedConnection) -> None:
        self._retire(conn)

    def connect_failed(self, conn: UpstreamConnection, reason: str, timeout: bool) -> None:
        assert isinstance(conn, MultiplexedConnection)
        if self.conn is conn:
            self.conn = None
        pending, conn.pending = conn.pending, []
        self.unqueue(len(pending))
        for s in pending:
            if not s.done:
                s.on_connect_failed(reason, timeout)

    def forget(self, conn: UpstreamConnection) -> None:
        if self.conn is conn:
            self.conn = None

    def withdraw(self, stream: PooledStream) -> None:
        conn = self.conn
        if conn is not None and stream in conn.pending:
            conn.pending.remove(stream)
            self.unqueue(1)

    def sweep(self, now: float) -> None:
        if self.retired:
            for old in [c for c in self.retired if c.closed or (not c.inflight and not c.pending)]:
                self.retired.remove(old)
                old.close()
        conn = self.conn
        if conn is None:
            return
        if self.max_duration and conn.connected and now - conn.born >= self.max_duration:
            self.cluster.stats.upstream_cx_max_duration_reached += 1
            self._retire(conn)
            return
        codec = conn.codec
        if conn.connected and codec.handshake_timeout and now - conn.born >= codec.handshake_timeout:
            out = codec.handshake_overdue()
            if out is not None:  # the upstream never acknowledged our SETTINGS (HTTP/2)
                self.cluster.stats.upstream_cx_protocol_error += 1
                conn.write(out)
                self.conn = None
                conn.close()
                return
        ka = self.cluster.config.connection_keepalive
        if ka is not None:
            conn.keepalive_tick(now, ka)
        else:
            interval = self.cluster.config.heartbeat_interval_ms / 1000.0
            if interval and now - self.last_beat >= interval:
                self.last_beat = now
                conn.heartbeat_tick(now, interval)
        idle = self.cluster.config.idle_timeout_ms / 1000.0
        if idle and not conn.inflight and not conn.pending and now - conn.last_rx > idle and conn.connected:
            self.cluster.stats.upstream_cx_idle_timeout += 1
            self.conn = None
            conn.close()

    def close(self) -> None:
        super().close()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        for old in self.retired:
            old.close()
        self.retired.clear()


class StreamingPool(MultiplexedPool):
    """One HTTP/2 connection per endpoint carries many streams; a full one (the peer's
    MAX_CONCURRENT_STREAMS) keeps its streams while new ones open the next connection."""

    __slots__ = ()
    conn_class = StreamingConnection


__all__ = ["ExclusiveConnection", "ExclusivePool", "MultiplexedConnection", "MultiplexedPool", "Pool",
           "StreamingConnection", "StreamingPool", "UpstreamConnection"]
