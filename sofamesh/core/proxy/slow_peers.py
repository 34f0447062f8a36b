"""Timeouts for slow peers: what a downstream connection may hold, and for how long.

Checked by the listener's once-a-second sweep (``core/listeners.py``), never per read or per byte:
a read costs the connection a counter increment and, on a message's first read, one clock read
(``DownstreamConnection.head_at``). Each check here compares those marks with the clock, so a
timeout fires up to one sweep (1 s) after it is due and never before.

- ``request_headers_timeout_ms``: a request head (HTTP/1 request line and headers, an HTTP/2 frame
  or header block, a Bolt or Dubbo frame) must arrive whole within this of its first byte, as
  Envoy's ``request_headers_timeout`` counts it; bytes trickling in do not restart it. The
  connection is closed (slowloris).
- ``body_idle_timeout_ms``: a request whose body stops arriving (nothing read from the connection
  while the proxy was reading) gets a 408-class local reply; an HTTP/1 connection then closes. A
  tunnel after an Upgrade (WebSocket) is left to ``stream_idle_timeout_ms``, as in Envoy.
- ``stream_idle_timeout_ms``: Envoy's, per stream: a stream with no event either way (request or
  response headers, body, end) is answered 408 (the protocol's timeout reply), or ended alone once
  its response started (gRPC trailers, HTTP/2 RST_STREAM); on a multiplexed connection (HTTP/2,
  Bolt, Dubbo) its siblings and the connection carry on. The stream counts its events
  (``Stream.moved``, an increment); the sweep notes when the count last changed.
- ``max_connection_duration_ms``: Envoy's: the connection drains (HTTP/1 ``Connection: close`` on
  the next response, HTTP/2 GOAWAY, RPC closed when idle) and is cut ``DRAIN_S`` later.
- ``Codec.handshake_timeout``: a peer that has not answered the protocol's opening handshake in
  time (HTTP/2: our SETTINGS unacknowledged after 10 s) gets the codec's goodbye
  (GOAWAY(SETTINGS_TIMEOUT)) and the connection is closed.
- ``connection_keepalive``: a multiplexed connection silent for ``interval_ms`` plus a jitter drawn
  for each wait (up to ``interval_jitter_percent`` of it, Envoy's ``interval_jitter``) gets the
  protocol's ping (HTTP/2 PING, Bolt / Dubbo heartbeat) and is closed when nothing arrives within
  ``timeout_ms``.

The request-header, body-idle and keepalive checks judge a connection as a whole; the stream idle
timeout judges each stream.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.events import GoAway

if TYPE_CHECKING:
    from sofamesh.core.config.model import ListenerConfig
    from sofamesh.core.proxy.stream import Stream
    from sofamesh.core.proxy.stream_manager import DownstreamConnection

log = logging.getLogger("sofamesh.connection")

DRAIN_S = 5.0  # Envoy's drain_timeout: how long a connection past max_connection_duration may finish
_PING_ID = 0x7FFF_0000  # request ids of the proxy's own pings: far from a client's counter


class PeerTimeouts:
    """A listener's slow-peer limits in seconds (0 = off), read from its config once per sweep."""

    __slots__ = ("body_idle", "headers", "idle", "max_duration", "ping_interval", "ping_jitter", "ping_timeout",
                 "stream_idle")

    def __init__(self, lc: ListenerConfig) -> None:
        ka = lc.connection_keepalive
        self.idle = lc.idle_timeout_ms / 1000.0
        self.headers = lc.request_headers_timeout_ms / 1000.0
        self.body_idle = lc.body_idle_timeout_ms / 1000.0
        self.stream_idle = lc.stream_idle_timeout_ms / 1000.0
        self.max_duration = lc.max_connection_duration_ms / 1000.0
        self.ping_interval = ka.interval_ms / 1000.0 if ka else 0.0
        self.ping_timeout = ka.timeout_ms / 1000.0 if ka else 0.0
        self.ping_jitter = ka.interval_jitter_percent / 100.0 if ka else 0.0


def expire(conn: DownstreamConnection, now: float, t: PeerTimeouts) -> None:
    """Close, answer or ping what ``conn`` has held too long at loop time ``now``."""
    if conn.closed or conn.tcp is not None:
        return
    if conn.rx != conn.rx_seen:  # read since the last look: the peer is alive
        conn.rx_seen, conn.rx_at, conn.ping_at = conn.rx, now, 0.0
    if conn.tx != conn.tx_seen:
        conn.tx_seen, conn.tx_at = conn.tx, now
    stats = conn.rt.stats
    codec = conn.codec
    if codec is not None and codec.handshake_timeout and now - conn.born >= codec.handshake_timeout:
        out = codec.handshake_overdue()
        if out is not None:
            stats.downstream_cx_protocol_error += 1
            log.info("listener %s: %s did not acknowledge the handshake in %.1f s; closing", conn.rt.name, conn.peer,
                     codec.handshake_timeout)  # fmt: skip
            conn.write(out)
            conn.close()
            return
    if t.headers and conn.head_at and now - conn.head_at >= t.headers and (conn.codec is None or conn.codec.partial()):
        stats.downstream_rq_header_timeout += 1
        log.info("listener %s: %s sent no whole request head in %.1f s; closing", conn.rt.name, conn.peer, t.headers)
        conn.close()
        return
    if conn.retiring:
        if conn.idle():
            conn.close()
        elif now - conn.retiring >= DRAIN_S:
            conn.abort()
        return
    if t.max_duration and now - conn.born >= t.max_duration:
        stats.downstream_cx_max_duration_reached += 1
        _retire(conn, now)
        return
    if conn.idle():
        if t.idle and now - conn.last_active > t.idle:
            stats.downstream_cx_idle_timeout += 1
            conn.close()
            return
    else:
        _stalled_streams(conn, now, t)
        if conn.closed:
            return
    if t.ping_interval and conn.multiplexed and conn.codec is not None:
        _keepalive(conn, now, t)


def _streams(conn: DownstreamConnection) -> list[Stream]:
    out = list(conn.streams.values())
    if conn.active is not None:
        out.append(conn.active)
    return out


def _stalled_streams(conn: DownstreamConnection, now: float, t: PeerTimeouts) -> None:
    stats = conn.rt.stats
    reading = conn.read_gate is not None and not conn.read_gate.paused  # paused: the proxy holds it back
    if t.body_idle and reading and now - conn.rx_at >= t.body_idle:
        waiting = [s for s in _streams(conn) if not s.request_done and not s.done and not s.upgraded]
        if waiting:
            stats.downstream_rq_body_timeout += len(waiting)
            msg = f"request body idle for {t.body_idle:.1f} s"
            for s in waiting:
                _time_out(conn, s, msg)
            if not conn.multiplexed:
                conn.close()  # the rest of the body would come in where the next request should
            return
    if t.stream_idle and conn.multiplexed:
        idle = []
        for s in conn.streams.values():
            if s.moved != s.moved_seen:
                s.moved_seen, s.moved_at = s.moved, now
            elif not s.done and now - s.moved_at >= t.stream_idle:
                idle.append(s)
        stats.downstream_rq_idle_timeout += len(idle)
        msg = f"stream idle for {t.stream_idle:.1f} s"
        for s in idle:
            s.idle_timeout(msg)
        return
    if t.stream_idle and now - max(conn.rx_at, conn.tx_at) >= t.stream_idle:  # HTTP/1: its one stream
        live = [s for s in _streams(conn) if not s.done]
        stats.downstream_rq_idle_timeout += len(live)
        msg = f"stream idle for {t.stream_idle:.1f} s"
        for s in live:
            _time_out(conn, s, msg)
        conn.close()


def _time_out(conn: DownstreamConnection, s: Stream, message: str) -> None:
    if s.response_started:
        s.abort()
        conn.close()  # half a response went out: only closing tells the client it will not end
    else:
        s.fail(ReplyStatus.REQUEST_TIMEOUT, message)


def _retire(conn: DownstreamConnection, now: float) -> None:
    conn.retiring = now
    codec = conn.codec
    if codec is None:
        conn.close()
        return
    codec.keep_alive = False
    if conn.factory.streaming:
        try:
            conn.write(codec.send(GoAway()))
        except Exception:  # a codec that cannot say goodbye is closed when idle
            pass
    if conn.idle():
        conn.close()


def _keepalive(conn: DownstreamConnection, now: float, t: PeerTimeouts) -> None:
    if conn.ping_at:
        if now - conn.ping_at >= t.ping_timeout:
            conn.rt.stats.downstream_cx_keepalive_timeout += 1
            log.info("listener %s: %s answered no ping in %.1f s; closing", conn.rt.name, conn.peer, t.ping_timeout)
            conn.abort()
        return
    wait = conn.ping_wait
    if not wait:
        wait = conn.ping_wait = t.ping_interval * (1.0 + t.ping_jitter * random.random())
    if now - max(conn.rx_at, conn.tx_at) < wait:
        return
    try:
        ping = conn.codec.heartbeat(_PING_ID)
    except NotImplementedError:
        return  # a protocol without pings: only the idle timeout applies
    conn.ping_at = now
    conn.ping_wait = 0.0  # the next wait draws its own jitter
    conn.write(ping)


__all__ = ["DRAIN_S", "PeerTimeouts", "expire"]
