"""``fault``: inject delays and aborts into a share of requests, like Envoy's fault filter.

``delay``: the stream STOPs and is resumed by a loop timer after ``fixed_delay_ms``.
``abort``: a local reply in the request's own protocol; ``status`` is an HTTP status (mapped to the
reply kind with that code, e.g. 503 -> NO_HEALTHY_UPSTREAM, 403 -> DENIED) or a ``ReplyStatus`` name.
Percentages are 0..100; abort is decided before delay (an aborted request is not delayed).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, LocalReply, Verdict
from sofamesh.plugins.filters.settings import Settings, parse

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.stream import Stream


class Delay(Settings):
    percentage: float = Field(default=100.0, ge=0, le=100)
    fixed_delay_ms: int = Field(gt=0)


class Abort(Settings):
    percentage: float = Field(default=100.0, ge=0, le=100)
    status: int | str = 503

    @field_validator("status")
    @classmethod
    def _known(cls, v: int | str) -> int | str:
        _reply_status(v)
        return v


class FaultSettings(Settings):
    delay: Delay | None = None
    abort: Abort | None = None


def _reply_status(v: int | str) -> ReplyStatus:
    if isinstance(v, str) and not v.isdigit():
        try:
            return ReplyStatus[v.upper()]
        except KeyError:
            raise ValueError(f"unknown status {v!r} (known: {', '.join(s.name for s in ReplyStatus)})") from None
    code = int(v)
    for s in ReplyStatus:
        if s.http_status == code:
            return s
    known = sorted({s.http_status for s in ReplyStatus})
    raise ValueError(f"no reply kind has HTTP status {code} (known: {known})")


class FaultFilter(Filter):
    name = "fault"

    def __init__(self, settings: FaultSettings, rng: random.Random | None = None) -> None:
        self.rand = (rng or random.Random()).random
        d, a = settings.delay, settings.abort
        self.delay_p = d.percentage / 100.0 if d else 0.0
        self.delay_s = d.fixed_delay_ms / 1000.0 if d else 0.0
        self.abort_p = a.percentage / 100.0 if a else 0.0
        self.abort_status = _reply_status(a.status) if a else ReplyStatus.INTERNAL
        self.delays = 0
        self.aborts = 0

    def on_request_head(self, stream: Stream) -> FilterResult:
        if self.abort_p and self.rand() < self.abort_p:
            self.aborts += 1
            return LocalReply(self.abort_status, "fault filter abort")
        if self.delay_p and self.rand() < self.delay_p:
            self.delays += 1
            stream.conn.loop.call_later(self.delay_s, stream.resume)
            return Verdict.STOP
        return Verdict.CONTINUE

    def stats(self) -> dict[str, int]:
        return {"fault_delays_injected": self.delays, "fault_aborts_injected": self.aborts}


class FaultFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return FaultFilter(parse(FaultSettings, config, path))


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("fault", FaultFilterFactory())


__all__ = ["FaultFilter", "FaultFilterFactory", "FaultSettings"]
