"""Router: match a RequestHead against compiled routes (first match wins) -> Route."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sofamesh.core.config.model import RouteConfig, StringMatch
from sofamesh.core.proxy.filter_chain import EMPTY_CHAIN, FilterChain
from sofamesh.core.proxy.hash_policy import HashPolicy
from sofamesh.core.proxy.header_mutation import HeaderMutation
from sofamesh.core.proxy.local_response import LocalResponse
from sofamesh.core.proxy.mirror import Mirror
from sofamesh.core.proxy.query import QueryMatch
from sofamesh.core.proxy.retry import RetryPolicy
from sofamesh.core.proxy.rewrite import Rewrite
from sofamesh.core.proxy.transcode import RouteTranscoder

if TYPE_CHECKING:
    from sofamesh.core.events import RequestHead

StrPred = Callable[[str | None], bool]


def compile_string_match(m: StringMatch) -> StrPred:
    pred: StrPred
    fold = m.ignore_case and m.regex is None
    if m.exact is not None:
        exact = m.exact.lower() if fold else m.exact

        def pred(v: str | None) -> bool:
            return v == exact
    elif m.prefix is not None:
        prefix = m.prefix.lower() if fold else m.prefix

        def pred(v: str | None) -> bool:
            return v is not None and v.startswith(prefix)
    elif m.suffix is not None:
        suffix = m.suffix.lower() if fold else m.suffix

        def pred(v: str | None) -> bool:
            return v is not None and v.endswith(suffix)
    else:
        rx = re.compile(m.regex or "")

        def pred(v: str | None) -> bool:
            return v is not None and rx.fullmatch(v) is not None
    if fold:
        cased = pred

        def folded(v: str | None) -> bool:
            return cased(v.lower() if v is not None else None)
        pred = folded
    if m.missing_as_empty:
        present = pred

        def or_empty(v: str | None) -> bool:
            return present("" if v is None else v)
        pred = or_empty
    if m.invert:
        inner = pred
        return lambda v: not inner(v)
    return pred


_PSEUDO = {":method": "method", ":path": "path"}


def _chain(edits: list[Callable[[RequestHead], RequestHead]]) -> Callable[[RequestHead], RequestHead] | None:
    if not edits:
        return None
    if len(edits) == 1:
        return edits[0]
    first, second = edits

    def both(head: RequestHead) -> RequestHead:
        return second(first(head))
    return both


class Route:
    """A compiled route: its matchers and where matching requests go."""

    __slots__ = ("_cum", "_matchers", "_protocol", "_query", "_total", "cluster_headers", "clusters", "config",
                 "edit_request", "filters", "hash_policy", "index", "local_response", "mirror", "name", "request_frame",
                 "response_headers", "retry", "server_name", "timeout_ms", "transcoder")

    def __init__(self, index: int, config: RouteConfig, filters: FilterChain = EMPTY_CHAIN) -> None:
        self.index = index
        self.config = config
        self.name = config.name or f"route{index}"
        self.timeout_ms = config.timeout_ms
        self.filters = filters
        self.retry = RetryPolicy(config.retry_policy) if config.retry_policy is not None else None
        self.hash_policy = HashPolicy(config.hash_policy) if config.hash_policy else None
        m = config.match
        matchers: list[tuple[str, StrPred]] = []
        # Cheap keys first; ``method`` and ``group`` may need a lazy body read in RPC codecs.
        for key in ("service", "host", "path", "version", "method", "group"):
            sm = getattr(m, key)
            if sm is not None:
                matchers.append((":authority" if key == "host" else key, compile_string_match(sm)))
        for hname, sm in m.headers.items():
            name = hname.lower()
            # HTTP pseudo-headers as xDS names them: the head's own fields
            matchers.append((_PSEUDO.get(name, name), compile_string_match(sm)))
        self._matchers = tuple(matchers)
        # a tcp route's ``host``: the TLS server name (SNI) of the connection's ClientHello
        self.server_name: StrPred | None = compile_string_match(m.host) if m.host is not None else None
        self._query = QueryMatch(tuple((n, compile_string_match(q)) for n, q in m.query.items())) if m.query else None
        self._protocol = m.protocol
        # Optional route actions, each compiled only when the route has it (None costs one test).
        edits: list[Callable[[RequestHead], RequestHead]] = []
        if config.rewrite is not None:
            edits.append(Rewrite(config.rewrite, m).apply)
        # RPC frames (``raw``) are edited by their codec (``request_frame``), HTTP heads in the chain
        self.request_frame = HeaderMutation(config.request_headers) if config.request_headers else None
        if self.request_frame is not None:
            edits.append(self.request_frame.request)
        self.edit_request: Callable[[RequestHead], RequestHead] | None = _chain(edits)
        self.response_headers = HeaderMutation(config.response_headers) if config.response_headers else None
        self.local_response = LocalResponse(config.direct_response, config.redirect, m) if (
            config.direct_response is not None or config.redirect is not None) else None
        self.mirror = Mirror(config.mirror, config.timeout_ms) if config.mirror else None
        # a route filter that answers HTTP/JSON with an RPC call (``transcode.py``), or None
        self.transcoder: RouteTranscoder | None = next(
            (f for f in filters.filters if isinstance(f, RouteTranscoder)), None)
        if config.cluster is not None or self.local_response is not None:
            self.clusters: tuple[str, ...] = (config.cluster or "",)
            self._cum: tuple[int, ...] = (1,)
        else:
            self.clusters = tuple(w.name for w in config.weighted_clusters)
            acc, cum = 0, []
            for w in config.weighted_clusters:
                acc += w.weight
                cum.append(acc)
            self._cum = tuple(cum)
        self._total = self._cum[-1] if self._cum else 0
        # A weighted destination's own header mutations (request, response): None when none has any
        per: dict[str, tuple[HeaderMutation | None, HeaderMutation | None]] = {
            w.name: (HeaderMutation(w.request_headers) if w.request_headers else None,
                     HeaderMutation(w.response_headers) if w.response_headers else None)
            for w in config.weighted_clusters if w.request_headers or w.response_headers}
        self.cluster_headers = per or None

    def matches(self, head: RequestHead) -> bool:
        if self._protocol is not None and head.protocol != self._protocol:
            return False
        for key, pred in self._matchers:
            if key == ":authority":  # match with or without port
                # HTTP/2 carries ``:authority`` (its ``service`` is the gRPC service); HTTP/1's ``service`` is Host
                v = head.headers.get(":authority") or head.service
                if not pred(v) and not (":" in v and not v.endswith("]") and pred(v.rsplit(":", 1)[0])):
                    return False
            elif key == ":scheme":
                if not pred(head.headers.get(":scheme") or "http"):
                    return False
            elif not pred(head.key(key)):
                return False
        return self._query is None or self._query.matches(head.path)

    def pick_cluster(self) -> str:
        if len(self.clusters) == 1:
            return self.clusters[0]
        if self._total <= 0:
            return self.clusters[0]
        r = random.randrange(self._total)
        for name, c in zip(self.clusters, self._cum, strict=True):
            if r < c:
                return name
        return self.clusters[-1]


class Router:
    __slots__ = ("by_server_name", "routes")

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        # a tcp listener whose routes choose by SNI peeks at each connection's ClientHello
        self.by_server_name = any(r.server_name is not None for r in self.routes)

    def for_server_name(self, name: str | None) -> Route | None:
        """The first route whose ``host`` matches the TLS server name ``name`` (a route without
        ``host`` takes every connection, with or without one)."""
        for route in self.routes:
            pred = route.server_name
            if pred is None or (name is not None and pred(name)):
                return route
        return None

    def match(self, head: RequestHead) -> Route | None:
        for route in self.routes:
            if route.matches(head):
                return route
        return None


__all__ = ["Route", "Router", "compile_string_match"]
