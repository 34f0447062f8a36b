"""``quota.global``: ask a rate limit service (Envoy RLS v3, e.g. ``sofamesh ratelimit-server``)
before a request goes upstream, so several sidecars share one quota.

The filter builds the request's descriptors, sends ``ShouldRateLimit`` with a deadline of
``timeout_ms`` and returns STOP; gRPC's completion callback hands the answer back to the event
loop, which resumes the stream (OK), answers it with the protocol's "rate limited" reply
(OVER_LIMIT), or on an error or timeout lets it through (``failure_mode_deny: false``, Envoy's
default) or answers it with an internal error (``true``).

A descriptor is a list of entries; an entry is ``{key, value}`` (a literal) or ``{key, from}`` where
``from`` is ``service``, ``method``, ``route``, ``source`` (SPIFFE id, else IP), ``source_ip``,
``request_principal`` or a header / header-map key name. A descriptor with an entry whose source
is empty is not sent (as Envoy skips an action that does not apply).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, Verdict
from sofamesh.plugins.filters.quota import rls_proto as pb
from sofamesh.plugins.filters.quota.local import key_reader
from sofamesh.plugins.filters.settings import Settings, parse

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.stream import Stream


class Entry(Settings):
    key: str
    value: str | None = None
    from_: str | None = Field(default=None, alias="from")

    @model_validator(mode="after")
    def _one(self) -> Entry:
        if (self.value is None) == (self.from_ is None):
            raise ValueError("give exactly one of value or from")
        return self


class GlobalQuotaSettings(Settings):
    domain: str
    service: str  # HOST:PORT of the rate limit service (gRPC, plaintext)
    timeout_ms: int = Field(default=20, gt=0)
    failure_mode_deny: bool = False
    descriptors: list[list[Entry]] = Field(min_length=1)


class GlobalQuotaFilter(Filter):
    name = "quota.global"

    def __init__(self, settings: GlobalQuotaSettings) -> None:
        self.domain = settings.domain
        self.target = settings.service
        self.timeout_s = settings.timeout_ms / 1000.0
        self.deny_on_error = settings.failure_mode_deny
        self.descriptors: tuple[tuple[tuple[str, Callable[[Stream], str]], ...], ...] = tuple(
            tuple((e.key, _constant(e.value) if e.value is not None else key_reader(e.from_ or "")) for e in d)
            for d in settings.descriptors)
        self._channel: Any = None
        self._call: Any = None
        self.ok = 0
        self.over_limit = 0
        self.errors = 0

    def _stub(self) -> Any:
        if self._call is None:
            import grpc

            self._channel = grpc.insecure_channel(self.target)  # created on first use: after any worker fork
            self._call = self._channel.unary_unary(pb.METHOD, request_serializer=pb.RateLimitRequest.SerializeToString,
                                                   response_deserializer=pb.RateLimitResponse.FromString)
        return self._call

    def on_request_head(self, stream: Stream) -> FilterResult:
        req = pb.RateLimitRequest(domain=self.domain)
        for d in self.descriptors:
            values = [(k, read(stream)) for k, read in d]
            if all(v for _, v in values):
                req.descriptors.add().entries.extend(pb.RateLimitDescriptor.Entry(key=k, value=v) for k, v in values)
        if not req.descriptors:
            return Verdict.CONTINUE
        loop = stream.conn.loop
        fut = self._stub().future(req, timeout=self.timeout_s)

        def done(f: Any) -> None:  # runs on a gRPC thread
            try:
                loop.call_soon_threadsafe(self._answer, stream, f)
            except RuntimeError:
                pass  # the loop is closed: the process is stopping

        fut.add_done_callback(done)
        return Verdict.STOP

    def _answer(self, stream: Stream, fut: Any) -> None:
        if stream.done:
            return
        try:
            resp = fut.result()
        except Exception as exc:  # grpc.RpcError, deadline: the service could not answer
            self.errors += 1
            if self.deny_on_error:
                code = getattr(exc, "code", lambda: None)()
                stream.reply(ReplyStatus.INTERNAL, f"rate limit service unavailable ({code})")
            else:
                stream.resume()
            return
        if resp.overall_code == pb.OVER_LIMIT:
            self.over_limit += 1
            stream.reply(ReplyStatus.RATE_LIMITED, "global rate limit exceeded")
            return
        self.ok += 1
        stream.resume()

    def stats(self) -> dict[str, int]:
        return {"quota_global_ok": self.ok, "quota_global_over_limit": self.over_limit,
                "quota_global_error": self.errors}

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


def _constant(v: str) -> Callable[[Stream], str]:
    return lambda s: v


class GlobalQuotaFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return GlobalQuotaFilter(parse(GlobalQuotaSettings, config, path))


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("quota.global", GlobalQuotaFilterFactory())


__all__ = ["GlobalQuotaFilter", "GlobalQuotaFilterFactory", "GlobalQuotaSettings"]
