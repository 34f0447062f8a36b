"""``cors``: Cross-Origin Resource Sharing on a route, as Envoy's ``envoy.filters.http.cors`` does it.

A request with an ``Origin`` is a CORS request. A preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) from an allowed origin is answered here: 200 with
``Access-Control-Allow-Origin`` (the origin), ``-Allow-Credentials``, ``-Allow-Methods``,
``-Allow-Headers`` (``*`` echoes the request's ``Access-Control-Request-*``), ``-Max-Age`` and
``-Expose-Headers``. A preflight from another origin goes on to the upstream
(``forward_not_matching_preflights``, the default) or is answered without ``-Allow-Origin``. Any
other request from an allowed origin is forwarded and its response gets ``-Allow-Origin``,
``-Allow-Credentials`` and ``-Expose-Headers``; from another origin it is left alone. RPC messages
and requests without an ``Origin`` pass untouched. A route without the filter pays nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sofamesh.core.config.model import StringMatch
from sofamesh.core.events import ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, Verdict
from sofamesh.core.proxy.router import compile_string_match
from sofamesh.plugins.filters.settings import Settings, parse

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.stream import Stream

_ORIGIN = "cors.origin"  # StreamContext.attrs: the allowed origin of this request, for its response


class CorsSettings(Settings):
    """Envoy's CorsPolicy: header values are given as they are sent (comma-separated lists)."""

    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    allow_credentials: bool = False
    allow_private_network_access: bool = False
    forward_not_matching_preflights: bool = True


class CorsFilter(Filter):
    name = "cors"

    def __init__(self, settings: CorsSettings) -> None:
        self._origins = tuple(compile_string_match(m) for m in settings.allow_origins)
        self._any = any(p("*") for p in self._origins)  # Envoy: a matcher that matches "*" allows every origin
        self._methods = settings.allow_methods
        self._headers = settings.allow_headers
        self._expose = settings.expose_headers
        self._max_age = settings.max_age
        self._credentials = settings.allow_credentials
        self._private_network = settings.allow_private_network_access
        self._forward = settings.forward_not_matching_preflights
        self.valid = 0
        self.invalid = 0
        self.preflights = 0

    def allowed(self, origin: str) -> bool:
        return self._any or any(p(origin) for p in self._origins)

    def on_request_head(self, stream: Stream) -> FilterResult:
        head = stream.head
        if head.raw is not None:
            return Verdict.CONTINUE
        h = head.headers
        origin = h.get("origin")
        if not origin:
            return Verdict.CONTINUE
        ok = self.allowed(origin)
        if ok:
            self.valid += 1
            stream.context.attrs[_ORIGIN] = origin
        else:
            self.invalid += 1
        if head.method != "OPTIONS":
            return Verdict.CONTINUE
        method = h.get("access-control-request-method")
        if not method or (not ok and self._forward):
            return Verdict.CONTINUE
        self.preflights += 1
        out: list[tuple[str, str]] = []
        if ok:
            out.append(("access-control-allow-origin", origin))
        if self._credentials:
            out.append(("access-control-allow-credentials", "true"))
        if self._methods:
            out.append(("access-control-allow-methods", method if self._methods == "*" else self._methods))
        if self._headers:
            asked = h.get("access-control-request-headers") or ""
            out.append(("access-control-allow-headers", asked if self._headers == "*" else self._headers))
        if self._max_age:
            out.append(("access-control-max-age", self._max_age))
        if self._private_network and h.get("access-control-request-private-network") == "true":
            out.append(("access-control-allow-private-network", "true"))
        if ok and self._expose:  # Envoy's response phase runs on its own preflight answer too
            out.append(("access-control-expose-headers", self._expose))
        if head.protocol == "http1":
            out.append(("content-length", "0"))
        stream.respond(ResponseHead(head.protocol, head.request_id, 200, 200, Headers(out)), b"")
        return Verdict.STOP  # answered: the stream is done

    def on_response_head(self, stream: Stream, head: ResponseHead) -> ResponseHead | None:
        if head.raw is not None:
            return None
        origin = stream.context.attrs.get(_ORIGIN)
        if origin is None:
            return None
        add = [("access-control-allow-origin", origin)]
        if self._credentials:
            add.append(("access-control-allow-credentials", "true"))
        if self._expose:
            add.append(("access-control-expose-headers", self._expose))
        names = {k for k, _ in add}
        kept = [(k, v) for k, v in head.headers if k.lower() not in names]
        return dataclasses.replace(head, headers=Headers([*kept, *add]))

    def stats(self) -> dict[str, int]:
        return {
            "cors_origin_valid": self.valid,
            "cors_origin_invalid": self.invalid,
            "cors_preflights_answered": self.preflights,
        }


class CorsFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return CorsFilter(parse(CorsSettings, config, path))


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("cors", CorsFilterFactory())


__all__ = ["CorsFilter", "CorsFilterFactory", "CorsSettings"]
