"""The ``grpc_json_transcoder`` route filter: HTTP/JSON in, gRPC to the route's cluster, JSON back.

Envoy's ``envoy.filters.http.grpc_json_transcoder`` on a route: a descriptor set (a file, or base64
inline) with ``google.api.http`` rules; a request whose method and path match a rule of the named
services becomes a gRPC call (``POST /package.Service/Method``, ``application/grpc``, the request
message from the body, the path variables and the query), the answer's messages come back as proto3
JSON under the print options, a server-streaming answer as a JSON array (or one object per line).
A request no rule matches, or a gRPC request, goes to the cluster untouched (unless
``request_validation_options.reject_unknown_method``: a 404).

Errors are JSON, the shape of ``google.rpc.Status`` (``{"code", "message", "details"}``): a gRPC
status other than OK becomes the HTTP status Envoy maps it to (``grpc.http_status_of``), with its
``grpc-status`` / ``grpc-message`` copied into the response headers as Envoy does; a request that
does not fit the message is a 400 (INVALID_ARGUMENT); the proxy's own answers (no provider, timeout)
keep their HTTP status. The stream (``core/proxy/transcode.py``) gathers the request body and the
answer; nothing here runs for routes without the filter.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from pydantic import Field, model_validator

from sofamesh.core.errors import ConfigError
from sofamesh.core.events import RequestHead
from sofamesh.core.headers import Headers
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory
from sofamesh.core.proxy.transcode import Call, JsonReply, RouteTranscoder
from sofamesh.plugins.filters.settings import Settings, parse
from sofamesh.plugins.filters.transcoder.grpc_bindings import (
    JSON,
    Binding,
    BindingError,
    Bindings,
    PrintOptions,
    UnknownService,
    load_bindings,
)
from sofamesh.plugins.filters.transcoder.path_template import UnescapeSpec, unescape
from sofamesh.plugins.protocols.http2 import grpc

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import ReplyStatus
    from sofamesh.core.events import ResponseHead

__all__ = ["GrpcJsonSettings", "GrpcJsonTranscoder", "GrpcJsonTranscoderFactory"]

INVALID_ARGUMENT: Final = 3
NOT_FOUND: Final = 5
INTERNAL: Final = 13
# Request headers that describe the HTTP/JSON request itself, not metadata for the gRPC server.
_DROPPED: Final = frozenset(
    {
        ":method",
        ":path",
        ":scheme",
        ":authority",
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "expect",
        "accept-encoding",
        "proxy-connection",
        "http2-settings",
    }
)


class PrintOptionsSettings(Settings):
    add_whitespace: bool = False
    always_print_primitive_fields: bool = False
    always_print_enums_as_ints: bool = False
    preserve_proto_field_names: bool = False
    stream_newline_delimited: bool = False


class RequestValidationSettings(Settings):
    reject_unknown_method: bool = False
    reject_unknown_query_parameters: bool = False


class GrpcJsonSettings(Settings):
    proto_descriptor: str | None = None  # a FileDescriptorSet file (protoc --include_imports --descriptor_set_out)
    proto_descriptor_bin: str | None = None  # the same bytes, base64
    services: list[str] = Field(min_length=1)
    print_options: PrintOptionsSettings = Field(default_factory=PrintOptionsSettings)
    auto_mapping: bool = False
    ignored_query_parameters: list[str] = Field(default_factory=list)
    ignore_unknown_query_parameters: bool = False
    query_param_unescape_plus: bool = False
    url_unescape_spec: UnescapeSpec = "ALL_CHARACTERS_EXCEPT_RESERVED"
    request_validation_options: RequestValidationSettings = Field(default_factory=RequestValidationSettings)
    max_request_body_size: int = Field(default=1024 * 1024, gt=0)
    max_response_body_size: int = Field(default=4 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _one_descriptor(self) -> GrpcJsonSettings:
        if (self.proto_descriptor is None) == (self.proto_descriptor_bin is None):
            raise ValueError("give exactly one of proto_descriptor (a file) and proto_descriptor_bin (base64)")
        return self


def _status_json(code: int, message: str, details: list[Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"code": code, "message": message}
    if details:
        doc["details"] = details
    return json.dumps(doc, ensure_ascii=False).encode()


def _refused(status: int, code: int, message: str) -> JsonReply:
    return status, _status_json(code, message)


def _stream_items(body: bytes) -> list[bytes]:
    """A client-streaming request body: a JSON array of messages (one object is one message)."""
    if not body.strip():
        return []
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BindingError(f"request body is not JSON: {exc}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    return [json.dumps(item).encode() for item in items]


def _messages(body: bytes) -> list[bytes]:
    """The messages of a gRPC body (5-byte prefix: compressed flag, big-endian length)."""
    out, at = [], 0
    while at < len(body):
        if len(body) - at < 5:
            raise ValueError(f"a gRPC message prefix cut short at byte {at}")
        if body[at]:
            raise ValueError("a compressed gRPC message (none was asked for)")
        n = int.from_bytes(body[at + 1 : at + 5], "big")
        if at + 5 + n > len(body):
            raise ValueError(f"a gRPC message of {n} bytes cut short at byte {at}")
        out.append(body[at + 5 : at + 5 + n])
        at += 5 + n
    return out


class GrpcJsonTranscoder(RouteTranscoder):
    name = "grpc_json_transcoder"
    protocol = "http2"
    gathers_answer = True

    def __init__(self, settings: GrpcJsonSettings, bindings: Bindings) -> None:
        self.settings = settings
        self.bindings = bindings
        self.max_body_bytes = settings.max_request_body_size
        self.max_answer_bytes = settings.max_response_body_size
        p = settings.print_options
        self._print = PrintOptions(
            p.add_whitespace,
            p.always_print_primitive_fields,
            p.always_print_enums_as_ints,
            p.preserve_proto_field_names,
        )
        self._ignored = frozenset(settings.ignored_query_parameters)
        self._reject_unknown = settings.request_validation_options.reject_unknown_method
        # a query parameter naming no field: Envoy passes the request through, unless told to
        # ignore such parameters or to refuse the request (400)
        self._pass_unknown_query = not (
            settings.ignore_unknown_query_parameters
            or settings.request_validation_options.reject_unknown_query_parameters
        )

    def _find(self, head: RequestHead) -> tuple[Binding, list[tuple[str, str]], str] | None:
        path, _, query = head.path.partition("?")
        found = self.bindings.find(head.method.upper(), path)
        if found is None:
            return None
        return found[0], found[1], query

    def takes(self, head: RequestHead) -> bool:
        if grpc.is_grpc(head.headers.get("content-type")):
            return False  # a gRPC client's own call goes through as it is
        found = self._find(head)
        if found is None:
            return self._reject_unknown
        if self._pass_unknown_query and found[2]:
            return self.bindings.unknown_query(found[0], self._query(found[2])) is None
        return True

    def _query(self, query: str) -> list[tuple[str, str]]:
        out = []
        for part in query.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            if self.settings.query_param_unescape_plus:
                key, value = key.replace("+", " "), value.replace("+", " ")
            key = unescape(key, "ALL_CHARACTERS")
            if key in self._ignored:
                continue
            out.append((key, unescape(value, "ALL_CHARACTERS")))
        return out

    def request(self, head: RequestHead, body: bytes, timeout_ms: int = 0) -> RequestHead | Call | JsonReply:
        found = self._find(head)
        path = head.path.partition("?")[0]
        if found is None:
            return _refused(404, NOT_FOUND, f"no gRPC method for {head.method} {path}")
        binding, variables, query = found
        method = binding.method
        params = self._query(query)
        ignore = self.settings.ignore_unknown_query_parameters
        ct = head.headers.get("content-type") or ""
        try:
            if method.client_streaming:  # a JSON array: one message each (path and query set in each)
                items = _stream_items(body)
                messages = [self.bindings.request(binding, variables, params, item, ignore, ct) for item in items]
            else:
                messages = [self.bindings.request(binding, variables, params, body, ignore, ct)]
        except BindingError as exc:
            return _refused(400, INVALID_ARGUMENT, f"{method.grpc_path}: {exc}")
        authority = head.headers.get(":authority") or head.headers.get("host") or head.service
        fields = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", method.grpc_path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("x-envoy-original-path", head.path),
        ]
        fields += [(k, v) for k, v in head.headers if k.lower() not in _DROPPED]
        frame = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)
        call = RequestHead(
            "http2",
            head.request_id or 1,
            method.service,
            method.name,
            method.grpc_path,
            "",
            "",
            Headers(fields),
            False,
            False,
        )
        return Call(call, frame)

    def response(
        self, head: RequestHead, answer: ResponseHead, body: bytes = b"", trailers: Headers | None = None
    ) -> JsonReply:
        found = self._find(head)
        if found is None:  # the binding the request used: same head, same config
            return _refused(500, INTERNAL, f"no gRPC method for {head.method} {head.path}")
        status_headers = answer.headers if trailers is None else trailers
        if answer.status != 200 or not grpc.is_grpc(answer.headers.get("content-type")):
            return answer.http_status if answer.http_status != 200 else 502, _status_json(
                INTERNAL, f"upstream answered HTTP {answer.status} ({answer.headers.get('content-type')}), not gRPC"
            )
        raw_status = status_headers.get("grpc-status")
        if raw_status is None or not raw_status.isdigit():
            return 503, _status_json(14, f"upstream answer without a gRPC status ({raw_status!r})")
        code = int(raw_status)
        raw_message = status_headers.get("grpc-message") or ""
        if code != 0:
            extra = [("grpc-status", raw_status)]
            if raw_message:
                extra.append(("grpc-message", raw_message))
            message = grpc.decode_message(raw_message)
            return grpc.http_status_of(code), _status_json(code, message, self._details(status_headers)), extra
        try:
            messages = _messages(body)
            if not messages and not found[0].method.server_streaming:
                raise ValueError("an OK answer without a message")
            out, content_type = self.bindings.response(
                found[0], messages, self._print, self.settings.print_options.stream_newline_delimited
            )
        except ValueError as exc:
            return 502, _status_json(INTERNAL, f"cannot read the upstream's answer: {exc}")
        if content_type != JSON:  # a google.api.HttpBody answer: its own content type
            return 200, out, [("content-type", content_type)]
        return 200, out

    def _details(self, headers: Headers) -> list[Any] | None:
        """``google.rpc.Status.details`` from ``grpc-status-details-bin``, as JSON, when each detail's
        type is in the descriptor set (or a google.rpc type); None otherwise."""
        raw = headers.get("grpc-status-details-bin")
        if not raw:
            return None
        try:
            status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
        except (binascii.Error, ValueError, DecodeError):
            return None
        assert error_details_pb2.BadRequest is not None  # google.rpc's detail types in the default pool
        for pool in (self.bindings.pool, None):  # the descriptor set's types, then the google.rpc ones
            try:
                doc = json_format.MessageToDict(status, descriptor_pool=pool)
            except (json_format.Error, TypeError, KeyError):
                continue
            details = doc.get("details")
            return details if isinstance(details, list) else None
        return None

    def error(self, head: RequestHead, status: ReplyStatus, message: str) -> JsonReply:
        return status.http_status, _status_json(status.grpc_status, message)


class GrpcJsonTranscoderFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        settings = parse(GrpcJsonSettings, config, path)
        if settings.proto_descriptor is not None:
            where = f"{path}.config.proto_descriptor"
            try:
                data = Path(settings.proto_descriptor).read_bytes()
            except OSError as exc:
                raise ConfigError(where, f"cannot read {settings.proto_descriptor!r}: {exc.strerror}") from None
        else:
            where = f"{path}.config.proto_descriptor_bin"
            try:
                data = base64.b64decode(settings.proto_descriptor_bin or "", validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(where, f"not base64: {exc}") from None
        try:
            bindings = load_bindings(data, settings.services, settings.auto_mapping)
        except UnknownService as exc:
            raise ConfigError(f"{path}.config.services[{exc.index}]", str(exc)) from None
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
        return GrpcJsonTranscoder(settings, bindings)


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("grpc_json_transcoder", GrpcJsonTranscoderFactory())
