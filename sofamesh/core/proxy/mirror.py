"""Request mirroring (Envoy's ``request_mirror_policies``): a copy of a route's requests, a share
of them, sent to another cluster, fire and forget. The copy's response is read and discarded; its
failure never touches the original request. An HTTP copy's host gets ``-shadow`` appended (before
the port), as Envoy does; an RPC copy is the original frame under an upstream id of its own.

Built per route; a route without mirrors pays nothing. A copy keeps at most ``MAX_BODY`` bytes of
request body (a larger one is dropped) and gives up after the route's timeout (10 s without one).
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from typing import TYPE_CHECKING, Any

from sofamesh.core.events import BodyChunk, EndOfMessage, RequestHead
from sofamesh.core.headers import Headers

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.config.model import MirrorConfig
    from sofamesh.core.endpoint import Endpoint
    from sofamesh.core.events import ResponseHead
    from sofamesh.core.upstream.cluster import Cluster
    from sofamesh.core.upstream.pool import ExclusiveConnection, MultiplexedConnection

MAX_BODY = 1024 * 1024
_DEFAULT_TIMEOUT_S = 10.0


def shadow_host(host: str) -> str:
    if host.startswith("[") or host.count(":") != 1:
        return f"{host}-shadow"
    name, _, port = host.partition(":")
    return f"{name}-shadow:{port}"


def shadow_head(head: RequestHead) -> RequestHead:
    if head.raw is not None:
        return head
    items = [(k, shadow_host(v)) if k == ":authority" or k.lower() == "host" else (k, v) for k, v in head.headers]
    service = head.service
    if service == (head.headers.get(":authority") or head.headers.get("host") or service):
        service = shadow_host(service)
    return dataclasses.replace(head, service=service, headers=Headers(items))


class Shadow:
    """One copy in flight: what a pool sees of a stream (``PooledStream``), answering nobody."""

    __slots__ = ("body_bytes", "cluster", "conn", "done", "endpoint", "head", "head_sent", "req_end",
                 "req_end_sent", "req_q", "timer", "up_id", "upstream")

    def __init__(self, conn: Any, cluster: Cluster, head: RequestHead, timeout_s: float) -> None:
        self.conn = conn  # the original's downstream: a full mirror write buffer slows its reading too
        self.cluster = cluster
        self.head = head
        self.upstream: ExclusiveConnection | MultiplexedConnection | None = None
        self.up_id = 0
        self.head_sent = False
        self.done = False
        self.req_q: deque[bytes] = deque()
        self.req_end: EndOfMessage | None = None
        self.req_end_sent = head.end_stream  # a head that ends the request needs no end of its own
        self.body_bytes = 0
        self.endpoint: Endpoint | None = None
        loop: asyncio.AbstractEventLoop = conn.loop
        self.timer = loop.call_later(timeout_s, self.abandon)

    def start(self, factory: Any) -> None:
        ep = self.cluster.choose()
        if ep is None:
            self.finish()
            return
        self.endpoint = ep
        ep.active_rq += 1
        self.cluster.stats.upstream_rq_total += 1
        self.cluster.pool_for(ep, factory).attach(self)

    # -- the original request's body -------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.body_bytes += len(data)
        if self.body_bytes > MAX_BODY:
            self.abandon()
            return
        self.req_q.append(data)
        self.flush_request()

    def end(self) -> None:
        if self.done:
            return
        self.req_end = EndOfMessage(None, self.up_id)
        self.req_end_sent = False
        self.flush_request()

    def flush_request(self) -> None:
        up = self.upstream
        if up is None or not self.head_sent or self.done:
            return
        codec = up.codec
        out = []
        while self.req_q:
            data = self.req_q.popleft()
            if getattr(codec, "sendable", None) is not None and self.up_id and codec.sendable(self.up_id) < len(data):
                self.abandon()  # an HTTP/2 window too small for the copy: drop it, never wait
                return
            out.append(codec.send(BodyChunk(data, self.up_id)))
        if self.req_end is not None and not self.req_end_sent:
            self.req_end_sent = True
            out.append(codec.send(EndOfMessage(None, self.up_id)))
            if hasattr(up, "request_done"):
                up.request_done = True
        if out:
            up.write(b"".join(out))

    # -- pool callbacks ----------------------------------------------------------------------------
    def on_upstream_ready(self, conn: ExclusiveConnection) -> None:
        self.upstream = conn
        self.head_sent = True
        conn.request_done = False
        conn.write(conn.codec.send(self.head))
        if self.req_end_sent and not self.req_q:
            conn.request_done = True
        self.flush_request()

    def on_oneway_sent(self) -> None:
        self.finish()

    def on_overflow(self) -> None:
        self.finish()

    def on_connect_failed(self, reason: str, timeout: bool) -> None:
        self.finish()

    def on_response_head(self, head: ResponseHead) -> None:
        if head.end_stream:
            self.finish()

    def on_response_body(self, chunk: BodyChunk) -> None:
        up = self.upstream
        if up is not None and self.up_id and getattr(up.codec, "sendable", None) is not None:
            try:
                up.write(up.codec.acknowledge(self.up_id, len(chunk.data)))
            except NotImplementedError:
                pass

    def on_response_end(self, eom: EndOfMessage) -> None:
        self.finish()

    def on_upstream_reset(self, reason: str, refused: bool = False) -> None:
        self.finish()

    def abandon(self) -> None:
        """Give up on the copy (too slow, body too large): drop its upstream exchange."""
        if self.done:
            return
        up, self.upstream = self.upstream, None
        if up is not None:
            if hasattr(up, "inflight"):
                up.cancel(self.up_id)  # type: ignore[union-attr]
            else:
                up.abandon()
        self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.timer.cancel()
        if self.endpoint is not None:
            self.endpoint.active_rq -= 1
            self.endpoint = None


class Shadows:
    """The copies of one request: fed the original's body as it arrives."""

    __slots__ = ("copies",)

    def __init__(self, copies: list[Shadow]) -> None:
        self.copies = copies

    def feed(self, data: bytes) -> None:
        for c in self.copies:
            c.feed(data)

    def end(self) -> None:
        for c in self.copies:
            c.end()


class Mirror:
    """A route's mirror policies, compiled."""

    __slots__ = ("_rand", "_targets", "timeout_s")

    def __init__(self, configs: list[MirrorConfig], timeout_ms: int, rng: random.Random | None = None) -> None:
        self._targets = tuple((m.cluster, m.percentage / 100.0) for m in configs)
        self._rand = (rng or random.Random()).random
        self.timeout_s = timeout_ms / 1000.0 if timeout_ms else _DEFAULT_TIMEOUT_S

    def send(self, head: RequestHead, conn: Any, clusters: dict[str, Cluster],
             same_protocol: str) -> Shadows | None:
        """Start the copies of ``head`` this request gets; ``None`` when it gets none."""
        copies = []
        for name, share in self._targets:
            if share < 1.0 and self._rand() >= share:
                continue
            cluster = clusters.get(name)
            if cluster is None:
                continue
            factory = cluster.protocol
            if factory is None:
                http = cluster.http
                factory = (http.get(same_protocol) if http is not None else None) or conn.factory
            if head.raw is not None and factory.name != same_protocol:
                continue  # an RPC frame goes only to its own protocol
            shadow = Shadow(conn, cluster, shadow_head(head), self.timeout_s)
            copies.append(shadow)
            shadow.start(factory)
        live = [c for c in copies if not c.done]
        return Shadows(live) if live else None


__all__ = ["MAX_BODY", "Mirror", "Shadow", "Shadows", "shadow_head", "shadow_host"]
