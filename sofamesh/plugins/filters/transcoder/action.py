"""The ``transcoder`` route filter: an HTTP route answered by a Dubbo or Bolt call.

Owns the route's side of the call: where each argument comes from (the JSON body as an array or an
object by argument names, a ``{var}`` of the path template, the query, a header), the RPC request built with
``dubbo_call`` / ``bolt_call``, and the HTTP answer: the result as JSON, or a JSON error (400 for an
argument that does not fit its type, 503 no provider, 504 timeout, 500 with the exception's class and
message). The stream (``core/proxy/transcode.py``) gathers the body and sends the frame on the
cluster's pool; nothing here runs for routes without the filter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qs, unquote

from pydantic import Field, field_validator, model_validator

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.events import RequestHead
from sofamesh.core.headers import Headers
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory
from sofamesh.core.proxy.transcode import RouteTranscoder
from sofamesh.plugins.filters.settings import Settings, parse
from sofamesh.plugins.filters.transcoder.bolt_call import bolt_request, read_bolt_response
from sofamesh.plugins.filters.transcoder.dubbo_call import dubbo_request, read_dubbo_response
from sofamesh.plugins.filters.transcoder.java_json import ArgumentError, java_type_error, to_json
from sofamesh.plugins.protocols.bolt import frames as bolt_frames
from sofamesh.plugins.protocols.dubbo import frames as dubbo_frames

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.events import ResponseHead
    from sofamesh.plugins.filters.transcoder.result import RpcResult

_NO_HEADERS: Final = Headers([])
_TYPED_MAPS: Final = frozenset({"java.util.TreeMap", "java.util.LinkedHashMap"})
_VAR: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
# RPC statuses that mean "no provider could take it" (503) or "it took too long" (504); any other
# failure is a 500 naming the exception or the status.
_DUBBO_HTTP: Final[dict[int, int]] = {
    dubbo_frames.STATUS_CLIENT_TIMEOUT: 504,
    dubbo_frames.STATUS_SERVER_TIMEOUT: 504,
    dubbo_frames.STATUS_SERVICE_NOT_FOUND: 503,
    dubbo_frames.STATUS_THREADPOOL_EXHAUSTED: 503,
}
_BOLT_HTTP: Final[dict[int, int]] = {
    bolt_frames.STATUS_TIMEOUT: 504,
    bolt_frames.STATUS_SERVER_THREADPOOL_BUSY: 503,
    bolt_frames.STATUS_NO_PROCESSOR: 503,
}


class Argument(Settings):
    name: str = Field(min_length=1)
    type: str = ""  # the declared Java type; none on every argument: a generic call
    source: Literal["body", "path", "query", "header"] = Field("body", alias="from")
    key: str = ""  # the path variable, query parameter or header it comes from; default: ``name``

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if not v:
            return v
        why = java_type_error(v)
        if why is not None:
            raise ValueError(why)
        return v.strip()


class TranscoderSettings(Settings):
    protocol: Literal["dubbo", "bolt"]
    interface: str = Field(min_length=1)
    method: str = Field(min_length=1)
    version: str = ""
    group: str = ""
    path: str | None = None  # template: /users/{id}; its vars feed arguments ``from: path``
    arguments: list[Argument] = Field(default_factory=list)
    dialect: Literal["hessian2", "draft"] = "hessian2"  # Bolt: SOFARPC Java, or sofa-rpc-node
    attachments: dict[str, str] = Field(default_factory=dict)  # Dubbo attachments sent with each call
    max_body_bytes: int = Field(default=256 * 1024, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> TranscoderSettings:
        names = [a.name for a in self.arguments]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"arguments: {', '.join(twice)} named twice")
        untyped = [a.name for a in self.arguments if not a.type]
        if untyped and len(untyped) != len(self.arguments):
            raise ValueError(
                f"arguments: {', '.join(untyped)} without a type: declare every type, or none for a generic call"
            )
        variables = _VAR.findall(self.path or "")
        for a in self.arguments:
            key = a.key or a.name
            if a.source == "path" and key not in variables:
                raise ValueError(f"argument {a.name!r} is from the path, but path {self.path!r} has no {{{key}}}")
            if a.key and a.source == "body":
                raise ValueError(f"argument {a.name!r}: key is for arguments from path, query or header")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"path {self.path!r} must start with '/'")
        if self.protocol == "dubbo" and "dialect" in self.model_fields_set:
            raise ValueError("dialect is for protocol bolt (hessian2 or draft)")
        if self.protocol == "bolt" and self.dialect == "draft":
            for a in self.arguments:  # the draft encoding (sofa-hessian-node) has no typed map
                if a.type in _TYPED_MAPS:
                    raise ValueError(
                        f"argument {a.name!r}: dialect draft cannot write a {a.type}; declare java.util.Map"
                    )
        return self


def _template(path: str | None) -> re.Pattern[str] | None:
    if path is None:
        return None
    out, at = [], 0
    for m in _VAR.finditer(path):
        out.append(re.escape(path[at : m.start()]))
        out.append("([^/]+)")
        at = m.end()
    out.append(re.escape(path[at:]))
    return re.compile("".join(out))


def _json(status: int, payload: dict[str, Any]) -> tuple[int, bytes]:
    return status, json.dumps({"status": status, **payload}, ensure_ascii=False).encode()


class Refused(Exception):
    """A request that cannot become the route's call; ``answer`` is the JSON reply."""

    def __init__(self, answer: tuple[int, bytes]) -> None:
        super().__init__(answer)
        self.answer = answer


class TranscoderFilter(RouteTranscoder):
    name = "transcoder"

    def __init__(self, settings: TranscoderSettings) -> None:
        self.settings = settings
        self.max_body_bytes = settings.max_body_bytes
        self.protocol = settings.protocol
        self._template = _template(settings.path)
        self._variables = _VAR.findall(settings.path or "")
        # no declared types: a generic call (Dubbo's $invoke; SOFA's revised generic call)
        typed = not settings.arguments or settings.arguments[0].type
        self._types: list[str] | None = [a.type for a in settings.arguments] if typed else None
        self._body_args = [a.name for a in settings.arguments if a.source == "body"]
        self._unique_name = f"{settings.interface}:{settings.version}" if settings.version else settings.interface

    # -- request ------------------------------------------------------------------------------------
    def _arguments(self, head: RequestHead, body: bytes) -> list[tuple[str, object]]:
        s = self.settings
        path, _, query = head.path.partition("?")
        variables: dict[str, str] = {}
        if self._template is not None:
            m = self._template.fullmatch(path)
            if m is None:
                raise Refused(_json(404, {"error": "no_route", "message": f"path {path!r} does not match {s.path!r}"}))
            variables = {k: unquote(v) for k, v in zip(self._variables, m.groups(), strict=True)}
        params = parse_qs(query, keep_blank_values=True) if query else {}
        by_name: dict[str, object] = {}
        if self._body_args:
            by_name = self._body(body)
        values: list[tuple[str, object]] = []
        for a in s.arguments:
            key = a.key or a.name
            if a.source == "path":
                values.append((a.name, variables[key]))
            elif a.source == "query":
                given = params.get(key)
                values.append((a.name, given[0] if given else None))
            elif a.source == "header":
                values.append((a.name, head.headers.get(key.lower())))
            else:
                values.append((a.name, by_name.get(a.name)))
        return values

    def _body(self, body: bytes) -> dict[str, object]:
        names = self._body_args
        try:
            parsed = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(_json(400, {"error": "bad_body", "message": f"request body is not JSON: {exc}"})) from None
        if isinstance(parsed, list):
            if len(parsed) != len(names):
                raise Refused(
                    _json(
                        400,
                        {
                            "error": "bad_body",
                            "message": (
                                f"request body: expected a JSON array of {len(names)} arguments ({', '.join(names)}), "
                                f"found {len(parsed)}"
                            ),
                        },
                    )
                )
            return dict(zip(names, parsed, strict=True))
        if isinstance(parsed, dict):
            missing = [n for n in names if n not in parsed]
            if missing:
                raise Refused(
                    _json(
                        400,
                        {
                            "error": "bad_body",
                            "argument": missing[0],
                            "message": (
                                f"request body: argument {missing[0]!r} missing (an object by argument names: "
                                f"{', '.join(names)})"
                            ),
                        },
                    )
                )
            return parsed
        raise Refused(
            _json(
                400,
                {
                    "error": "bad_body",
                    "message": (
                        f"request body: expected a JSON array or an object by argument names ({', '.join(names)})"
                    ),
                },
            )
        )

    def request(self, head: RequestHead, body: bytes, timeout_ms: int = 0) -> RequestHead | tuple[int, bytes]:
        s = self.settings
        try:
            args = self._arguments(head, body)
            if s.protocol == "dubbo":
                # the route's timeout goes as the ``timeout`` attachment, as Dubbo's consumer sends its own
                attachments = dict(s.attachments)
                if timeout_ms:
                    attachments.setdefault("timeout", str(timeout_ms))
                frame = dubbo_request(
                    1,
                    interface=s.interface,
                    method=s.method,
                    args=args,
                    java_types=self._types,
                    version=s.version or None,
                    group=s.group or None,
                    attachments=attachments or None,
                )
                return RequestHead(
                    "dubbo", 1, s.interface, s.method, "", s.version, s.group, _NO_HEADERS, False, True, frame
                )
            frame = bolt_request(  # the frame carries the route's timeout (-1: none, as Bolt writes it)
                1,
                service=self._unique_name,
                method=s.method,
                args=args,
                java_types=self._types,
                dialect=s.dialect,
                timeout_ms=timeout_ms or -1,
            )
            return RequestHead(
                "bolt", 1, self._unique_name, s.method, "", s.version, s.group, _NO_HEADERS, False, True, frame
            )
        except Refused as exc:
            return exc.answer
        except ArgumentError as exc:
            return _json(
                400, {"error": "bad_argument", "argument": exc.argument, "type": exc.java_type, "message": str(exc)}
            )
        except ValueError as exc:  # a value the encoder cannot write: the gateway's own failure
            return _json(500, {"error": "cannot_encode", "message": f"{s.protocol} call {s.method}: {exc}"})

    # -- response -----------------------------------------------------------------------------------
    def response(
        self, head: RequestHead, answer: ResponseHead, body: bytes = b"", trailers: Headers | None = None
    ) -> tuple[int, bytes]:
        raw = answer.raw
        if raw is None:
            return _json(502, {"error": "bad_response", "message": f"{answer.protocol} answer without a frame"})
        try:
            if self.settings.protocol == "dubbo":
                result = read_dubbo_response(raw)
                table = _DUBBO_HTTP
            else:
                result = read_bolt_response(raw)
                table = _BOLT_HTTP
        except ValueError as exc:
            return _json(502, {"error": "bad_response", "message": f"cannot read the provider's answer: {exc}"})
        return _answer(result, table)

    def error(self, head: RequestHead, status: ReplyStatus, message: str) -> tuple[int, bytes]:
        # a provider that went away mid-call is a provider down: 503, as Envoy answers a reset
        # before the response headers (the proxy's own reply too)
        return _json(status.http_status, {"error": status.name.lower(), "message": message})


def _answer(result: RpcResult, table: Mapping[int, int]) -> tuple[int, bytes]:
    if not result.exception:
        return 200, json.dumps(to_json(result.value), ensure_ascii=False).encode()
    status = table.get(result.status, 500)
    return _json(status, {"error": "exception", "exception": result.exception, "message": result.message})


class TranscoderFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return TranscoderFilter(parse(TranscoderSettings, config, path))


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("transcoder", TranscoderFilterFactory())


__all__ = ["TranscoderFilter", "TranscoderFilterFactory", "TranscoderSettings"]
