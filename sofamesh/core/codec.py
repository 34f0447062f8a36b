"""The Codec contract every protocol plugin implements. Pure: no sockets, no event loop, no logging.

A codec is driven like an iterator::

    codec.receive_data(chunk)          # b"" means the peer closed
    while (event := codec.next_event()) is not NEED_DATA:
        handle(event)
    transport.write(codec.send(event))

One codec instance serves one connection in one role: ``Role.SERVER`` parses requests from a
downstream client and encodes responses to it; ``Role.CLIENT`` encodes requests to an upstream and
parses its responses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntFlag, unique
from typing import TYPE_CHECKING, ClassVar, TypeVar

from mypy_extensions import mypyc_attr

from sofamesh.core.events import BodyChunk, EndOfMessage, Heartbeat, ResponseHead

if TYPE_CHECKING:
    from sofamesh.core.events import Event, RequestHead, _NeedData


class Role(Enum):
    SERVER = "server"  # faces a downstream client
    CLIENT = "client"  # faces an upstream server


class Sniff(Enum):
    """What a factory says about the first bytes of a connection."""

    MATCH = "match"
    NO = "no"
    NEED_MORE = "need_more"


@unique
class ReplyStatus(Enum):
    """Why the proxy answers a request itself. Each codec maps these to its own status codes.

    ``value`` is (HTTP status, gRPC status code), with a third element only where two replies share
    both codes. Values must stay distinct: two equal values make one name an alias of the other, and
    a codec could no longer tell them apart.
    """

    NO_ROUTE = (404, 12)
    NO_HEALTHY_UPSTREAM = (503, 14)
    # the upstream's connection or stream ended before its response head: Envoy's 503 "upstream
    # connect error or disconnect/reset before headers" (flag UC)
    UPSTREAM_RESET = (503, 14, "reset")
    TIMEOUT = (504, 4)
    REQUEST_TIMEOUT = (408, 4)  # the downstream was too slow sending its request (Envoy's 408)
    OVERLOAD = (503, 8)  # gRPC RESOURCE_EXHAUSTED
    RATE_LIMITED = (429, 8)
    DENIED = (403, 7)
    UNAUTHENTICATED = (401, 16)
    CODEC_ERROR = (400, 13)
    PAYLOAD_TOO_LARGE = (413, 8)
    HEADERS_TOO_LARGE = (431, 8)
    INTERNAL = (500, 13)
    UPSTREAM_OVERFLOW = (503, 14, "overflow")  # a circuit breaker or pool limit: Envoy's 503 + x-envoy-overloaded

    @property
    def http_status(self) -> int:
        return int(self.value[0])

    @property
    def grpc_status(self) -> int:
        return int(self.value[1])


class Failure(IntFlag):
    """What an upstream's response means for retries and outlier detection (``Codec.classify``).

    A codec maps its own statuses onto these, so a retry policy or an outlier detector written in
    Envoy's HTTP terms applies to every protocol. Zero means the upstream served the request."""

    SERVER_ERROR = 1  # Envoy's "5xx": the upstream failed the request
    GATEWAY_ERROR = 2  # 502 / 503 / 504 and their equivalents: unreachable, unavailable, timed out
    RETRIABLE = 4  # the protocol says sending it again (elsewhere) is safe: busy, not found, closed
    OVERLOADED = 8  # the upstream shed the request (``x-envoy-overloaded``): never retried, as Envoy


GATEWAY_STATUSES: frozenset[int] = frozenset((502, 503, 504))


@dataclass(frozen=True, slots=True)
class Http2Options:
    """A connection's HTTP/2 settings and flood limits, Envoy's ``http2_protocol_options`` fields
    (config ``listeners[].http2_protocol_options``, ``clusters[].http2_protocol_options``). The
    defaults are the codec's own (docs/protocols.md); a protocol other than HTTP/2 ignores them.

    .. versionadded:: 0.6
    """

    max_concurrent_streams: int = 1024  # our SETTINGS_MAX_CONCURRENT_STREAMS
    initial_stream_window_size: int = 256 * 1024  # our SETTINGS_INITIAL_WINDOW_SIZE
    initial_connection_window_size: int = 16 * 1024 * 1024  # opened by a WINDOW_UPDATE after the preface
    max_outbound_frames: int = 10_000  # queued and not taken by the socket
    max_outbound_control_frames: int = 1000  # of which SETTINGS and PING ACKs, RST_STREAM
    max_consecutive_inbound_frames_with_empty_payload: int = 1
    max_inbound_priority_frames_per_stream: int = 100
    max_inbound_window_update_frames_per_data_frame_sent: int = 10
    # our SETTINGS_HEADER_TABLE_SIZE: the most the peer's HPACK encoder may keep for this connection (0.7)
    hpack_table_size: int = 4096
    # more (identifier, value) entries of our SETTINGS frame, Envoy's custom_settings_parameters (0.7)
    custom_settings: tuple[tuple[int, int], ...] = ()
    # an invalid HTTP message resets its stream alone (True) or ends the connection (False, Envoy's
    # default); Envoy's override_stream_error_on_invalid_http_message (0.7)
    stream_error_on_invalid_http_message: bool = False


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Size limits a codec enforces; exceeding one is a ``RemoteProtocolError`` with a status hint."""

    max_frame_bytes: int = 16 * 1024 * 1024  # whole RPC frame (Bolt, Dubbo, Thrift); MOSN's default too
    max_header_bytes: int = 64 * 1024  # HTTP header block, Bolt header map, Dubbo attachments
    max_headers: int = 200  # header count (HTTP)
    max_body_bytes: int = 0  # 0 = unlimited; HTTP bodies are streamed, never held whole
    # HTTP/1.1 ``Upgrade`` types a server codec passes through (lowercase, ``websocket``; Envoy's
    # ``upgrade_configs``): the request goes upstream with its Upgrade header, and after a 101 both
    # connections carry raw bytes. Any other Upgrade is refused with 403, as Envoy's ``upgrade_failed``
    upgrades: frozenset[str] = frozenset()
    http2: Http2Options = Http2Options()  # HTTP/2 settings and flood limits (0.6)

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_header_bytes", "max_headers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CodecLimits.{name} must be > 0, got {getattr(self, name)}")
        if self.max_body_bytes < 0:
            raise ValueError(f"CodecLimits.max_body_bytes must be >= 0, got {self.max_body_bytes}")


_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """A route's header mutation as a codec applies it to the header map (Bolt) or attachments (Dubbo)
    of an encoded frame (``Codec.edit_headers``): ``remove`` first, then ``set`` (replace the value,
    or add the key), then ``add`` (only a key that is absent: a map holds one value per key, Envoy's
    ``ADD_IF_ABSENT``). Keys are compared exactly: RPC header-map keys and attachments are
    case-sensitive.

    .. versionadded:: 0.3
    """

    remove: frozenset[str] = frozenset()
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()

    def edited(self, entries: Sequence[tuple[str | None, _V]]) -> list[tuple[str | None, _V | str]] | None:
        """``entries`` (key, value in the codec's own form; key None when it is not a string) after the
        edit, values put by the edit as ``str``; None when the edit changes nothing, so the frame goes
        on as it is."""
        out: list[tuple[str | None, _V | str]] = []
        seen: set[str] = set()
        changed = False
        sets = dict(self.set)
        drop = self.remove
        for entry in entries:
            key: str | None = entry[0]
            value = entry[1]
            if key is None:
                out.append((None, value))
                continue
            if key in drop:
                changed = True
                continue
            new = sets.get(key)
            if key in seen:  # a second entry for one key: a map reader keeps the last; keep the edit's
                if new is not None:
                    changed = True
                    continue
            if new is not None:
                changed = changed or new != value
                out.append((key, new))
            else:
                out.append((key, value))
            seen.add(key)
        for name, put in (*self.set, *self.add):
            if name not in seen:
                out.append((name, put))
                seen.add(name)
                changed = True
        return out if changed else None


# The compiled build (setup.py, SOFAMESH_MYPYC=1) compiles this module; plugins' codecs stay
# interpreted classes, which mypyc allows only for bases marked so.
@dataclass(frozen=True, slots=True)
class CodecState:
    """A server codec's connection at a message boundary, as a hot upgrade carries it to another
    process (``Codec.export_state``): ``state`` is what ``import_state`` takes back, ``unread`` the
    bytes received and not decoded yet (the start of the next message), fed to the new codec first."""

    state: bytes = b""
    unread: bytes = b""


@mypyc_attr(allow_interpreted_subclasses=True)
class Codec(ABC):
    """One connection's protocol engine."""

    role: Role
    keep_alive: bool = True
    """False once the protocol requires closing the connection after the current exchange
    (HTTP/1.0 without keep-alive, ``Connection: close``, a GOAWAY sent or received)."""
    graceful_goaway: ClassVar[bool] = False
    """True when ``send(GoAway(last_request_id=2**31 - 1))`` announces a shutdown while streams the
    peer opens meanwhile are still served, and a later ``send(GoAway())`` (the last stream the peer
    opened) ends it: RFC 9113 6.8's graceful shutdown. A draining connection then sends both.

    .. versionadded:: 0.3
    """
    retriable_success: ClassVar[bool] = False
    """True when ``classify`` may mark a response under HTTP 400 ``RETRIABLE`` (HTTP/2: a
    trailers-only gRPC UNAVAILABLE answers 200). Otherwise a route's retry policy looks at a
    response under 400 no further than its ``http_status``.

    .. versionadded:: 0.2
    """

    @abstractmethod
    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed its side."""

    @abstractmethod
    def next_event(self) -> Event | _NeedData:
        """The next decoded event, or ``NEED_DATA``. Raises ``RemoteProtocolError`` on bad bytes;
        after that the codec is unusable and the connection must close (after any local reply)."""

    @abstractmethod
    def send(self, event: Event) -> bytes:
        """Encode an event for the wire. For framed RPC heads with ``raw`` set, returns ``raw``."""

    def send_last(self, chunk: BodyChunk) -> bytes:
        """Encode a body's last chunk and its end (an ``EndOfMessage`` without trailers) together:
        what ``send(chunk)`` then ``send(EndOfMessage(None, chunk.stream_id))`` would send, which is
        the default. HTTP/2 sends one DATA frame with END_STREAM instead of an empty one after it.

        .. versionadded:: 0.6
        """
        return self.send(chunk) + self.send(EndOfMessage(None, chunk.stream_id))

    def end_follows(self, stream_id: int) -> bool:
        """Whether the event ``next_event()`` returns next is ``stream_id``'s ``EndOfMessage``
        without trailers, already decoded (HTTP/2: the DATA frame just read carried END_STREAM).
        The kernel then holds the chunk it was given until that end and sends both with
        ``send_last``. The default (False) sends every chunk as it comes.

        .. versionadded:: 0.6
        """
        return False

    def data_to_send(self) -> bytes:
        """Bytes the codec itself must write (HTTP/1 ``100 Continue``, HTTP/2 SETTINGS/PING acks and
        WINDOW_UPDATEs). The connection calls it after each batch of events; ``b""`` if none."""
        return b""

    def partial(self) -> bool:
        """Server role: whether bytes of a message head (HTTP) or of a frame (RPC) were received and
        not decoded into an event yet. The listener's ``request_headers_timeout_ms`` closes a
        connection that keeps one open too long (slowloris). Asked at most once a second per
        connection, never per read. The default (False) exempts a codec from that timeout.

        .. versionadded:: 0.4
        """
        return False

    def buffered(self) -> int:
        """Bytes received and held undecoded (a frame being accumulated). The overload manager's
        ``reset_high_memory_stream`` resets the connections holding the most. Asked only under
        memory pressure.

        .. versionadded:: 0.4
        """
        return 0

    handshake_timeout: ClassVar[float] = 0.0
    """Seconds the peer has to answer the protocol's opening handshake (HTTP/2: acknowledge our
    SETTINGS, RFC 9113 6.5.3); 0 for none. Once a connection is that old, the once-a-second sweep
    asks ``handshake_overdue()``.

    .. versionadded:: 0.5
    """

    def handshake_overdue(self) -> bytes | None:
        """The connection is older than ``handshake_timeout``: if the peer still owes its answer, the
        bytes to write before closing (HTTP/2: GOAWAY(SETTINGS_TIMEOUT)); else None.

        .. versionadded:: 0.5
        """
        return None

    def write_blocked(self, blocked: bool) -> None:
        """The socket stopped taking bytes (True: asyncio's ``pause_writing``) or drains again
        (False). A codec with outbound flood limits (HTTP/2's ``max_outbound_frames``) counts what it
        queues while blocked. Called only on those transitions.

        .. versionadded:: 0.5
        """
        return

    # -- hot upgrade (``core/upgrade.py``) ---------------------------------------------------------
    def export_state(self) -> CodecState | None:
        """This connection's state between two messages, for another process to carry on with a fresh
        codec of the same factory (the socket moves, the codec does not). ``None`` while a message
        is half decoded or half answered: the connection asks again after the next one.

        A codec that keeps this default cannot move: its connections drain in the old process.

        .. versionadded:: 0.3
        """
        return None

    def import_state(self, state: bytes) -> None:
        """Take back ``CodecState.state`` exported by a codec of the same protocol and role, before
        any byte is received.

        .. versionadded:: 0.3
        """
        if state:
            raise ValueError(f"{type(self).__name__} cannot import connection state")

    # -- streaming multiplexed protocols (``CodecFactory.streaming``: HTTP/2) ----------------------
    def new_stream_id(self) -> int:
        """Client role: the id of the next stream ``send(RequestHead)`` may open."""
        raise NotImplementedError(f"{type(self).__name__} has no streams")

    def sendable(self, stream_id: int) -> int:
        """How many body bytes ``send(BodyChunk)`` accepts on ``stream_id`` now (flow control).
        Protocols without flow control accept anything."""
        return 1 << 62

    def acknowledge(self, stream_id: int, nbytes: int) -> bytes:
        """``nbytes`` of ``stream_id``'s received body were passed on: give them back to the peer's
        window. Returns bytes to write (WINDOW_UPDATE frames), ``b""`` without flow control."""
        return b""

    def reset(self, stream_id: int, error_code: int = 8) -> bytes:
        """Abandon one stream (HTTP/2 RST_STREAM, default CANCEL). Returns the bytes to write."""
        return b""

    # -- multiplexed protocols (``CodecFactory.multiplexed``) -------------------------------------
    def rewrite_request_id(self, frame: bytes, new_id: int) -> bytes:
        """Return ``frame`` (a complete encoded request or response) with its request id replaced,
        fixing anything that covers the id (Bolt v2 CRC32). Only for multiplexed protocols."""
        raise NotImplementedError(f"{type(self).__name__} is not multiplexed")

    def heartbeat(self, request_id: int) -> bytes:
        """An encoded heartbeat request (used to keep idle upstream connections alive)."""
        raise NotImplementedError(f"{type(self).__name__} has no heartbeat")

    def heartbeat_reply(self, beat: Heartbeat) -> bytes:
        """The encoded answer to a heartbeat the peer sent."""
        raise NotImplementedError(f"{type(self).__name__} has no heartbeat")

    # -- active health checks and hash balancing --------------------------------------------------
    def health_probe(self, request_id: int) -> bytes:
        """Client role: an encoded probe for an active health check (``protocol_health_check``).
        The default is the protocol's heartbeat; a codec plugin may send anything of its own and
        judge the answer in ``probe_result``.

        .. versionadded:: 0.2
        """
        return self.heartbeat(request_id)

    def probe_result(self, event: Event) -> bool | None:
        """Client role: what ``event`` (decoded after ``health_probe`` was sent) says of the
        endpoint: True healthy, False unhealthy, None not the answer yet (keep reading). The default
        takes a heartbeat as healthy -- a reply, or a probe of the peer's own, which is how some
        peers (@dubbo.ts) answer one -- and a response as healthy below HTTP 500.

        .. versionadded:: 0.2
        """
        if type(event) is Heartbeat:
            return True
        if type(event) is ResponseHead:
            return event.http_status < 500
        return None

    def request_argument(self, head: RequestHead, index: int) -> bytes | None:
        """Server role: the encoded bytes of argument ``index`` of the request ``head`` (one this
        codec decoded), found without deserializing the body; None when the protocol has no
        arguments or the request has fewer. Only a route whose ``hash_policy`` hashes an argument
        asks (Dubbo's ConsistentHashLoadBalance hashes the first).

        .. versionadded:: 0.2
        """
        return None

    # -- header mutation on framed RPC (``CodecFactory.header_mutation``) --------------------------
    def edit_headers(self, frame: bytes, edit: HeaderEdit, request: RequestHead | None = None) -> bytes:
        """``frame`` (a complete request or response of this protocol) with ``edit`` applied to its
        header map or attachments, every length (and checksum) that covers them fixed; ``frame``
        itself when nothing changes. ``request`` is the head this codec decoded from ``frame`` when
        ``frame`` is a request (what it already read of the frame), or the request a response answers
        (a protocol may carry response headers only for some clients). Only the header section is re-encoded.
        Raises ``ValueError`` for a frame it cannot edit (a body it cannot find its way through).

        Only a route with a header mutation calls it. A codec that keeps this default leaves
        ``CodecFactory.header_mutation`` False, and a route that would need it is refused when
        the config loads.

        .. versionadded:: 0.3
        """
        raise NotImplementedError(f"{type(self).__name__} cannot edit the headers of its frames")

    # -- replies the proxy makes itself -----------------------------------------------------------
    @abstractmethod
    def local_reply(self, head: RequestHead, status: ReplyStatus, message: str) -> bytes:
        """An encoded error response to ``head`` in this protocol (same request id and framing)."""

    def map_status(self, status: int) -> int:
        """Map a protocol-native response status to an HTTP status, for stats and bridging."""
        return status

    def classify(self, head: ResponseHead) -> Failure:
        """What ``head`` (a response this codec decoded) means for retries and outlier detection.

        Called only on a request whose route retries or after a 5xx, never per request otherwise.
        The default reads ``head.http_status``: 5xx is ``SERVER_ERROR``, 502 / 503 / 504 are also
        ``GATEWAY_ERROR``. RPC codecs add ``RETRIABLE`` for statuses that mean the request was not
        processed (Bolt server busy, Dubbo thread pool exhausted) and HTTP codecs ``OVERLOADED`` for
        ``x-envoy-overloaded``.

        .. versionadded:: 0.2
        """
        s = head.http_status
        if s < 500:
            return Failure(0)
        if s in GATEWAY_STATUSES:
            return Failure.SERVER_ERROR | Failure.GATEWAY_ERROR
        return Failure.SERVER_ERROR


@mypyc_attr(allow_interpreted_subclasses=True)
class CodecFactory(ABC):
    """Registered under ``name`` in the protocol catalog; creates one codec per connection."""

    name: ClassVar[str]
    multiplexed: ClassVar[bool] = False  # many requests in flight per connection, matched by id or stream
    passthrough: ClassVar[bool] = False  # bytes are proxied undecoded (``tcp``)
    sniff_bytes: ClassVar[int] = 1  # how many leading bytes ``sniff`` may need at most
    request_id_bits: ClassVar[int] = 32  # width of the request id a multiplexed pool allocates
    streaming: ClassVar[bool] = False  # multiplexed streams with bodies and flow control (HTTP/2), not frames
    alpn_protocols: ClassVar[tuple[str, ...]] = ()  # what a TLS listener offers in ALPN for this protocol
    # a route may add / set / remove its messages' headers: HTTP heads are re-encoded, framed RPC
    # goes through ``Codec.edit_headers``; False refuses such a route at config load
    header_mutation: ClassVar[bool] = False

    @abstractmethod
    def sniff(self, prefix: bytes) -> Sniff:
        """Whether a connection starting with ``prefix`` speaks this protocol."""

    @abstractmethod
    def new_codec(self, role: Role, limits: CodecLimits) -> Codec:
        """A fresh codec for one connection."""


__all__ = ["GATEWAY_STATUSES", "Codec", "CodecFactory", "CodecLimits", "CodecState", "Failure", "HeaderEdit",
           "Http2Options", "ReplyStatus", "Role", "Sniff"]
