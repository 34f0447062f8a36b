"""The ADS server: Envoy v3 aggregated discovery, state-of-the-world and delta, over a transport
(grpc.aio, or the project's own HTTP/2 codec: ``pilot/xds/transport.py``).

Each stream keeps, per type URL, what the node subscribed to, what was last sent (version and
nonce) and what it ACKed or NACKed. A debounced mesh change invalidates the snapshot cache and
wakes every stream, which sends only the types (SotW) or resources (delta) whose content changed:
for SotW EDS and RDS only the changed resources (resources a response leaves out keep their last
value for those types), for LDS and CDS the whole set (the protocol requires it). Work per request
and per push follows what changed: an ACK that repeats the subscription is not turned into a set,
and a push to a node that holds the previous snapshot looks only at the names that changed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from sofamesh.pilot.metrics import PilotMetrics
from sofamesh.pilot.xds.cache import Entry, SnapshotCache, TypeSnapshot, set_version
from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT, ROUTE, NodeInfo, short_type
from sofamesh.pilot.xds.grpcio_transport import GrpcioTransport
from sofamesh.pilot.xds.transport import XdsTransport

log = logging.getLogger("sofamesh.pilot.xds")
_PUSH = "push"
_REQUEST = "request"
_CLOSED = "closed"
# SotW types whose responses may carry only some of the subscribed resources: resources left out
# keep their last value (xDS protocol, "Knowing When a Requested Resource Does Not Exist"; Envoy's
# and gRPC's clients). LDS and CDS responses must carry every resource, so they are sent whole.
_SOTW_PARTIAL_TYPES = frozenset({ENDPOINT, ROUTE})
_Cut = tuple[str, str, bytes, int]  # version, nonce, the serialized response, resources in it
_WIRE_CACHE = 4096  # distinct subscriptions remembered by their wire form (cleared on push, or when full)


@dataclass(slots=True)
class TypeState:
    """One type URL on one stream."""

    wildcard: bool = False
    # SotW: a frozenset shared by every stream with the same subscription; delta: the stream's own set
    names: set[str] | frozenset[str] = field(default_factory=set)
    sent_version: str = ""
    sent_nonce: str = ""
    sent_count: int = 0
    acked_version: str = ""
    status: str = "REQUESTED"
    last_nack: dict[str, Any] | None = None
    known: dict[str, str] = field(default_factory=dict)  # delta: what the client holds, name -> version
    snapshot_version: str = ""  # version of the whole snapshot the last response was cut from

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"status": self.status, "wildcard": self.wildcard, "names": sorted(self.names),
                             "sent_version": self.sent_version, "sent_nonce": self.sent_nonce,
                             "acked_version": self.acked_version, "resources_sent": self.sent_count,
                             "last_nack": self.last_nack}
        if self.known:
            d["known"] = dict(sorted(self.known.items()))
        return d


@dataclass(slots=True)
class Stream:
    id: int
    mode: str
    peer: str
    queue: asyncio.Queue[tuple[str, Any]]
    node: NodeInfo | None = None
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def nonce(self) -> str:
        return f"{self.id}-{next(self.nonces)}"

    def describe(self) -> dict[str, Any]:
        node = self.node or NodeInfo("")
        return {"stream": self.id, "mode": self.mode, "peer": self.peer, "node": node.id,
                "cluster": node.cluster, "user_agent": node.user_agent,
                "connected_at": self.connected_at,
                "types": {short_type(url): ts.describe() for url, ts in sorted(self.types.items())}}


class AdsServer:
    """Serves ADS from a :class:`SnapshotCache`; :meth:`push` makes every stream catch up."""

    def __init__(self, cache: SnapshotCache, metrics: PilotMetrics, max_pending_streams: int = 100_000,
                 transport: XdsTransport | None = None) -> None:
        self.cache = cache
        self.max_pending_streams = max_pending_streams  # streams gRPC queues before refusing (grpcio)
        self.metrics = metrics
        self.streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self.recent_nacks: list[dict[str, Any]] = []
        # Responses shared by every stream that gets the same content, nonce included (a nonce only
        # has to tell one stream's responses apart; "c<n>" never repeats and is not a stream's own
        # "<stream>-<n>"): serialized once, not copied per stream. Cleared on push.
        self._cut_nonces = itertools.count(1)
        self._counters: dict[tuple[str, str], tuple[Any, Any]] = {}  # (type URL, mode) -> pushes, bytes
        self._acks: dict[str, Any] = {}  # type URL -> ACK counter
        self._connected: dict[str, Any] = {}  # mode -> gauge of connected streams
        self._sotw_cuts: dict[tuple[str, str, bool, frozenset[str]], _Cut] = {}  # per subscription
        self._sotw_parts: dict[tuple[str, str, tuple[str, ...]], _Cut] = {}  # per set of changed names
        # delta: what a node that holds nothing yet gets, per subscription, and the versions it then holds
        self._delta_cuts: dict[tuple[str, str, bool, frozenset[str]], tuple[dict[str, str], _Cut]] = {}
        self._subscriptions: dict[frozenset[str], frozenset[str]] = {}  # SotW subscriptions, interned
        # what a request subscribes to, by its wire form without node, nonce and version: the names
        # become Python strings once per subscription, not once per request (1000 EDS names cost
        # about 0.3 ms to read out of a parsed request, and every SotW ACK repeats them)
        self._wire_sotw: dict[bytes, tuple[bool, bool, frozenset[str]]] = {}
        self._wire_delta: dict[bytes, tuple[tuple[str, ...], frozenset[str]]] = {}
        self.pushes = 0
        self.transport = transport if transport is not None else GrpcioTransport()
        self.port = 0
        # told when a stream names its node, and when that stream ends (pilot/sidecars.py)
        self.on_node: Callable[[int, NodeInfo], None] | None = None
        self.on_closed: Callable[[int], None] | None = None
        self.loopback_port = 0  # a second plaintext port on 127.0.0.1 the TLS port relays to
        # awaited before a new stream's first answer: the replica has caught up with its shared
        # stores (pilot/fence.py), so a proxy failing over to it gets nothing older than it held
        self.fence: Callable[[], Awaitable[None]] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, host: str, port: int, extra: Sequence[Any] = (), *, loopback: bool = False) -> int:
        """Serve ADS, and the ``extra`` services (grpc generic handlers: the CSR API) on the same
        port, as istiod does; ``loopback``: also on a free port of 127.0.0.1 (:attr:`loopback_port`)."""
        self.port, self.loopback_port = await self.transport.start(self, host, port, extra, loopback)
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        for st in list(self.streams.values()):
            st.queue.put_nowait((_CLOSED, None))
        await self.transport.stop(grace)

    def push(self, first_change: float | None = None) -> None:
        """The mesh changed: rebuild snapshots on demand and wake every stream."""
        self.cache.invalidate()
        self._sotw_cuts.clear()
        self._sotw_parts.clear()
        self._delta_cuts.clear()
        self._subscriptions = {ts.names: ts.names for st in self.streams.values() for ts in st.types.values()
                               if isinstance(ts.names, frozenset)}  # forget those no stream holds
        self._wire_sotw.clear()
        self._wire_delta.clear()
        self.pushes += 1
        for st in self.streams.values():
            st.queue.put_nowait((_PUSH, first_change))

    def describe(self) -> dict[str, Any]:
        return {"generation": self.cache.generation, "pushes": self.pushes,
                "type_urls": self.cache.type_urls, "generator_conflicts": list(self.cache.conflicts),
                "nodes": [st.describe() for st in self.streams.values()],
                "recent_nacks": list(self.recent_nacks)}

    # -- streams: what a transport calls --------------------------------------------------------
    def open_stream(self, mode: str, peer: str) -> Stream:
        """A new ADS stream (``mode`` "sotw" or "delta") from ``peer`` (gRPC's form: ``ipv4:a.b.c.d:port``);
        the transport then hands it requests (:meth:`received`), its end (:meth:`ended`) and sends
        what :meth:`responses` yields."""
        st = Stream(next(self._ids), mode, peer, asyncio.Queue())
        self.streams[st.id] = st
        connected = self._connected.get(mode)
        if connected is None:  # prometheus_client's labels() takes a lock and looks the child up each call
            connected = self._connected[mode] = self.metrics.connected.labels(mode)
        connected.inc()
        return st

    @staticmethod
    def received(st: Stream, request: Any) -> None:
        """A parsed DiscoveryRequest (SotW) or DeltaDiscoveryRequest (delta) arrived on ``st``."""
        st.queue.put_nowait((_REQUEST, request))

    @staticmethod
    def ended(st: Stream) -> None:
        """The client closed or reset ``st``, or its connection ended: :meth:`responses` finishes."""
        st.queue.put_nowait((_CLOSED, None))

    async def responses(self, st: Stream) -> AsyncGenerator[bytes, None]:
        """The serialized responses (DiscoveryResponse or DeltaDiscoveryResponse) to send on ``st``,
        until it ends; the stream is forgotten when this generator finishes or is closed."""
        handle_request = self._sotw_request if st.mode == "sotw" else self._delta_request
        respond = self._sotw_response if st.mode == "sotw" else self._delta_response
        try:
            if self.fence is not None:
                await self.fence()
            while True:
                kind, payload = await st.queue.get()
                if kind == _CLOSED:
                    break
                if kind == _REQUEST:
                    for resp in handle_request(st, payload):
                        yield resp
                    continue
                sent = False
                clusters: Collection[str] = ()
                for url, ts in list(st.types.items()):
                    if url == ENDPOINT and clusters:
                        pushed = self._endpoints_after_clusters(st, ts, clusters)
                    else:
                        pushed = respond(st, url, ts, False)
                    if pushed is not None:
                        sent = True
                        yield pushed
                        if url == CLUSTER and st.node is not None:
                            snap = self.cache.get(CLUSTER, st.node)
                            # the first snapshot of a scope (the node's scope changed: exportTo
                            # views) names no changes: every cluster may differ from what it held
                            clusters = snap.changed if snap.previous else snap.entries.keys()
                if sent and payload is not None:
                    self.metrics.push_seconds.observe(max(0.0, asyncio.get_running_loop().time() - payload))
        finally:
            if self.streams.pop(st.id, None) is not None:
                self._connected[st.mode].dec()
                if self.on_closed is not None and st.node is not None:
                    self.on_closed(st.id)

    def _endpoints_after_clusters(self, st: Stream, ts: TypeState, clusters: Collection[str]) -> bytes | None:
        """EDS after a CDS push that changed ``clusters``: their assignments are sent again even when
        unchanged, as Envoy keeps an updated cluster warming until it gets one (Istio does the same)."""
        again = [name for name in clusters if name in ts.names]
        if not again:
            return self._sotw_response(st, ENDPOINT, ts, False) if st.mode == "sotw" else \
                self._delta_response(st, ENDPOINT, ts, False)
        if st.mode == "sotw":
            return self._sotw_response(st, ENDPOINT, ts, True)
        return self._delta_response(st, ENDPOINT, ts, True, again, again)

    # -- ACK / NACK ----------------------------------------------------------------------------
    def _learn_node(self, st: Stream, req: Any) -> None:
        if st.node is None:
            st.node = NodeInfo.from_proto(req.node) if req.HasField("node") else NodeInfo("")
            if self.on_node is not None:
                self.on_node(st.id, st.node)

    def _ack_or_nack(self, st: Stream, url: str, ts: TypeState, req: Any, version: str) -> None:
        assert st.node is not None
        if req.HasField("error_detail"):
            detail = req.error_detail.message
            ts.status = "NACKED"
            ts.last_nack = {"nonce": req.response_nonce, "rejected_version": ts.sent_version,
                            "error": detail, "at": time.time()}
            self.metrics.nacks.labels(short_type(url)).inc()
            record = {"node": st.node.id, "type": short_type(url), **ts.last_nack}
            self.recent_nacks.append(record)
            del self.recent_nacks[:-50]
            log.warning("xDS NACK from node %r type %s version %s: %s", st.node.id, short_type(url),
                        ts.sent_version, detail)
        else:
            ts.status = "ACKED"
            ts.acked_version = version
            acks = self._acks.get(url)
            if acks is None:
                acks = self._acks[url] = self.metrics.acks.labels(short_type(url))
            acks.inc()

    def _count(self, url: str, mode: str, size: int, n: int, ts: TypeState) -> None:
        ts.sent_count = n
        counters = self._counters.get((url, mode))
        if counters is None:  # prometheus_client's labels() costs a lock and a lookup per call
            counters = self._counters[(url, mode)] = (self.metrics.pushes.labels(short_type(url), mode),
                                                      self.metrics.response_bytes.labels(short_type(url)))
        counters[0].inc()
        counters[1].inc(size)

    # -- state of the world --------------------------------------------------------------------
    def _sotw_request(self, st: Stream, req: Any) -> list[bytes]:
        self._learn_node(st, req)
        url = req.type_url
        ts = st.types.get(url)
        if ts is not None and req.response_nonce:
            if req.response_nonce != ts.sent_nonce:
                return []  # a newer response is on its way; the client will answer that one
            self._ack_or_nack(st, url, ts, req, req.version_info)
        empty, star, frozen = self._sotw_subscription(req)
        if ts is None:
            ts = st.types[url] = TypeState(wildcard=empty or star)
        wildcard = ts.wildcard and (empty or star)
        if ts.sent_nonce and wildcard == ts.wildcard and (frozen is ts.names or frozen == ts.names):
            return []  # the same subscription (an ACK, most often)
        ts.wildcard, ts.names = wildcard, frozen
        resp = self._sotw_response(st, url, ts, True)
        return [resp] if resp is not None else []

    def _sotw_subscription(self, req: Any) -> tuple[bool, bool, frozenset[str]]:
        """(no names, ``*`` among them, the names but ``*``) of a request; ``req`` loses its node,
        nonce, version and error (read before)."""
        for name in ("node", "response_nonce", "version_info", "error_detail"):
            req.ClearField(name)
        wire = req.SerializeToString()  # type URL and names: the same bytes for the same subscription
        sub = self._wire_sotw.get(wire)
        if sub is None:
            names = set(req.resource_names)
            star = "*" in names
            names.discard("*")
            frozen = frozenset(names)
            frozen = self._subscriptions.setdefault(frozen, frozen)
            if len(self._wire_sotw) >= _WIRE_CACHE:
                self._wire_sotw.clear()
            sub = self._wire_sotw[wire] = (not names and not star, star, frozen)
        return sub

    def _sotw_response(self, st: Stream, url: str, ts: TypeState, force: bool) -> bytes | None:
        assert st.node is not None
        snap = self.cache.get(url, st.node)
        if not force and snap.version == ts.snapshot_version:
            return None  # nothing of this type changed for this node's scope
        if (not force and not ts.wildcard and url in _SOTW_PARTIAL_TYPES and ts.snapshot_version
                and snap.previous == ts.snapshot_version):
            return self._sotw_changes(st, url, ts, snap)
        assert isinstance(ts.names, frozenset)
        key = (url, snap.version, ts.wildcard, ts.names)
        cut = self._sotw_cuts.get(key)
        if cut is None:
            entries = snap.select(None) if ts.wildcard else []
            if ts.names:
                entries += [e for e in snap.select(ts.names) if not (ts.wildcard and e.wildcard)]
            cut = self._sotw_cuts[key] = self._sotw_cut(url, set_version(entries), [e.any for e in entries])
        ts.snapshot_version = snap.version
        if not force and cut[0] == ts.sent_version:
            return None
        return self._sotw_send(url, ts, cut)

    def _sotw_changes(self, st: Stream, url: str, ts: TypeState, snap: TypeSnapshot) -> bytes | None:
        """The node holds the previous snapshot: send only its subscribed resources that changed."""
        ts.snapshot_version = snap.version
        changed = tuple(sorted(n for n in snap.changed & ts.names if n in snap.entries))
        if not changed:
            return None  # nothing this node named changed (a removed one keeps its last value)
        key = (url, snap.version, changed)
        part = self._sotw_parts.get(key)
        if part is None:
            part = self._sotw_parts[key] = self._sotw_cut(url, snap.version, [snap.entries[n].any for n in changed])
        return self._sotw_send(url, ts, part)

    def _sotw_cut(self, url: str, version: str, resources: list[Any]) -> _Cut:
        nonce = f"c{next(self._cut_nonces)}"
        resp = discovery_pb2.DiscoveryResponse(version_info=version, type_url=url, nonce=nonce, resources=resources)
        return version, nonce, resp.SerializeToString(), len(resources)

    def _sotw_send(self, url: str, ts: TypeState, cut: _Cut) -> bytes:
        version, nonce, resp, count = cut
        ts.sent_version, ts.sent_nonce = version, nonce
        ts.status = "SENT"
        self._count(url, "sotw", len(resp), count, ts)
        return resp

    # -- delta ---------------------------------------------------------------------------------
    def _delta_request(self, st: Stream, req: Any) -> list[bytes]:
        self._learn_node(st, req)
        url = req.type_url
        ts = st.types.get(url)
        first = ts is None
        if ts is not None and req.response_nonce and req.response_nonce == ts.sent_nonce:
            self._ack_or_nack(st, url, ts, req, ts.sent_version)
        if not (first or req.resource_names_subscribe or req.resource_names_unsubscribe):
            return []  # an ACK or NACK alone
        known = dict(req.initial_resource_versions) if ts is None else None
        wire_subscribe, wire_unsubscribe = self._delta_subscription(req)
        subscribe, unsubscribe = list(wire_subscribe), set(wire_unsubscribe)
        if ts is None:
            ts = st.types[url] = TypeState(wildcard=not subscribe or "*" in subscribe)
            ts.known = known or {}
        was_wildcard = ts.wildcard
        if "*" in subscribe:
            ts.wildcard = True
            subscribe.remove("*")
        if "*" in unsubscribe:
            ts.wildcard = False
            unsubscribe.discard("*")
        names = ts.names
        if not isinstance(names, set):
            names = ts.names = set(names)
        names.update(subscribe)
        names.difference_update(unsubscribe)
        for name in unsubscribe:
            ts.known.pop(name, None)
        if not (first or subscribe or unsubscribe or ts.wildcard != was_wildcard):
            return []
        # A change of wildcard or the first request compares everything; otherwise only the new names.
        asked = None if first or ts.wildcard != was_wildcard else subscribe
        resp = self._delta_response(st, url, ts, first or bool(subscribe), asked)
        return [resp] if resp is not None else []

    def _delta_subscription(self, req: Any) -> tuple[tuple[str, ...], frozenset[str]]:
        """(names subscribed, in request order, once each; names unsubscribed) of a request, read
        once per distinct request (as :meth:`_sotw_subscription`); ``req`` loses its node and nonce."""
        for name in ("node", "response_nonce", "error_detail", "initial_resource_versions"):
            req.ClearField(name)
        wire = req.SerializeToString()
        sub = self._wire_delta.get(wire)
        if sub is None:
            if len(self._wire_delta) >= _WIRE_CACHE:
                self._wire_delta.clear()
            sub = self._wire_delta[wire] = (tuple(dict.fromkeys(req.resource_names_subscribe)),
                                            frozenset(req.resource_names_unsubscribe))
        return sub

    def _delta_response(self, st: Stream, url: str, ts: TypeState, force: bool,
                        asked: Collection[str] | None = (), again: Collection[str] = ()) -> bytes | None:
        """What the node must add, change or remove. ``asked``: names it just subscribed to (None: it
        may hold anything). Beyond those, only what changed since the snapshot it holds is looked at."""
        assert st.node is not None
        snap = self.cache.get(url, st.node)
        if not force and snap.version == ts.snapshot_version:
            return None
        candidates: Iterable[str] | None
        if asked is None:
            candidates = None
        elif snap.version == ts.snapshot_version:
            candidates = asked
        elif ts.snapshot_version and snap.previous == ts.snapshot_version:
            candidates = [*asked, *sorted(snap.changed.difference(asked))]
        else:
            candidates = None  # the node is more than one change behind (or new): compare all
        ts.snapshot_version = snap.version
        if candidates is None and not ts.known:  # a node that holds nothing: shared with its peers
            key = (url, snap.version, ts.wildcard, frozenset(ts.names))
            shared = self._delta_cuts.get(key)
            if shared is None:
                updated, _ = self._delta_all(snap, ts)
                nonce = f"c{next(self._cut_nonces)}"
                shared = self._delta_cuts[key] = ({e.name: e.version for e in updated}, (
                    snap.version, nonce, self._delta_wire(snap.version, url, nonce, [], updated), len(updated)))
            known, (_, nonce, data, count) = shared
            ts.known = dict(known)
            if not (count or force):
                return None
        else:
            updated, removed = (self._delta_all(snap, ts) if candidates is None
                                else self._delta_some(snap, ts, candidates, again))
            if not (updated or removed or force):
                return None
            for e in updated:
                ts.known[e.name] = e.version
            for name in removed:
                del ts.known[name]
            nonce = st.nonce()
            data, count = self._delta_wire(snap.version, url, nonce, removed, updated), len(updated)
        ts.sent_version, ts.sent_nonce = snap.version, nonce  # the system_version_info sent
        ts.status = "SENT"
        self._count(url, "delta", len(data), count, ts)
        return data

    @staticmethod
    def _delta_wire(version: str, url: str, nonce: str, removed: list[str], updated: list[Entry]) -> bytes:
        # each resource was serialized once, as an element of DeltaDiscoveryResponse.resources;
        # fields may come in any order on the wire
        head = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version, type_url=url, nonce=nonce, removed_resources=removed)
        data: bytes = head.SerializeToString() + b"".join([e.delta_wire for e in updated])
        return data

    @staticmethod
    def _delta_all(snap: TypeSnapshot, ts: TypeState) -> tuple[list[Entry], list[str]]:
        entries = snap.entries
        desired = {n: e for n, e in entries.items() if e.wildcard} if ts.wildcard else {}
        for name in ts.names:
            e = entries.get(name)
            if e is not None:
                desired[name] = e
        known = ts.known
        updated = [e for name, e in desired.items() if known.get(name) != e.version]
        removed = sorted(name for name in known if name not in desired)
        return updated, removed

    @staticmethod
    def _delta_some(snap: TypeSnapshot, ts: TypeState, names: Iterable[str],
                    again: Collection[str] = ()) -> tuple[list[Entry], list[str]]:
        """What changed among ``names``; those in ``again`` are sent even when the node holds their
        version (:meth:`_endpoints_after_clusters`)."""
        entries, known, subscribed = snap.entries, ts.known, ts.names
        updated, removed = [], []
        for name in names:
            e = entries.get(name)
            if e is not None and (name in subscribed or (ts.wildcard and e.wildcard)):
                if known.get(name) != e.version or name in again:
                    updated.append(e)
            elif name in known:
                removed.append(name)
        return updated, removed


__all__ = ["AdsServer", "Stream", "TypeState"]
