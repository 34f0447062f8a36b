"""A protobuf descriptor set read into HTTP bindings, and JSON turned into request messages and
response messages into JSON.

Owns the protobuf side of gRPC-JSON transcoding, as Envoy's ``grpc_json_transcoder`` reads it: the
methods of the named services, each with its ``google.api.http`` rule and additional bindings (or,
with ``auto_mapping``, ``POST /package.Service/Method`` for a method without one); a request message
from the JSON body (``body: "*"`` the whole message, ``body: "field"`` one field), the path
template's variables and the query parameters (field paths, repeated fields appended); a response
message (or its ``response_body`` field) printed as proto3 JSON. No HTTP framing, no sockets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.api import annotations_pb2  # registers the google.api.http option before a set is parsed
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from sofamesh.plugins.filters.transcoder.path_template import PathTemplate, TemplateError, parse_template

__all__ = [
    "Binding",
    "BindingError",
    "Bindings",
    "Method",
    "PrintOptions",
    "UnknownField",
    "UnknownService",
    "load_bindings",
]

# Well-known types whose JSON form is a string or number: a path or query value may set them.
_SCALAR_MESSAGES: Final = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.FloatValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.BoolValue",
    }
)


JSON: Final = "application/json"
HTTP_BODY: Final = "google.api.HttpBody"


class BindingError(ValueError):
    """A request that cannot become the method's message (an HTTP 400): the message says why."""


class UnknownField(BindingError):
    """A path variable or query parameter naming no field of the request message."""


class UnknownService(ValueError):
    """A service name (``index`` in the list given) the descriptor set does not define."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class PrintOptions:
    """Envoy's ``print_options``."""

    add_whitespace: bool = False
    always_print_primitive_fields: bool = False
    always_print_enums_as_ints: bool = False
    preserve_proto_field_names: bool = False


@dataclass(frozen=True, slots=True)
class Method:
    service: str  # package.Service
    name: str
    grpc_path: str  # /package.Service/Method
    input: type[Message]
    output: type[Message]
    client_streaming: bool
    server_streaming: bool


@dataclass(frozen=True, slots=True)
class Binding:
    """One HTTP rule of a method: ``verb`` (upper case, or a custom kind), the path template, the
    field the body fills (``*``: the whole message; empty: no body) and the response field printed."""

    verb: str
    template: PathTemplate
    body: str
    response_body: str
    method: Method


class Bindings:
    """Every binding of the named services, most specific template first, and the pool that
    resolves their types (``Any`` included)."""

    def __init__(self, pool: descriptor_pool.DescriptorPool, bindings: list[Binding]) -> None:
        self.pool = pool
        self.bindings = sorted(bindings, key=lambda b: b.template.rank)

    def find(self, verb: str, path: str) -> tuple[Binding, list[tuple[str, str]]] | None:
        for b in self.bindings:
            if b.verb == verb:
                variables = b.template.match(path)
                if variables is not None:
                    return b, variables
        return None

    # -- requests -----------------------------------------------------------------------------------
    def request(
        self,
        binding: Binding,
        variables: Sequence[tuple[str, str]],
        query: Iterable[tuple[str, str]],
        body: bytes,
        ignore_unknown_query: bool = False,
        content_type: str = "",
    ) -> bytes:
        """The serialized request message; raises ``BindingError`` naming the bad part. The path
        variables and query parameters are set first and the body over them: a field given both
        ways takes the body's value, as Envoy's transcoder writes them. A body bound to a
        ``google.api.HttpBody`` is taken as it is, with ``content_type``."""
        desc = binding.method.input.DESCRIPTOR
        doc: dict[str, Any] = {}
        for name, value in variables:
            self._bind(doc, desc, name, value, "path variable")
        for name, value in query:
            self._bind(doc, desc, name, value, "query parameter", ignore_unknown_query)
        raw = _http_body(desc, binding.body)
        if raw is not None:  # google.api.HttpBody: the bytes and their content type, not JSON
            http_body = {"contentType": content_type, "data": base64.b64encode(body).decode("ascii")}
            _overlay(doc, http_body if raw == "" else {raw: http_body}, desc)
        elif binding.body and body.strip():
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BindingError(f"request body is not JSON: {exc}") from None
            if binding.body == "*":
                if not isinstance(parsed, dict):
                    raise BindingError(f"request body: expected a JSON object ({desc.full_name})")
                _overlay(doc, parsed, desc)
            else:
                field = _field(desc, binding.body)
                assert field is not None  # checked at load
                _overlay(doc, {field.name: parsed}, desc)
        msg = binding.method.input()
        try:
            json_format.ParseDict(doc, msg, descriptor_pool=self.pool)
        except json_format.ParseError as exc:
            raise BindingError(str(exc)) from None
        return bytes(msg.SerializeToString())

    def unknown_query(self, binding: Binding, query: Iterable[tuple[str, str]]) -> str | None:
        """The first query parameter naming no field of the method's request, or None."""
        desc = binding.method.input.DESCRIPTOR
        for name, value in query:
            try:
                self._bind({}, desc, name, value, "query parameter")
            except UnknownField:
                return name
            except BindingError:
                continue  # a field, with a bad value: the request's 400
        return None

    def _bind(
        self, doc: dict[str, Any], desc: Descriptor, path: str, value: str, what: str, optional: bool = False
    ) -> None:
        names = path.split(".")
        node = doc
        for i, name in enumerate(names):
            field = _field(desc, name)
            if field is None:
                if optional:
                    return
                raise UnknownField(f"{what} {path!r}: {desc.full_name} has no field {name!r}")
            if field.json_name in node and field.json_name != field.name:  # one key per field
                node[field.name] = node.pop(field.json_name)
            last = i == len(names) - 1
            message = field.type == FieldDescriptor.TYPE_MESSAGE
            if not last:
                if not message or _repeated(field):
                    raise BindingError(f"{what} {path!r}: {name!r} is not a message field")
                child = node.setdefault(field.name, {})
                if not isinstance(child, dict):
                    raise BindingError(f"{what} {path!r}: {name!r} is set twice")
                node, desc = child, field.message_type
                continue
            if message and field.message_type.full_name not in _SCALAR_MESSAGES:
                raise BindingError(f"{what} {path!r}: {field.message_type.full_name} cannot be set from a string")
            scalar = _scalar(field, value, what, path)
            if _repeated(field):
                items = node.setdefault(field.name, [])
                if not isinstance(items, list):
                    raise BindingError(f"{what} {path!r}: {name!r} is set twice")
                items.append(scalar)
            else:
                node[field.name] = scalar

    # -- responses ----------------------------------------------------------------------------------
    def response(
        self, binding: Binding, messages: Sequence[bytes], opts: PrintOptions, newline_delimited: bool
    ) -> tuple[bytes, str]:
        """The body and content type for the response ``messages``: JSON (one for a unary method; a
        JSON array, or one per line, for a streaming one); a ``google.api.HttpBody`` answer (or
        ``response_body`` field) is its ``data`` (streamed: concatenated) with its ``content_type``."""
        out = []
        raw = _http_body(binding.method.output.DESCRIPTOR, binding.response_body)
        data_out: list[bytes] = []
        content_type = ""
        for data in messages:
            msg = binding.method.output()
            try:
                msg.ParseFromString(data)
            except DecodeError as exc:
                raise ValueError(f"{binding.method.output.DESCRIPTOR.full_name}: {exc}") from None
            if raw is not None:
                body = msg if raw == "" else getattr(msg, _field(msg.DESCRIPTOR, raw).name)  # type: ignore[union-attr]
                data_out.append(bytes(body.data))
                content_type = content_type or str(body.content_type)
                continue
            value: Any = json_format.MessageToDict(
                msg,
                always_print_fields_with_no_presence=opts.always_print_primitive_fields,
                preserving_proto_field_name=opts.preserve_proto_field_names,
                use_integers_for_enums=opts.always_print_enums_as_ints,
                descriptor_pool=self.pool,
            )
            if binding.response_body:
                field = _field(msg.DESCRIPTOR, binding.response_body)
                assert field is not None  # checked at load
                value = value.get(field.name if opts.preserve_proto_field_names else field.json_name)
            out.append(value)
        if raw is not None:
            return b"".join(data_out), content_type or "application/octet-stream"
        if not binding.method.server_streaming:
            return _dump(out[0] if out else {}, opts), JSON
        if newline_delimited:
            return b"".join(_dump(v, opts) + b"\n" for v in out), JSON
        return _dump(out, opts), JSON


def _dump(value: Any, opts: PrintOptions) -> bytes:
    if opts.add_whitespace:
        return json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _overlay(base: dict[str, Any], top: dict[str, Any], desc: Descriptor | None) -> None:
    """``top`` (the body) written over ``base`` (the bindings): a message field merges, a repeated
    field appends, anything else takes ``top``'s value; ``top``'s JSON names become proto names."""
    for key, value in top.items():
        f = _field(desc, key) if desc is not None else None
        name = f.name if f is not None else key
        cur = base.get(name)
        nested = f is not None and f.type == FieldDescriptor.TYPE_MESSAGE and not f.message_type.GetOptions().map_entry
        if nested and isinstance(cur, dict) and isinstance(value, dict) and f is not None:
            _overlay(cur, value, f.message_type)
        elif isinstance(cur, list) and isinstance(value, list):
            base[name] = cur + value
        else:
            base[name] = value


def _http_body(desc: Descriptor, field: str) -> str | None:
    """Where a ``google.api.HttpBody`` is in ``desc`` for the rule's body / response_body ``field``:
    "" the message itself, a field name, or None when it is not one."""
    if field in ("", "*"):
        return "" if desc.full_name == HTTP_BODY else None
    f = _field(desc, field)
    if f is not None and f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.full_name == HTTP_BODY:
        return str(f.name)
    return None


def _field(desc: Descriptor, name: str) -> FieldDescriptor | None:
    f = desc.fields_by_name.get(name)
    if f is None:
        f = next((x for x in desc.fields if x.json_name == name), None)
    return f


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _scalar(field: FieldDescriptor, value: str, what: str, path: str) -> object:
    """A path or query string as the JSON value protobuf's parser takes for ``field``."""
    if field.type == FieldDescriptor.TYPE_BOOL or (
        field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name == "google.protobuf.BoolValue"
    ):
        if value in ("true", "false"):
            return value == "true"
        raise BindingError(f"{what} {path!r}: expected true or false, found {value!r}")
    if field.type == FieldDescriptor.TYPE_ENUM and value.lstrip("-").isdigit():
        return int(value)
    return value


def _add_files(pool: descriptor_pool.DescriptorPool, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
    have = {f.name for f in files}
    for f in files:
        missing = [d for d in f.dependency if d not in have]
        if missing:
            raise ValueError(
                f"{f.name} imports {', '.join(missing)}, which the descriptor set does not hold "
                "(build it with protoc --include_imports)"
            )
        try:
            pool.Add(f)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{f.name}: {exc}") from None


def load_bindings(data: bytes, services: Sequence[str], auto_mapping: bool = False) -> Bindings:
    """The bindings of ``services`` in the serialized ``FileDescriptorSet`` ``data``. Raises
    ``ValueError`` naming the file, service, method or rule that is wrong."""
    assert annotations_pb2.http is not None
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a serialized FileDescriptorSet: {exc}") from None
    if not fds.file:
        raise ValueError("the descriptor set holds no file")
    pool = descriptor_pool.DescriptorPool()
    _add_files(pool, fds.file)
    protos = {f"{f.package}.{s.name}" if f.package else s.name: s for f in fds.file for s in f.service}
    out: list[Binding] = []
    for index, name in enumerate(services):
        sp = protos.get(name)
        if sp is None:
            known = ", ".join(sorted(protos)) or "none"
            raise UnknownService(f"service {name!r} is not in the descriptor set (services there: {known})", index)
        sd = pool.FindServiceByName(name)
        for mp in sp.method:
            md = sd.methods_by_name[mp.name]
            method = Method(
                name,
                mp.name,
                f"/{name}/{mp.name}",
                message_factory.GetMessageClass(md.input_type),
                message_factory.GetMessageClass(md.output_type),
                mp.client_streaming,
                mp.server_streaming,
            )
            where = f"{name}.{mp.name}"
            if mp.options.HasExtension(annotations_pb2.http):
                rule = mp.options.Extensions[annotations_pb2.http]
                out.append(_binding(rule, method, where))
                for i, extra in enumerate(rule.additional_bindings):
                    out.append(_binding(extra, method, f"{where} additional_bindings[{i}]"))
            elif auto_mapping:
                out.append(Binding("POST", parse_template(method.grpc_path), "*", "", method))
    return Bindings(pool, out)


def _binding(rule: Any, method: Method, where: str) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError(f"{where}: google.api.http rule without a pattern (get, put, post, delete, patch, custom)")
    if kind == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, template = kind.upper(), getattr(rule, kind)
    try:
        parsed = parse_template(template)
    except TemplateError as exc:
        raise ValueError(f"{where}: {exc}") from None
    desc = method.input.DESCRIPTOR
    for var, _ in parsed.variables:
        d: Descriptor | None = desc
        for part in var.split("."):
            f = _field(d, part) if d is not None else None
            if f is None:
                raise ValueError(f"{where}: path variable {var!r}: {desc.full_name} has no such field")
            d = f.message_type if f.type == FieldDescriptor.TYPE_MESSAGE else None
    for what, field, d in (("body", rule.body, desc), ("response_body", rule.response_body, method.output.DESCRIPTOR)):
        if field and field != "*" and _field(d, field) is None:
            raise ValueError(f"{where}: {what} {field!r}: {d.full_name} has no such field")
    if rule.response_body == "*":
        raise ValueError(f"{where}: response_body '*' (name a field, or leave it out)")
    return Binding(verb, parsed, rule.body, rule.response_body, method)
