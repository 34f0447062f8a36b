"""``quota.local``: token buckets kept in the sidecar, per route / service / method / source identity
(or any header / header-map key), with a burst. Over quota, the request gets the protocol's
"rate limited" reply (HTTP 429, gRPC 8, the Bolt / Dubbo server-busy error).

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; each request takes one.
Refill is computed lazily from the clock when a request arrives: no timers. The first override whose
match holds picks the limit; without a ``limit``, a request no override matches is not limited
(what Pilot sends for a MetaRouter ``localRateLimit`` with ``conditions`` only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.config.model import StringMatch
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, LocalReply, Verdict
from sofamesh.plugins.filters.identity import source_ip
from sofamesh.plugins.filters.settings import Settings, parse

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.stream import Stream

Key = Literal["route", "service", "method", "source", "source_ip"] | str


class Limit(Settings):
    rate: float = Field(gt=0)  # tokens per second
    burst: int = Field(default=0, ge=0)  # bucket size; 0 means max(1, rate)
    unit: Literal["second", "minute", "hour"] = "second"

    @property
    def per_second(self) -> float:
        return self.rate / {"second": 1.0, "minute": 60.0, "hour": 3600.0}[self.unit]

    @property
    def size(self) -> float:
        return float(self.burst or max(1, int(self.rate)))


class Override(Settings):
    """A different limit for requests whose keys match (``service``, ``method``, header names)."""

    match: dict[str, StringMatch]
    limit: Limit


class LocalQuotaSettings(Settings):
    key: list[str] = Field(default_factory=list)  # what a bucket is kept per; [] = one shared bucket
    limit: Limit | None = None  # None: only requests an override matches are limited
    overrides: list[Override] = Field(default_factory=list)
    max_buckets: int = Field(default=100_000, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> LocalQuotaSettings:
        if self.limit is None and not self.overrides:
            raise ValueError("set limit (rate, burst) or at least one override")
        return self

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        if isinstance(value, dict) and "rate" in value and "limit" not in value:
            value = dict(value)
            value["limit"] = {k: value.pop(k) for k in ("rate", "burst", "unit") if k in value}
        return value


class Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


def key_reader(name: str) -> Callable[[Stream], str]:
    if name == "route":
        return lambda s: s.context.route
    if name == "service":
        return lambda s: s.head.service or s.head.key("service") or ""  # the field first: no key() dispatch
    if name == "method":
        return lambda s: s.head.method or s.head.key("method") or ""
    if name == "source":
        return lambda s: s.context.peer_identity or source_ip(s.context)
    if name == "source_ip":
        return lambda s: source_ip(s.context)
    if name == "request_principal":
        return lambda s: s.context.request_principal or ""
    return lambda s: s.head.key(name) or ""


def key_builder(readers: tuple[Callable[[Stream], str], ...]) -> Callable[[Stream, int], tuple[Any, ...]]:
    """``(which, reader0(stream), ...)``: a bucket's key, built without an intermediate list for the
    usual 1 to 3 keys."""
    if not readers:
        return lambda s, w: (w,)
    if len(readers) == 1:
        (r0,) = readers
        return lambda s, w: (w, r0(s))
    if len(readers) == 2:
        r0, r1 = readers
        return lambda s, w: (w, r0(s), r1(s))
    if len(readers) == 3:
        r0, r1, r2 = readers
        return lambda s, w: (w, r0(s), r1(s), r2(s))
    return lambda s, w: (w, *[r(s) for r in readers])


def _string_match(m: StringMatch) -> Callable[[str], bool]:
    import re

    if m.exact is not None:
        e = m.exact
        f: Callable[[str], bool] = lambda v: v == e  # noqa: E731
    elif m.prefix is not None:
        p = m.prefix
        f = lambda v: v.startswith(p)  # noqa: E731
    elif m.suffix is not None:
        x = m.suffix
        f = lambda v: v.endswith(x)  # noqa: E731
    else:
        rx = re.compile(m.regex or "")
        f = lambda v: rx.fullmatch(v) is not None  # noqa: E731
    return (lambda v: not f(v)) if m.invert else f


class LocalQuotaFilter(Filter):
    name = "quota.local"

    def __init__(self, settings: LocalQuotaSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.readers = tuple(key_reader(k) for k in settings.key)
        self.key_of = key_builder(self.readers)
        self.limit = (settings.limit.per_second, settings.limit.size) if settings.limit is not None else None
        self.overrides = tuple(
            (tuple((key_reader(k), _string_match(m)) for k, m in o.match.items()), (o.limit.per_second, o.limit.size),
             i)
            for i, o in enumerate(settings.overrides))
        self.max_buckets = settings.max_buckets
        self.buckets: dict[tuple[Any, ...], Bucket] = {}
        self.clock = clock
        self.accepted = 0
        self.limited = 0

    def on_request_head(self, stream: Stream) -> FilterResult:
        limit = self.limit
        which = -1
        if self.overrides:
            for conds, lim, i in self.overrides:
                if all(m(r(stream)) for r, m in conds):
                    limit, which = lim, i
                    break
        if limit is None:
            return Verdict.CONTINUE
        key = self.key_of(stream, which)
        now = self.clock()
        rate, size = limit
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= self.max_buckets:
                self.buckets.clear()  # bounded memory; buckets refill to full anyway when idle
            b = self.buckets[key] = Bucket(size, now)
        else:
            b.tokens = min(size, b.tokens + (now - b.at) * rate)
            b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            self.accepted += 1
            return Verdict.CONTINUE
        self.limited += 1
        return LocalReply(ReplyStatus.RATE_LIMITED, "local rate limit exceeded")

    def stats(self) -> dict[str, int]:
        return {"quota_local_accepted": self.accepted, "quota_local_rate_limited": self.limited,
                "quota_local_buckets": len(self.buckets)}


class LocalQuotaFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return LocalQuotaFilter(parse(LocalQuotaSettings, config, path))


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("quota.local", LocalQuotaFilterFactory())


__all__ = ["LocalQuotaFilter", "LocalQuotaFilterFactory", "LocalQuotaSettings", "key_builder", "key_reader"]
