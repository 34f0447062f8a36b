"""HTTP/1.x codec on httptools (llhttp). Pure: bytes in, events out. No sockets, no event loop, no logging.

Server role parses requests and encodes responses; client role encodes requests and parses
responses. Bodies are streamed as ``BodyChunk``\\ s (never held whole); outgoing framing is chosen
per message: the peer's content-length when known, chunked for HTTP/1.1, close-delimited for 1.0.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import httptools

from sofamesh.core.codec import Codec, CodecFactory, CodecLimits, CodecState, Failure, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfMessage,
    Event,
    RequestHead,
    ResponseHead,
    _NeedData,
)
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.http1.frames import (
    FIELD_NAMES,
    METHODS_WITH_BODY,
    chunk,
    encode_fields,
    field_name,
    last_chunk,
    reason,
    split_fields,
    status_line,
)

PROTOCOL = "http1"
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE")}
_METHOD_PREFIXES = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"TRACE ",
                    b"CONNECT ")


@dataclass(slots=True, unsafe_hash=True, init=False)
class Http1Meta:
    """What the codec must remember about a request to answer it correctly. Never changed once
    built (not frozen only because a frozen dataclass costs 3x as much to build, once per request;
    hashable by value as before, so heads that carry it stay hashable). Its own ``__init__``, as
    ``RequestHead``'s: the one ``dataclass`` writes stays interpreted code in the compiled build."""

    version: str  # "1.0" / "1.1"
    method: str
    keep_alive: bool
    upgrade: str = ""  # an allowed Upgrade (``websocket``): after a 101 the connection is a tunnel

    def __init__(self, version: str, method: str, keep_alive: bool, upgrade: str = "") -> None:
        self.version = version
        self.method = method
        self.keep_alive = keep_alive
        self.upgrade = upgrade


_END = EndOfMessage()  # immutable by contract: one instance serves every message without trailers
_ANSWERED = Http1Meta("1.1", "GET", True)  # a response with no request pending
_REQUESTED = {m: Http1Meta("1.1", m, True) for m in _METHODS.values()}  # what a client codec remembers per request


class _StopParsing(Exception):
    """Raised inside a parser callback to stop at a message whose body must not be read (HEAD)."""


class Http1Codec(Codec):
    def __init__(self, role: Role, limits: CodecLimits) -> None:
        self.role = role
        self._server = role is Role.SERVER
        self.limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self.keep_alive = True
        self._events: deque[Event] = deque()
        self._out = bytearray()
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body_bytes = 0
        self._in_message = False
        self._head_open = False  # a message's head started and is not complete (``partial``)
        self._has_body = False
        self._until_eof = False
        self._closed = False
        self._error: RemoteProtocolError | None = None
        # server: requests parsed and not yet answered; client: requests sent, responses pending
        self._pending: deque[Http1Meta] = deque()
        self._out_chunked = False
        # Upgrade: ``_upgrading`` once an upgrade request was read (server) or sent (client); then
        # ``_tunnel`` once the parser stopped at its end (server) or at the 101 (client): every byte
        # after that is a ``BodyChunk`` of the open message, the peer's close its end
        self._upgrading = False
        self._tunnel = False
        self._h2c_restart = False  # an h2c upgrade request served as HTTP/1.1: the parser restarts after it
        # its body's framing, fed to the new parser as a head of its own that is not reported
        self._h2c_body = b""
        self._swallow_head = False
        self._parser = self._new_parser()

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        if self.role is Role.SERVER:
            return httptools.HttpRequestParser(self)
        return httptools.HttpResponseParser(self)

    # -- httptools callbacks -------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_message = True
        self._head_open = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        n = self._header_bytes = self._header_bytes + len(url)
        if n > self._max_header_bytes:
            raise RemoteProtocolError(f"request line over {self._max_header_bytes} bytes", 431)

    def on_header(self, name: bytes, value: bytes) -> None:
        n = self._header_bytes = self._header_bytes + len(name) + len(value) + 4
        if n > self._max_header_bytes:
            raise RemoteProtocolError(f"header block over {self._max_header_bytes} bytes", 431)
        headers = self._headers
        if len(headers) >= self._max_headers:
            raise RemoteProtocolError(f"more than {self._max_headers} headers", 431)
        k = FIELD_NAMES.get(name)
        headers.append((field_name(name) if k is None else k, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._swallow_head:  # the framing of an h2c request's body: the request was reported
            self._swallow_head = False
            return
        p = self._parser
        if isinstance(p, httptools.HttpRequestParser):
            self._request_head(p)
        else:
            self._response_head(p)

    def _request_head(self, p: httptools.HttpRequestParser) -> None:
        m = p.get_method()
        method = _METHODS.get(m) or m.decode("ascii")
        version = p.get_http_version()
        url = self._url
        headers, first_host, cl, te, expect, fix_host = split_fields(self._headers)
        host = first_host or ""
        if url[:1] != b"/" and url != b"*":
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise RemoteProtocolError(f"malformed request target {url[:100]!r}", 400) from None
            if parsed.host:
                host = parsed.host.decode("latin-1") + (f":{parsed.port}" if parsed.port else "")
                fix_host = True
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        if version == "1.1" and not host:
            raise RemoteProtocolError("HTTP/1.1 request without a Host header", 400)
        has_body = self._has_body = ("chunked" in te.lower() if te else False) or (
            cl is not None and cl.strip() not in ("", "0"))
        if fix_host and host and any(k.lower() == "host" and v != host for k, v in headers):
            headers = [(k, host) if k.lower() == "host" else (k, v) for k, v in headers]  # absolute-form wins
        if expect is not None and expect.lower() == "100-continue":
            headers = [(k, v) for k, v in headers if k.lower() != "expect"]
            if has_body:
                self._out += b"HTTP/1.1 100 Continue\r\n\r\n"
        if p.should_upgrade() and not self._h2c(method, has_body, cl, te):  # Upgrade, or CONNECT
            upgrade = self._allowed_upgrade(method)
            meta = Http1Meta(version, method, False, upgrade)
            self._upgrading = True
            self._pending.append(meta)
            extra = [("upgrade", upgrade)]
            if upgrade.lower() == "h2c":  # a Connection option, yet the upstream needs it for the upgrade
                extra += [(k, v) for k, v in self._headers if k.lower() == "http2-settings"][:1]
            self._events.append(RequestHead(
                protocol=PROTOCOL, service=host, method=method, path=url.decode("latin-1"),
                headers=Headers([*headers, *extra]), end_stream=False, meta=meta,
            ))
            return
        meta = Http1Meta(version, method, bool(p.should_keep_alive()))
        self._pending.append(meta)
        self._events.append(RequestHead(
            protocol=PROTOCOL, service=host, method=method, path=url.decode("latin-1"),
            headers=Headers(headers), end_stream=not has_body, meta=meta,
        ))

    def _h2c(self, method: str, has_body: bool, cl: str | None, te: str) -> bool:
        """An ``Upgrade: h2c`` request is served as the HTTP/1.1 request it also is (its upgrade
        headers dropped), as Envoy serves it; the parser starts anew after it. A listener whose
        ``upgrade_types`` hold ``h2c`` passes a body-less one through as any other upgrade (a
        request with a body stays HTTP/1.1, as servers answer it: the upgrade would follow the body)."""
        if method == "CONNECT":
            return False
        for k, v in self._headers:
            if k.lower() == "upgrade":
                if v.strip().lower() == "h2c":
                    if not has_body and "h2c" in self.limits.upgrades:
                        return False
                    self._h2c_restart = True
                    if has_body:  # the parser stops at the head, taking the upgrade as the body's start
                        framing = "transfer-encoding: chunked" if "chunked" in te.lower() else f"content-length: {cl}"
                        self._h2c_body = f"{method} / HTTP/1.1\r\n{framing}\r\n\r\n".encode("latin-1")
                        self._in_message = False  # not complete at the head: the framing head reopens it
                    return True
                return False
        return False

    def _allowed_upgrade(self, method: str) -> str:
        """The request's Upgrade when this listener passes it through; refused otherwise."""
        if method == "CONNECT":
            raise RemoteProtocolError("CONNECT is not supported on an http1 listener", 400)
        upgrade = ""
        for k, v in self._headers:
            if k.lower() == "upgrade":
                upgrade = v.strip()
                break
        if upgrade.lower() not in self.limits.upgrades:
            raise RemoteProtocolError(f"upgrade {upgrade!r} is not allowed on this listener "
                                      f"(upgrade_types: {', '.join(sorted(self.limits.upgrades)) or 'none'})", 403)
        return upgrade

    def _response_head(self, p: httptools.HttpResponseParser) -> None:
        status = p.get_status_code()
        if status == 101 and self._upgrading:  # the upgrade is accepted: a tunnel from the parser's stop
            fields, _, _, _, _, _ = split_fields(self._headers)
            upgrade = next((v for k, v in self._headers if k.lower() == "upgrade"), "")
            self.keep_alive = False
            self._events.append(ResponseHead(protocol=PROTOCOL, status=101, http_status=101,
                                             headers=Headers([*fields, ("upgrade", upgrade)]), end_stream=False))
            return
        if 100 <= status < 200:
            self._headers = []
            return  # interim responses are not forwarded (we strip Expect)
        req = self._pending[0] if self._pending else None
        no_body = status in (204, 304) or (req is not None and req.method == "HEAD")
        fields, _, cl, te, _, _ = split_fields(self._headers)
        chunked = "chunked" in te.lower()
        self._has_body = not no_body and (chunked or cl is None or cl.strip() != "0")
        self._until_eof = self._has_body and not chunked and cl is None
        if self._until_eof:
            self.keep_alive = False
        elif not p.should_keep_alive():
            self.keep_alive = False
        self._events.append(ResponseHead(
            protocol=PROTOCOL, status=status, http_status=status if 100 <= status <= 599 else 502,
            headers=Headers(fields), end_stream=not self._has_body,
        ))
        if no_body and req is not None and req.method == "HEAD":
            self._pending.popleft()
            self._in_message = False
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        if not self._has_body:
            return
        self._body_bytes += len(body)
        limit = self.limits.max_body_bytes
        if limit and self._body_bytes > limit:
            raise RemoteProtocolError(f"body over {limit} bytes", 413)
        self._events.append(BodyChunk(body))

    def on_message_complete(self) -> None:
        if not self._in_message:  # (also where an h2c request's body is still to come)
            return
        self._in_message = False
        if not self._server and self._pending:
            self._pending.popleft()
        if self._has_body:
            self._events.append(_END)
        self._has_body = False

    # -- Codec --------------------------------------------------------------------------------------
    def _tunnel_data(self, data: bytes) -> None:
        if data:
            self._events.append(BodyChunk(data))
            return
        self._closed = True
        self._tunnel = False
        self._pending.clear()
        self._events.append(_END)  # the open message (the request, or the 101 response) ends with the connection
        self._events.append(ConnectionClosed(clean=True))

    def _start_tunnel(self, data: bytes, offset: int) -> None:
        """The parser stopped at the end of an upgrade request (server) or at a 101 (client): the
        bytes from ``offset`` on are the tunnel's."""
        self._tunnel = True
        self._in_message = False
        self.keep_alive = False
        rest = data[offset:]
        if rest:
            self._events.append(BodyChunk(rest))

    def receive_data(self, data: bytes) -> None:
        if self._tunnel:
            self._tunnel_data(data)
            return
        if self._error is not None or self._closed:
            return
        if not data:
            self._closed = True
            if self._until_eof and self._in_message:
                self._in_message = False
                self._until_eof = False
                if self._pending:
                    self._pending.popleft()
                self._events.append(_END)
            self._events.append(ConnectionClosed(clean=not self._in_message))
            return
        try:
            self._parser.feed_data(data)
        except _StopParsing:
            self._parser = self._new_parser()
        except RemoteProtocolError as exc:
            self._fail(exc)
        except httptools.HttpParserCallbackError as wrapped:
            # httptools wraps what our callbacks raise; unwrap it.
            inner = wrapped.__cause__ or wrapped.__context__
            if isinstance(inner, _StopParsing):
                self._parser = self._new_parser()
            elif isinstance(inner, RemoteProtocolError):
                self._fail(inner)
            else:
                self._fail(RemoteProtocolError(f"malformed HTTP/1 message: {inner or wrapped}", 400))
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0]) if upgrade.args else len(data)
            if self._h2c_restart:
                self._h2c_restart = False
                self._parser = self._new_parser()
                if self._h2c_body:
                    head, self._h2c_body = self._h2c_body, b""
                    self._swallow_head = True
                    self._parser.feed_data(head)
                if offset < len(data):
                    self.receive_data(data[offset:])
                return
            if self._upgrading and (self._server or (self._events and isinstance(self._events[-1], ResponseHead)
                                                     and self._events[-1].status == 101)):
                self._start_tunnel(data, offset)
            else:
                self._fail(RemoteProtocolError("protocol upgrade / CONNECT is not supported on an http1 listener",
                                               400))
        except httptools.HttpParserError as malformed:
            self._fail(RemoteProtocolError(f"malformed HTTP/1 message: {malformed}", 400))

    def _fail(self, exc: RemoteProtocolError) -> None:
        self.keep_alive = False
        if self.role is Role.SERVER:
            exc.head = RequestHead(protocol=PROTOCOL, meta=Http1Meta("1.1", "GET", False))
        self._error = exc

    def next_event(self) -> Event | _NeedData:
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            err, self._error = self._error, None
            self._closed = True
            raise err
        return NEED_DATA

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def partial(self) -> bool:
        """A request line or header block started and not complete yet."""
        return self._head_open and self._error is None and not self._closed

    def export_state(self) -> CodecState | None:
        """A keep-alive connection between two exchanges has no state: the parser holds no byte
        (``on_message_begin`` fires on the first byte of the next request) and nothing is owed."""
        if (self._in_message or self._pending or self._events or self._out or self._closed
                or self._error is not None or not self.keep_alive):
            return None
        return CodecState()

    def send(self, event: Event) -> bytes:
        # Events are final classes: isinstance is an exact type test here.
        if isinstance(event, BodyChunk):
            return chunk(event.data) if self._out_chunked else event.data
        if isinstance(event, EndOfMessage):
            if self._server:
                self._response_done()
            if self._out_chunked:
                self._out_chunked = False
                return last_chunk(event.trailers)
            return b""
        if isinstance(event, ResponseHead) and self._server:
            return self._encode_response(event)
        if isinstance(event, RequestHead) and not self._server:
            return self._encode_request(event)
        raise LocalProtocolError(f"http1 {self.role.value} codec cannot send {type(event).__name__}")

    def _response_done(self) -> None:
        if self._pending:
            meta = self._pending.popleft()
            if not meta.keep_alive:
                self.keep_alive = False

    def _encode_response(self, head: ResponseHead) -> bytes:
        meta = self._pending[0] if self._pending else _ANSWERED
        if not meta.keep_alive:
            self.keep_alive = False
        status = head.status
        lines = [status_line(status, head.reason)]
        cl, _ = encode_fields(lines, head.headers)
        self._out_chunked = False
        if status == 101 and meta.upgrade:  # the upstream took the upgrade: raw bytes from here on
            self.keep_alive = False
            lines.append("connection: upgrade\r\n\r\n")
            return "".join(lines).encode("latin-1")
        if cl is not None:
            lines.append(f"content-length: {cl}\r\n")
        elif head.end_stream:
            if not (status in (204, 304) or status < 200):
                lines.append("content-length: 0\r\n")
        elif meta.version == "1.1" and meta.method != "HEAD":
            lines.append("transfer-encoding: chunked\r\n")
            self._out_chunked = True
        else:
            self.keep_alive = False  # close-delimited body for an HTTP/1.0 client
        if not self.keep_alive:
            lines.append("connection: close\r\n")
        elif meta.version == "1.0":
            lines.append("connection: keep-alive\r\n")
        lines.append("\r\n")
        if head.end_stream:
            self._response_done()
        return "".join(lines).encode("latin-1")

    def _encode_request(self, head: RequestHead) -> bytes:
        method = head.method or "GET"
        lines = [f"{method} {head.path or '/'} HTTP/1.1\r\n"]
        cl, has_host = encode_fields(lines, head.headers)
        if not has_host and head.service:
            lines.insert(1, f"host: {head.service}\r\n")
        self._out_chunked = False
        if cl is not None:
            lines.append(f"content-length: {cl}\r\n")
        elif not head.end_stream and isinstance(head.meta, Http1Meta) and head.meta.upgrade:
            # the Upgrade header is end to end here; h2c's settings are a Connection option (RFC 9113 3.2)
            h2c = head.meta.upgrade.lower() == "h2c"
            lines.append("connection: upgrade, http2-settings\r\n" if h2c else "connection: upgrade\r\n")
            self._upgrading = True  # a 101 turns this connection into a tunnel
            self.keep_alive = False
        elif not head.end_stream:
            lines.append("transfer-encoding: chunked\r\n")
            self._out_chunked = True
        elif method in METHODS_WITH_BODY:
            lines.append("content-length: 0\r\n")
        lines.append("\r\n")
        meta = _REQUESTED.get(method)
        if meta is None:
            meta = Http1Meta("1.1", method, True)
        self._pending.append(meta)  # only read (HEAD or not), never compared by identity
        return "".join(lines).encode("latin-1")

    def classify(self, head: ResponseHead) -> Failure:
        f = super().classify(head)
        if head.headers.get("x-envoy-overloaded") is not None:
            f |= Failure.OVERLOADED  # an upstream proxy shed it: Envoy never retries these
        return f

    def local_reply(self, head: RequestHead, status: ReplyStatus, message: str) -> bytes:
        code = status.http_status
        meta = head.meta if isinstance(head.meta, Http1Meta) else Http1Meta("1.1", head.method, True)
        if self._in_message or self._error is not None or not meta.keep_alive:
            self.keep_alive = False  # the request body is unread or the stream is broken: close after this
        if self._pending and self._pending[0] is meta:
            self._pending.popleft()
        body = (message + "\n").encode("utf-8", "replace")
        lines = [f"HTTP/1.1 {code} {reason(code)}\r\n", "content-type: text/plain; charset=utf-8\r\n",
                 f"content-length: {len(body)}\r\n", f"x-sofamesh-local-reply: {status.name.lower()}\r\n"]
        if status is ReplyStatus.UPSTREAM_OVERFLOW or status is ReplyStatus.OVERLOAD:
            lines.append("x-envoy-overloaded: true\r\n")  # as Envoy marks overflow and shed load
        if not self.keep_alive:
            lines.append("connection: close\r\n")
        lines.append("\r\n")
        out = "".join(lines).encode("latin-1")
        return out if meta.method == "HEAD" else out + body


class Http1CodecFactory(CodecFactory):
    name: ClassVar[str] = PROTOCOL
    multiplexed: ClassVar[bool] = False
    sniff_bytes: ClassVar[int] = 8
    header_mutation: ClassVar[bool] = True  # heads are re-encoded

    def sniff(self, prefix: bytes) -> Sniff:
        for m in _METHOD_PREFIXES:
            n = min(len(prefix), len(m))
            if prefix[:n] == m[:n]:
                return Sniff.MATCH if n == len(m) else Sniff.NEED_MORE
        return Sniff.NO

    def new_codec(self, role: Role, limits: CodecLimits) -> Codec:
        return Http1Codec(role, limits)


__all__ = ["Http1Codec", "Http1CodecFactory", "Http1Meta"]
