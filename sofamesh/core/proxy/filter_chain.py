"""Filters: synchronous policy steps that return a Verdict. No coroutine per request for cheap filters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mypy_extensions import mypyc_attr

from sofamesh.core.codec import ReplyStatus

if TYPE_CHECKING:
    from sofamesh.core.events import RequestHead, ResponseHead
    from sofamesh.core.proxy.context import StreamContext


class FilterStream(Protocol):
    """A stream as filters see it: the request head, the per-request context, and the two ways to
    end a ``Verdict.STOP``. ``core/proxy/stream.py``'s ``Stream`` is one (and has more: a filter
    may annotate with ``Stream`` when it reads the route, the cluster or the connection)."""

    @property
    def head(self) -> RequestHead: ...
    @property
    def context(self) -> StreamContext: ...

    def resume(self) -> None:
        """Continue the chain after the filter that stopped it."""
        ...

    def reply(self, status: ReplyStatus, message: str) -> None:
        """Answer the stopped request here, in its own protocol."""
        ...


class Verdict(Enum):
    CONTINUE = "continue"
    STOP = "stop"  # the filter keeps the stream and later calls stream.resume() or stream.reply()


@dataclass(frozen=True, slots=True)
class LocalReply:
    """Answer the request here, in its own protocol (HTTP 403, gRPC 7, Bolt 2, Dubbo 80...)."""

    status: ReplyStatus
    message: str


FilterResult = Verdict | LocalReply


@mypyc_attr(allow_interpreted_subclasses=True)  # filter plugins subclass it (compiled build: setup.py)
class Filter:
    """One configured filter instance, shared by every stream of a listener or route.

    Override what you need; the defaults continue. ``on_request_head`` runs before routing
    (listener filters) or after it (route filters); ``on_response_head`` when an upstream's response
    head is about to go downstream (route filters after the route's own header mutation, then
    listener filters): it may return a changed copy of ``head`` (``dataclasses.replace``) that goes
    downstream instead, or None to leave it; ``on_stream_done`` once per stream, for telemetry and
    accounting.
    """

    name: ClassVar[str] = ""

    def on_request_head(self, stream: FilterStream) -> FilterResult:
        return Verdict.CONTINUE

    def on_response_head(self, stream: FilterStream, head: ResponseHead) -> ResponseHead | None:
        return None

    def on_stream_done(self, stream: FilterStream) -> None:
        return None

    def close(self) -> None:
        """The config that built this filter is no longer serving (release timers, files)."""

    def stats(self) -> dict[str, int]:
        """Plain counters shown under ``filters`` in the admin's ``/stats`` (read at export, never locked)
        and as ``sofamesh_filter_<key>{listener, filter}`` on ``/stats/prometheus``."""
        return {}

    def exposition(self) -> str:
        """Extra Prometheus text this filter adds to ``/stats/prometheus`` (whole metric families).
        Filters sharing one process-wide registry return the same text; the admin prints it once."""
        return ""


@mypyc_attr(allow_interpreted_subclasses=True)
class FilterFactory(ABC):
    """Registered in the filter catalog; builds a Filter from its YAML ``config`` mapping."""

    @abstractmethod
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        """Validate ``config`` (raise ``ConfigError(path + '.config.<key>', ...)``) and build a Filter."""


class FilterChain:
    """An ordered, immutable list of filters with precomputed hooks (only the ones overridden)."""

    __slots__ = ("done_hooks", "filters", "request_hooks", "response_hooks")

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = tuple(filters)
        self.request_hooks = tuple(
            f.on_request_head for f in filters if type(f).on_request_head is not Filter.on_request_head
        )
        self.response_hooks = tuple(
            f.on_response_head for f in filters if type(f).on_response_head is not Filter.on_response_head
        )
        self.done_hooks = tuple(
            f.on_stream_done for f in filters if type(f).on_stream_done is not Filter.on_stream_done
        )

    def __bool__(self) -> bool:
        return bool(self.filters)

    def close(self) -> None:
        for f in self.filters:
            f.close()


EMPTY_CHAIN = FilterChain([])

__all__ = ["EMPTY_CHAIN", "Filter", "FilterChain", "FilterFactory", "FilterResult", "FilterStream", "LocalReply",
           "Verdict"]
