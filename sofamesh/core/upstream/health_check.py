"""Active health checks, as Envoy's cluster ``health_checks``: TCP connect (optionally send bytes and
expect bytes back), HTTP (method, path, host, expected and retriable statuses; HTTP/1 or HTTP/2),
gRPC health v1 (``grpc.health.v1.Health/Check``), and a protocol's own probe (``Codec.health_probe``:
Bolt and Dubbo heartbeats, or whatever a codec plugin defines).

Envoy's rules: an endpoint starts failed and pending until its first check passes (a first success
marks it healthy at once); after that ``unhealthy_threshold`` consecutive failures fail it and
``healthy_threshold`` consecutive successes bring it back. An HTTP status that is neither expected
nor retriable fails it at once; a timeout, a failed connect or a retriable status counts towards
the threshold. The next check is scheduled when one ends: ``interval`` (``no_traffic_interval``
while the cluster has never had a request, ``unhealthy_interval`` for a failed endpoint, the edge
intervals right after a change), plus jitter. Each check opens its own connection.

Nothing here is on the request path: a check changes ``Endpoint.down`` and tells its cluster
(``HealthOwner.health_changed``), which recomputes what its balancer may choose from.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Final, Protocol, cast

from sofamesh.core.codec import Role
from sofamesh.core.endpoint import ACTIVE_HC_TIMEOUT, FAILED_ACTIVE_HC, PENDING_ACTIVE_HC
from sofamesh.core.events import NEED_DATA, BodyChunk, EndOfMessage, RequestHead, ResponseHead, StreamReset
from sofamesh.core.headers import Headers

if TYPE_CHECKING:
    from sofamesh.core.codec import Codec, CodecFactory, CodecLimits
    from sofamesh.core.config.model import HealthCheckConfig
    from sofamesh.core.endpoint import Endpoint
    from sofamesh.core.net.tls import TlsSource
    from sofamesh.core.stats import ClusterStats

HEALTHY: Final = "healthy"
FAILED: Final = "failed"  # counts towards unhealthy_threshold
FAILED_NOW: Final = "failed_now"  # an unexpected HTTP status: unhealthy at once
TIMEOUT: Final = "timeout"

GRPC_HEALTH_PATH: Final = "/grpc.health.v1.Health/Check"
_SERVING: Final = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
USER_AGENT: Final = "sofamesh/hc"


class HealthOwner(Protocol):
    """What a checker reads of its cluster (``core/upstream/cluster.py``'s ``Cluster``)."""

    name: str
    endpoints: list[Endpoint]
    stats: ClusterStats
    loop: asyncio.AbstractEventLoop
    tls: TlsSource | None

    def health_changed(self) -> None: ...

    def tls_for(self, ep: Endpoint) -> TlsSource | None: ...


class _Probe(asyncio.Protocol):
    """One check's connection: writes the probe, reads until ``judge`` has a verdict."""

    def __init__(self, done: asyncio.Future[str], codec: Codec | None, checker: HealthChecker) -> None:
        self.done = done
        self.codec = codec
        self.checker = checker
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.body = bytearray()
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = self.transport = cast("asyncio.Transport", transport)  # uvloop's are not asyncio's classes
        first = self.checker.first_bytes(self)
        if first:
            t.write(first)
        if self.checker.connect_only:
            self._settle(HEALTHY)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            verdict = self.checker.judge(self, data)
        except Exception:  # a codec that cannot read the answer: the endpoint failed the check
            verdict = FAILED
        if verdict is not None:
            self._settle(verdict)

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        self._settle(FAILED)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(FAILED)

    def _settle(self, verdict: str) -> None:
        if not self.done.done():
            self.done.set_result(verdict)
        if self.transport is not None:
            self.transport.close()


class _Session:
    """One endpoint's checking: its timer, its consecutive counts, the check in flight."""

    __slots__ = ("failures", "first", "handle", "successes", "task")

    def __init__(self) -> None:
        self.handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.successes = 0
        self.failures = 0
        self.first = True


class HealthChecker:
    """One cluster's active health check (one ``health_checks`` entry)."""

    def __init__(self, owner: HealthOwner, config: HealthCheckConfig, factory: CodecFactory | None,
                 limits: CodecLimits) -> None:
        """``factory``: the codec that speaks the check (HTTP/1 or HTTP/2 for ``http_health_check``,
        HTTP/2 for gRPC, the cluster's protocol for ``protocol_health_check``); None for TCP."""
        self._owner = owner
        self.config = config
        self.kind = config.kind
        self._factory = factory
        self._limits = limits
        self._sessions: dict[Endpoint, _Session] = {}
        self._send = b""
        self._receive: list[bytes] = []
        self._running = False
        c = config
        self._timeout = c.timeout_ms / 1000.0
        if c.http_health_check is not None:
            h = c.http_health_check
            self._expected = tuple(h.expected_statuses)
            self._retriable = tuple(h.retriable_statuses)
            headers = [("user-agent", USER_AGENT), *h.request_headers_to_add.items()]
            self._head_args = (h.method, h.path, h.host or owner.name, headers)
        elif c.grpc_health_check is not None:
            g = c.grpc_health_check
            msg = g.service_name.encode()
            body = (b"\x0a" + _varint(len(msg)) + msg) if msg else b""
            self._grpc_body = b"\x00" + len(body).to_bytes(4, "big") + body
            self._head_args = ("POST", GRPC_HEALTH_PATH, g.authority or owner.name,
                               [("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", USER_AGENT)])
        elif c.tcp_health_check is not None:
            self._send = bytes.fromhex(c.tcp_health_check.send)
            self._receive = [bytes.fromhex(r) for r in c.tcp_health_check.receive]

    # -- lifecycle --------------------------------------------------------------------------------
    def mark_new(self, ep: Endpoint) -> None:
        """An endpoint not checked yet is failed and pending, as in Envoy, until its first check."""
        ep.down |= FAILED_ACTIVE_HC | PENDING_ACTIVE_HC

    def start(self) -> None:
        """Check every endpoint: the first time after a random part of ``initial_jitter``."""
        if self._running:
            return
        self._running = True
        self.sync()

    def stop(self) -> None:
        self._running = False
        for s in self._sessions.values():
            self._cancel(s)
        self._sessions.clear()

    def sync(self) -> None:
        """The cluster's endpoints changed: check the new ones, forget the removed ones."""
        if not self._running:
            return
        current = set(self._owner.endpoints)
        for ep in [e for e in self._sessions if e not in current]:
            self._cancel(self._sessions.pop(ep))
        jitter = self.config.initial_jitter_ms / 1000.0
        for ep in self._owner.endpoints:
            if ep not in self._sessions:
                s = self._sessions[ep] = _Session()
                delay = random.uniform(0, jitter) if jitter else 0.0
                s.handle = self._owner.loop.call_later(delay, self._run, ep)

    @staticmethod
    def _cancel(s: _Session) -> None:
        if s.handle is not None:
            s.handle.cancel()
            s.handle = None
        if s.task is not None:
            s.task.cancel()
            s.task = None

    # -- one check --------------------------------------------------------------------------------
    def _run(self, ep: Endpoint) -> None:
        s = self._sessions.get(ep)
        if s is None or not self._running:
            return
        s.handle = None
        s.task = self._owner.loop.create_task(self._check(ep, s))

    async def _check(self, ep: Endpoint, s: _Session) -> None:
        owner = self._owner
        owner.stats.health_check_attempt += 1
        loop = owner.loop
        done: asyncio.Future[str] = loop.create_future()
        codec = self._factory.new_codec(Role.CLIENT, self._limits) if self._factory is not None else None
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(self._timeout):
                tls = owner.tls_for(ep)
                if tls is None:
                    transport, _ = await loop.create_connection(lambda: _Probe(done, codec, self), ep.host, ep.port)
                else:
                    transport, _ = await loop.create_connection(lambda: _Probe(done, codec, self), ep.host, ep.port,
                                                                ssl=tls.context(), server_hostname=ep.host)
                verdict = await done
        except TimeoutError:
            verdict = TIMEOUT
        except OSError:
            verdict = FAILED
            owner.stats.health_check_network_failure += 1
        finally:
            if transport is not None:
                transport.close()
        s.task = None
        if self._running and self._sessions.get(ep) is s:
            self._settle(ep, s, verdict)

    @property
    def connect_only(self) -> bool:
        """A TCP check that expects nothing back passes once connected (and ``send`` written)."""
        return self._factory is None and not self._receive

    def first_bytes(self, probe: _Probe) -> bytes:
        """What to write once connected."""
        codec = probe.codec
        if codec is None:
            return self._send
        if self.kind == "protocol_health_check":
            return codec.health_probe(1)
        method, path, host, headers = self._head_args
        out = codec.data_to_send()  # an HTTP/2 client's preface
        sid = codec.new_stream_id() if self._factory is not None and self._factory.streaming else 0
        grpc = self.kind == "grpc_health_check"
        head = RequestHead(codec_name(self._factory), sid, host, method, path, headers=Headers(headers),
                           end_stream=not grpc)
        out += codec.send(head)
        if grpc:
            out += codec.send(BodyChunk(self._grpc_body, sid))
            out += codec.send(EndOfMessage(None, sid))
        return out

    def judge(self, probe: _Probe, data: bytes) -> str | None:
        """The verdict on what the endpoint sent so far (``data`` just arrived), or None to read on."""
        codec = probe.codec
        if codec is None:
            probe.received += data
            return HEALTHY if _contains_in_order(bytes(probe.received), self._receive) else None
        codec.receive_data(data)
        while (ev := codec.next_event()) is not NEED_DATA:
            if self.kind == "protocol_health_check":
                verdict = codec.probe_result(ev)  # type: ignore[arg-type]
                if verdict is not None:
                    return HEALTHY if verdict else FAILED
                continue
            if isinstance(ev, ResponseHead):
                status = ev.status
                probe.status = status
                if self.kind == "http_health_check":
                    if _in(status, self._expected):
                        return HEALTHY
                    return FAILED if _in(status, self._retriable) else FAILED_NOW
                if status != 200:
                    return FAILED
                if ev.end_stream:  # gRPC trailers-only: the status is in the head
                    return self._grpc_verdict(ev.headers, probe)
            elif isinstance(ev, BodyChunk):
                probe.body += ev.data
            elif isinstance(ev, EndOfMessage):
                return self._grpc_verdict(ev.trailers or Headers(), probe)
            elif isinstance(ev, StreamReset):
                return FAILED
        if self._factory is not None and self._factory.streaming:
            out = codec.data_to_send()  # SETTINGS acks
            if out and probe.transport is not None:
                probe.transport.write(out)
        return None

    @staticmethod
    def _grpc_verdict(trailers: Headers, probe: _Probe) -> str:
        if trailers.get("grpc-status") != "0":
            return FAILED
        body = bytes(probe.body)
        return HEALTHY if len(body) >= 5 and body[5:] == _SERVING else FAILED

    # -- results ----------------------------------------------------------------------------------
    def _settle(self, ep: Endpoint, s: _Session, verdict: str) -> None:
        owner = self._owner
        st = owner.stats
        c = self.config
        was_failed = bool(ep.down & FAILED_ACTIVE_HC)
        changed = False
        if verdict == HEALTHY:
            st.health_check_success += 1
            s.failures = 0
            s.successes += 1
            ep.down &= ~ACTIVE_HC_TIMEOUT
            if was_failed and (s.first or s.successes >= c.healthy_threshold):
                ep.down &= ~(FAILED_ACTIVE_HC | PENDING_ACTIVE_HC)
                ep.slow_start_since = 0.0 if s.first else owner.loop.time()
                changed = True
        else:
            st.health_check_failure += 1
            s.successes = 0
            s.failures += 1
            if verdict == TIMEOUT:
                ep.down |= ACTIVE_HC_TIMEOUT
            else:
                ep.down &= ~ACTIVE_HC_TIMEOUT
            if s.first:
                ep.down &= ~PENDING_ACTIVE_HC
            if not was_failed and (verdict == FAILED_NOW or s.failures >= c.unhealthy_threshold):
                ep.down |= FAILED_ACTIVE_HC
                changed = True
        s.first = False
        if changed:
            owner.health_changed()
        s.handle = owner.loop.call_later(self._next_interval(ep, changed), self._run, ep)

    def _next_interval(self, ep: Endpoint, changed: bool) -> float:
        c = self.config
        failed = bool(ep.down & FAILED_ACTIVE_HC)
        ms: int
        if changed and failed and c.unhealthy_edge_interval_ms:
            ms = c.unhealthy_edge_interval_ms
        elif changed and not failed and c.healthy_edge_interval_ms:
            ms = c.healthy_edge_interval_ms
        elif failed:
            ms = c.unhealthy_interval_ms or c.interval_ms
        elif not self._owner.stats.upstream_rq_total:
            ms = c.no_traffic_interval_ms
        else:
            ms = c.interval_ms
        extra = 0.0
        if c.interval_jitter_percent:
            extra += random.uniform(0, ms * c.interval_jitter_percent / 100.0)
        if c.interval_jitter_ms:
            extra += random.uniform(0, c.interval_jitter_ms)
        return (ms + extra) / 1000.0

    def snapshot(self) -> dict[str, object]:
        return {"kind": self.kind, "interval_ms": self.config.interval_ms, "timeout_ms": self.config.timeout_ms,
                "unhealthy_threshold": self.config.unhealthy_threshold,
                "healthy_threshold": self.config.healthy_threshold}


def codec_name(factory: CodecFactory | None) -> str:
    return factory.name if factory is not None else "tcp"


def _in(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(start <= status < end for start, end in ranges)


def _contains_in_order(data: bytes, blocks: list[bytes]) -> bool:
    """Envoy's fuzzy match: every block found in ``data``, each after the previous one."""
    pos = 0
    for b in blocks:
        i = data.find(b, pos)
        if i < 0:
            return False
        pos = i + len(b)
    return True


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


__all__ = ["FAILED", "FAILED_NOW", "GRPC_HEALTH_PATH", "HEALTHY", "TIMEOUT", "HealthChecker", "HealthOwner"]
