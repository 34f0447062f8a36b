"""Real HTTP/2 peers (grpcio, apache-dubbo Triple, nghttp, curl) and the http2 codec.

Each pair is proved to work directly, then its real bytes are relayed through a test-local asyncio
byte relay that decodes both directions with the http2 codec (server role for what the client
sends, client role for what the server sends), records the events and forwards the original bytes
untouched. Local replies made by the codec are checked by real clients.

Peers are installed by ``scripts/setup.d/22-http2-peers.sh``; grpcio comes with the dev extras.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import selectors
import shutil
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import h2.config
import h2.connection
import h2.events
import pytest

from sofamesh.core.codec import CodecLimits, ReplyStatus, Role
from sofamesh.core.events import NEED_DATA, BodyChunk, EndOfMessage, RequestHead, ResponseHead
from sofamesh.plugins.protocols.http2 import Http2Codec, StreamReset, WindowOpened
from sofamesh.plugins.protocols.http2.grpc import decode_message
from sofamesh.testing import free_port

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
PEERS = Path(__file__).resolve().parent / "peers"
GRPC_SERVER = PEERS / "grpc" / "echo_server.py"
GRPC_CLIENT = PEERS / "grpc" / "echo_client.py"
TRIPLE_PROVIDER = PEERS / "triple" / "provider.py"
TRIPLE_CONSUMER = PEERS / "triple" / "consumer.py"
DUBBO_PYTHON = CACHE / "venv-dubbo3" / "bin" / "python"
ECHO = "sofamesh.test.Echo"
GREETER = "com.example.triple.Greeter"


def need(ok: bool, what: str) -> None:
    """Skip locally when a peer is not installed; under CI a missing peer is a failure."""
    if ok:
        return
    message = f"{what} is not installed: run scripts/setup.d/22-http2-peers.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    port: int


def start_peer(argv: list[str], timeout: float = 20.0) -> Peer:
    """Start a peer program that prints ``READY <port>`` once it serves; fail if it does not."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = b""
    fd = proc.stdout.fileno()
    try:
        # os.read, not readline: a buffered reader may hold the READY line while select() waits.
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            for line in seen.splitlines():
                if line.startswith(b"READY "):
                    return Peer(proc, int(line.split()[1]))
    finally:
        sel.close()
    stop_peer(Peer(proc, 0))
    raise AssertionError(f"{argv[1]} did not get ready in {timeout}s: {seen[-2000:]!r}")


def stop_peer(peer: Peer) -> None:
    peer.proc.terminate()
    try:
        peer.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        peer.proc.kill()
        peer.proc.wait(timeout=5)
    if peer.proc.stdout is not None:
        peer.proc.stdout.close()


@pytest.fixture
def grpc_server() -> Iterator[Peer]:
    peer = start_peer([sys.executable, str(GRPC_SERVER)])
    yield peer
    stop_peer(peer)


@pytest.fixture
def triple_provider() -> Iterator[Peer]:
    need(DUBBO_PYTHON.exists(), "apache-dubbo 3.0.0b1 (.cache/venv-dubbo3)")
    port = free_port()
    peer = start_peer([str(DUBBO_PYTHON), str(TRIPLE_PROVIDER), "--port", str(port)])
    yield peer
    stop_peer(peer)


async def within(aw: Awaitable[T], seconds: float = 60.0) -> T:
    return await asyncio.wait_for(aw, seconds)


async def run_program(argv: list[str], timeout: float = 60.0) -> Any:
    """Run a peer client program and parse the JSON object it prints last."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await within(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await within(proc.wait(), 5)
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def grpc_message_of(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_messages(body: bytes) -> list[bytes]:
    """Split a gRPC body into its length-prefixed messages."""
    out: list[bytes] = []
    pos = 0
    while pos < len(body):
        _flag, size = struct.unpack_from(">BI", body, pos)
        out.append(body[pos + 5 : pos + 5 + size])
        pos += 5 + size
    assert pos == len(body)
    return out


# -- the observing relay ------------------------------------------------------------------------------
@dataclass
class Exchange:
    """What the codecs saw of one stream."""

    request: RequestHead | None = None
    request_body: bytearray = field(default_factory=bytearray)
    request_ended: bool = False
    response: ResponseHead | None = None
    response_body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] | None = None
    reset_by_client: int | None = None


class Observer:
    """Decodes one relayed connection: client bytes with a server-role codec, server bytes with a
    client-role codec kept in step by replaying each observed request into it (its output is
    discarded; only the original bytes travel)."""

    def __init__(self) -> None:
        # Windows and frames as large as HTTP/2 allows: the real peers negotiated their own settings
        # with each other, and the observer must accept whatever they agreed on. It never sends the
        # DATA the peers answer with WINDOW_UPDATEs, so that flood limit cannot apply to it.
        limits = {
            "initial_window_size": 2**31 - 1,
            "connection_window_size": 2**31 - 1,
            "max_frame_size": 2**24 - 1,
            "max_inbound_window_update_frames_per_data_frame_sent": 0,
        }
        self.down = Http2Codec(Role.SERVER, CodecLimits(), **limits)
        self.up = Http2Codec(Role.CLIENT, CodecLimits(), **limits)
        self.up.data_to_send()
        self.streams: dict[int, Exchange] = {}
        self.other: list[object] = []
        self.errors: list[str] = []
        self.client_bytes = bytearray()

    def _stream(self, sid: int) -> Exchange:
        return self.streams.setdefault(sid, Exchange())

    def from_client(self, data: bytes) -> None:
        self.client_bytes += data
        self.down.receive_data(data)
        for _ in range(100_000):
            ev = self.down.next_event()
            if ev is NEED_DATA:
                break
            if isinstance(ev, RequestHead):
                ex = self._stream(ev.request_id)
                ex.request = ev
                ex.request_ended = ev.end_stream
                self.up.send(ev)
            elif isinstance(ev, BodyChunk):
                self._stream(ev.stream_id).request_body += ev.data
                self.down.acknowledge(ev.stream_id, len(ev.data))
                self.up.send(ev)
            elif isinstance(ev, EndOfMessage):
                self._stream(ev.stream_id).request_ended = True
                self.up.send(ev)
            elif isinstance(ev, StreamReset):
                self._stream(ev.stream_id).reset_by_client = ev.error_code
                self.up.reset(ev.stream_id, ev.error_code)
            else:
                self.other.append(ev)
        self.down.data_to_send()
        self.up.data_to_send()

    def from_server(self, data: bytes) -> None:
        self.up.receive_data(data)
        for _ in range(100_000):
            ev = self.up.next_event()
            if ev is NEED_DATA:
                break
            if isinstance(ev, ResponseHead):
                self._stream(ev.request_id).response = ev
            elif isinstance(ev, BodyChunk):
                self._stream(ev.stream_id).response_body += ev.data
                self.up.acknowledge(ev.stream_id, len(ev.data))
            elif isinstance(ev, EndOfMessage):
                self._stream(ev.stream_id).trailers = dict(ev.trailers or ())
            else:
                self.other.append(ev)
        self.up.data_to_send()

    def by_method(self) -> dict[str, Exchange]:
        return {ex.request.method: ex for ex in self.streams.values() if ex.request is not None}


class LoopbackServer:
    """A 127.0.0.1 asyncio server whose connection handlers are cancelled when the test leaves it."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        self._server = await within(asyncio.start_server(self._handle, "127.0.0.1", 0), 5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await within(asyncio.gather(*self._tasks, return_exceptions=True), 5)
        await within(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except OSError:
            pass  # the other side went away first: the test asserts on what it saw before
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Relay(LoopbackServer):
    """127.0.0.1 byte relay to ``upstream_port`` that shows every connection to an Observer."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.observers: list[Observer] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        observer = Observer()
        self.observers.append(observer)
        up_reader, up_writer = await within(asyncio.open_connection("127.0.0.1", self.upstream_port), 5)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, observer.from_client, observer),
                self._pump(up_reader, writer, observer.from_server, observer),
            )
        finally:
            up_writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, feed: Any, observer: Observer) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            try:
                feed(data)
            except Exception as exc:  # recorded and asserted on by the test, never hidden
                observer.errors.append(f"{type(exc).__name__}: {exc}")
            writer.write(data)
            await writer.drain()


# -- gRPC -------------------------------------------------------------------------------------------
def check_grpc_results(results: dict[str, Any]) -> None:
    assert results["unary"] == {"code": "OK", "replies": ["echo:hello"], "trailers": {"x-echo-len": "5"}}
    assert results["server_stream"]["replies"] == ["tick-0", "tick-1", "tick-2"]
    assert results["client_stream"]["replies"] == ["a|b|c"]
    assert results["bidi"]["replies"] == ["bidi:x", "bidi:y"]
    assert results["big"]["replies"] == [f"{10 * 1024 * 1024 + 5} match"]
    assert results["slow"]["code"] == "DEADLINE_EXCEEDED"
    assert results["fail"] == {"code": "INVALID_ARGUMENT", "details": "bad argument: 100% ✓", "replies": []}


def test_grpcio_client_and_server_work_directly(grpc_server: Peer) -> None:
    results = asyncio.run(run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{grpc_server.port}"]))
    check_grpc_results(results)


def test_every_kind_of_grpcio_call_decodes_through_both_codec_roles(grpc_server: Peer) -> None:
    async def scenario() -> tuple[dict[str, Any], list[Observer]]:
        async with Relay(grpc_server.port) as relay:
            results = await run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{relay.port}"])
            return results, relay.observers

    results, observers = asyncio.run(scenario())
    check_grpc_results(results)  # the relayed bytes still work for the real peers
    assert len(observers) == 1
    obs = observers[0]
    assert obs.errors == []
    calls = obs.by_method()
    assert set(calls) == {"Unary", "ServerStream", "ClientStream", "Bidi", "Slow", "Fail"}
    for method, ex in calls.items():
        assert ex.request is not None
        assert (ex.request.protocol, ex.request.service, ex.request.path) == (
            "http2",
            ECHO,
            f"/{ECHO}/{method}",
        )
        assert ex.request.headers.get("content-type") == "application/grpc"
        assert ex.request.headers.get("te") == "trailers"
        assert ex.request.request_id % 2 == 1
    unary = [ex for ex in obs.streams.values() if ex.request is not None and ex.request.method == "Unary"]
    assert sorted(len(ex.request_body) for ex in unary) == [10, 10 * 1024 * 1024 + 5]
    for ex in unary:
        assert ex.request_ended
        assert ex.response is not None and ex.response.status == 200 and not ex.response.end_stream
        assert ex.trailers is not None and ex.trailers["grpc-status"] == "0"
        [message] = grpc_messages(bytes(ex.request_body))
        assert grpc_messages(bytes(ex.response_body)) == [b"echo:" + message]
    assert grpc_messages(bytes(calls["ClientStream"].request_body)) == [b"a", b"b", b"c"]
    assert grpc_messages(bytes(calls["ServerStream"].response_body)) == [b"tick-0", b"tick-1", b"tick-2"]
    assert grpc_messages(bytes(calls["Bidi"].response_body)) == [b"bidi:x", b"bidi:y"]
    slow = calls["Slow"]
    assert slow.request is not None and slow.request.timeout_ms is not None
    assert 200 < slow.request.timeout_ms <= 301  # 300 ms as grpc-c writes it, rounded up
    # At the deadline the client cancels the stream (RST_STREAM CANCEL), unless grpcio's server, which
    # also enforces the deadline it was sent, ended the call first with DEADLINE_EXCEEDED (a loaded
    # machine decides which): both are the deadline reaching the peers through both codec roles.
    if slow.reset_by_client is None:
        assert slow.response is not None and slow.response.end_stream, slow
        assert slow.response.headers.get("grpc-status") == "4", slow
    else:
        assert slow.reset_by_client == 8, slow
    fail = calls["Fail"]
    assert fail.response is not None and fail.response.end_stream  # trailers-only
    assert fail.response.headers.get("grpc-status") == "3"
    assert fail.response.http_status == 400
    assert decode_message(fail.response.headers.get("grpc-message") or "") == "bad argument: 100% ✓"


def decode_requests(wire: bytes, cuts: list[int]) -> list[object]:
    """Server-role events for ``wire`` fed in pieces ending at ``cuts`` (acknowledging bodies)."""
    # A replay: the WINDOW_UPDATEs in ``wire`` answered DATA this codec never sent.
    codec = Http2Codec(Role.SERVER, CodecLimits(), max_frame_size=2**24 - 1,
                       max_inbound_window_update_frames_per_data_frame_sent=0)
    events: list[object] = []
    start = 0
    for end in [*cuts, len(wire)]:
        codec.receive_data(wire[start:end])
        start = end
        while (ev := codec.next_event()) is not NEED_DATA:
            if isinstance(ev, BodyChunk):
                codec.acknowledge(ev.stream_id, len(ev.data))
            events.append(ev)
    return events


def test_captured_grpcio_bytes_split_at_every_offset_decode_to_the_same_events(grpc_server: Peer) -> None:
    async def scenario() -> list[Observer]:
        async with Relay(grpc_server.port) as relay:
            target = f"127.0.0.1:{relay.port}"
            await run_program([sys.executable, str(GRPC_CLIENT), target, "unary", "client_stream", "bidi", "fail"])
            return relay.observers

    [observer] = asyncio.run(scenario())
    wire = bytes(observer.client_bytes)
    expected = decode_requests(wire, [])
    heads = [e for e in expected if isinstance(e, RequestHead)]
    assert [h.method for h in heads] == ["Unary", "ClientStream", "Bidi", "Fail"]
    for cut in range(1, len(wire)):
        assert decode_requests(wire, [cut]) == expected, f"split at {cut}"
    assert decode_requests(wire, list(range(1, len(wire)))) == expected  # one byte at a time


# -- a re-encoding stream proxy written against the codec API ---------------------------------------
class StreamProxy(LoopbackServer):
    """The smallest proxy the kernel's stream path must be: each downstream connection gets one
    upstream connection; heads are re-encoded on new upstream stream ids; bodies move only as far
    as the receiving side's window allows, and the sending side's window is given back only once
    its bytes were passed on (so a slow reader slows its writer); resets are forwarded.
    ``most_held`` records the largest amount of body the proxy ever held for one stream."""

    def __init__(self, upstream_port: int, **codec_kw: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.codec_kw = codec_kw
        self.most_held = 0
        self.heads: list[RequestHead] = []
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await within(asyncio.open_connection("127.0.0.1", self.upstream_port), 5)
        self.connections += 1
        down = Http2Codec(Role.SERVER, CodecLimits(), **self.codec_kw)
        up = Http2Codec(Role.CLIENT, CodecLimits(), **self.codec_kw)
        side = {id(down): (down, writer), id(up): (up, up_writer)}
        peer_of = {id(down): up, id(up): down}
        route: dict[tuple[int, int], int] = {}  # (codec id, stream id) -> the other side's stream id
        queues: dict[tuple[int, int], deque[bytes | EndOfMessage]] = {}  # waiting for the target's window
        held: dict[tuple[int, int], int] = {}  # body bytes in each queue

        def out(codec: Http2Codec, data: bytes) -> None:
            if data:
                side[id(codec)][1].write(data)

        def flush(dst: Http2Codec, dst_sid: int) -> None:
            """Send what the window allows, as one chunk, and give the source back what left."""
            key = (id(dst), dst_sid)
            queue = queues.get(key)
            src = peer_of[id(dst)]
            src_sid = route.get(key)
            while queue and src_sid is not None:
                if isinstance(queue[0], EndOfMessage):
                    end = queue.popleft()
                    assert isinstance(end, EndOfMessage)
                    out(dst, dst.send(EndOfMessage(end.trailers, stream_id=dst_sid)))
                    continue
                room = dst.sendable(dst_sid)
                if room == 0:
                    return
                parts: list[bytes] = []
                taken = 0
                while queue and taken < room and isinstance(queue[0], bytes):
                    item = queue.popleft()
                    assert isinstance(item, bytes)
                    if taken + len(item) > room:
                        queue.appendleft(item[room - taken :])
                        item = item[: room - taken]
                    parts.append(item)
                    taken += len(item)
                held[key] -= taken
                out(dst, dst.send(BodyChunk(b"".join(parts), stream_id=dst_sid)))
                out(src, src.acknowledge(src_sid, taken))
            queues.pop(key, None)
            held.pop(key, None)

        def handle(src: Http2Codec, ev: object) -> None:
            dst = peer_of[id(src)]
            if isinstance(ev, RequestHead):
                self.heads.append(ev)
                usid = up.new_stream_id()
                route[(id(down), ev.request_id)], route[(id(up), usid)] = usid, ev.request_id
                out(up, up.send(dataclasses.replace(ev, request_id=usid)))
            elif isinstance(ev, ResponseHead):
                dsid = route[(id(up), ev.request_id)]
                out(down, down.send(dataclasses.replace(ev, request_id=dsid)))
            elif isinstance(ev, BodyChunk | EndOfMessage):
                dst_sid = route[(id(src), ev.stream_id)]
                key = (id(dst), dst_sid)
                queues.setdefault(key, deque()).append(ev.data if isinstance(ev, BodyChunk) else ev)
                held[key] = held.get(key, 0) + (len(ev.data) if isinstance(ev, BodyChunk) else 0)
                self.most_held = max(self.most_held, held[key])
                flush(dst, dst_sid)
            elif isinstance(ev, StreamReset):
                dst_sid = route[(id(src), ev.stream_id)]
                queues.pop((id(dst), dst_sid), None)
                held.pop((id(dst), dst_sid), None)
                out(dst, dst.reset(dst_sid, ev.error_code))
            elif isinstance(ev, WindowOpened):
                for codec_id, sid in list(queues):
                    if codec_id == id(src) and ev.stream_id in (0, sid):
                        flush(src, sid)

        async def pump(src: Http2Codec, src_reader: asyncio.StreamReader) -> None:
            out(src, src.data_to_send())
            while data := await src_reader.read(65536):
                src.receive_data(data)
                while (ev := src.next_event()) is not NEED_DATA:
                    handle(src, ev)
                out(src, src.data_to_send())
                await asyncio.gather(writer.drain(), up_writer.drain())

        try:
            await asyncio.gather(pump(down, reader), pump(up, up_reader))
        finally:
            up_writer.close()


def test_every_kind_of_grpcio_call_works_through_a_reencoding_stream_proxy(grpc_server: Peer) -> None:
    async def scenario() -> tuple[dict[str, Any], StreamProxy]:
        async with StreamProxy(grpc_server.port) as proxy:
            return await run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{proxy.port}"]), proxy

    results, proxy = asyncio.run(scenario())
    check_grpc_results(results)
    assert {h.method for h in proxy.heads} == {
        "Unary",
        "ServerStream",
        "ClientStream",
        "Bidi",
        "Slow",
        "Fail",
    }
    # 10 MiB went each way, yet no stream ever held more than one window (256 KiB by default).
    assert 0 < proxy.most_held <= 256 * 1024


def test_five_hundred_concurrent_grpc_calls_share_one_connection_through_the_stream_proxy(grpc_server: Peer) -> None:
    async def scenario() -> tuple[dict[str, Any], StreamProxy]:
        async with StreamProxy(grpc_server.port) as proxy:
            return await run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{proxy.port}", "many"]), proxy

    results, proxy = asyncio.run(scenario())
    assert results["many"] == {"code": "OK", "replies": ["500 of 500 match"], "trailers": {}}
    assert len(proxy.heads) == 500
    assert proxy.connections == 1


def test_a_client_that_stops_reading_stalls_the_stream_with_one_window_held_then_resumes(grpc_server: Peer) -> None:
    count, word = 20_000, "w" * 100  # about 2 MB of server-streamed messages: many windows' worth

    async def scenario() -> tuple[int, int, int, list[bytes]]:
        async with StreamProxy(grpc_server.port) as proxy:
            reader, writer = await within(asyncio.open_connection("127.0.0.1", proxy.port), 5)
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            fields = [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/{ECHO}/ServerStream"),
                (":authority", "echo"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
            client.send_headers(1, fields)
            client.send_data(1, grpc_message_of(f"{count}:{word}".encode()), end_stream=True)
            writer.write(client.data_to_send())
            body = bytearray()
            ended = False

            async def read(acknowledge: bool, quiet: float) -> None:
                nonlocal ended
                while not ended:
                    try:
                        data = await asyncio.wait_for(reader.read(65536), quiet)
                    except TimeoutError:
                        return  # nothing more arrives: the stream is stalled
                    assert data, "proxy closed the connection"
                    for ev in client.receive_data(data):
                        if isinstance(ev, h2.events.DataReceived):
                            body.extend(ev.data)
                            if acknowledge:
                                client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        elif isinstance(ev, h2.events.StreamEnded):
                            ended = True
                    writer.write(client.data_to_send())

            await within(read(acknowledge=False, quiet=1.0), 30)  # never gives window back
            stalled_at, held = len(body), proxy.most_held
            client.acknowledge_received_data(len(body), 1)
            writer.write(client.data_to_send())
            await within(read(acknowledge=True, quiet=10.0), 60)
            writer.close()
            return stalled_at, held, len(body), grpc_messages(bytes(body))

    stalled_at, held, total, messages = asyncio.run(scenario())
    assert stalled_at <= 65_535  # the client's own window: nothing was pushed past it
    assert held <= 256 * 1024  # the proxy held at most one upstream stream window meanwhile
    assert len(messages) == count and messages[-1] == f"{word}-{count - 1}".encode()
    assert total > 1_000_000


def test_triple_calls_work_through_a_reencoding_stream_proxy(triple_provider: Peer) -> None:
    async def scenario() -> Any:
        async with StreamProxy(triple_provider.port) as proxy:
            return await run_program([str(DUBBO_PYTHON), str(TRIPLE_CONSUMER), f"127.0.0.1:{proxy.port}"])

    check_triple_results(asyncio.run(scenario()))


# -- local replies seen by real clients -----------------------------------------------------------
class LocalReplyServer(LoopbackServer):
    """An HTTP/2 server on 127.0.0.1 that answers every request with ``codec.local_reply``."""

    def __init__(self, status: ReplyStatus, message: str) -> None:
        super().__init__()
        self.status = status
        self.message = message
        self.heads: list[RequestHead] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = Http2Codec(Role.SERVER, CodecLimits())
        writer.write(codec.data_to_send())
        while data := await reader.read(65536):
            codec.receive_data(data)
            while (ev := codec.next_event()) is not NEED_DATA:
                if isinstance(ev, RequestHead):
                    self.heads.append(ev)
                    writer.write(codec.local_reply(ev, self.status, self.message))
                elif isinstance(ev, BodyChunk):
                    writer.write(codec.acknowledge(ev.stream_id, len(ev.data)))
            writer.write(codec.data_to_send())
            await writer.drain()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (ReplyStatus.NO_ROUTE, "UNIMPLEMENTED"),
        (ReplyStatus.NO_HEALTHY_UPSTREAM, "UNAVAILABLE"),
        (ReplyStatus.TIMEOUT, "DEADLINE_EXCEEDED"),
        (ReplyStatus.RATE_LIMITED, "RESOURCE_EXHAUSTED"),
        (ReplyStatus.DENIED, "PERMISSION_DENIED"),
    ],
)
def test_grpcio_client_reads_local_replies_as_the_matching_grpc_status(status: ReplyStatus, code: str) -> None:
    message = f"sofamesh: {status.name.lower()} for {ECHO} (100% local)"

    async def scenario() -> tuple[dict[str, Any], list[RequestHead]]:
        async with LocalReplyServer(status, message) as server:
            target = f"127.0.0.1:{server.port}"
            return await run_program([sys.executable, str(GRPC_CLIENT), target, "unary", "client_stream"]), server.heads

    results, heads = asyncio.run(scenario())
    for call in ("unary", "client_stream"):
        assert results[call] == {"code": code, "details": message, "replies": []}
    assert {h.method for h in heads} == {"Unary", "ClientStream"}


def test_triple_consumer_reads_a_local_reply_as_its_grpc_status() -> None:
    need(DUBBO_PYTHON.exists(), "apache-dubbo 3.0.0b1 (.cache/venv-dubbo3)")

    async def scenario() -> tuple[Any, list[RequestHead]]:
        async with LocalReplyServer(ReplyStatus.NO_HEALTHY_UPSTREAM, "no healthy upstream for greeter") as server:
            argv = [str(DUBBO_PYTHON), str(TRIPLE_CONSUMER), f"127.0.0.1:{server.port}"]
            return await run_program(argv), server.heads

    results, heads = asyncio.run(scenario())
    expected = "StatusRpcError: RPC Invocation failed: GRpcCode.UNAVAILABLE no healthy upstream for greeter"
    for call in ("sayHello", "fail"):
        assert results[call] == expected
    assert {h.method for h in heads} == {"sayHello", "sayHellos", "fail"}
    assert {h.service for h in heads} == {GREETER}


# -- Triple -----------------------------------------------------------------------------------------
def check_triple_results(results: dict[str, Any]) -> None:
    assert results["sayHello"] == "hello, triple"
    assert results["sayHellos"] == ["hello #0, triple", "hello #1, triple"]
    assert "INTERNAL" in results["fail"] and "provider refused this" in results["fail"]


def test_triple_consumer_and_provider_work_directly(triple_provider: Peer) -> None:
    argv = [str(DUBBO_PYTHON), str(TRIPLE_CONSUMER), f"127.0.0.1:{triple_provider.port}"]
    check_triple_results(asyncio.run(run_program(argv)))


def test_triple_calls_decode_through_both_codec_roles(triple_provider: Peer) -> None:
    async def scenario() -> tuple[Any, list[Observer]]:
        async with Relay(triple_provider.port) as relay:
            argv = [str(DUBBO_PYTHON), str(TRIPLE_CONSUMER), f"127.0.0.1:{relay.port}"]
            return await run_program(argv), relay.observers

    results, observers = asyncio.run(scenario())
    check_triple_results(results)
    assert [o.errors for o in observers] == [[]] * len(observers)
    calls: dict[str, Exchange] = {}
    for obs in observers:
        calls.update(obs.by_method())
    assert set(calls) == {"sayHello", "sayHellos", "fail"}
    for method, ex in calls.items():
        assert ex.request is not None
        assert (ex.request.service, ex.request.path) == (GREETER, f"/{GREETER}/{method}")
        assert (ex.request.headers.get("content-type") or "").startswith("application/grpc")
    hello = calls["sayHello"]
    assert b"triple" in b"".join(grpc_messages(bytes(hello.request_body)))
    assert hello.trailers is not None and hello.trailers.get("grpc-status") == "0"
    assert grpc_messages(bytes(hello.response_body)) == [b"hello, triple"]
    fail = calls["fail"]
    assert fail.response is not None and fail.response.end_stream  # trailers-only error
    assert fail.response.headers.get("grpc-status") == "13"
    assert fail.response.http_status == 500


# -- nghttp and curl --------------------------------------------------------------------------------
@pytest.mark.parametrize("tool", ["nghttp", "curl"])
def test_h2c_prior_knowledge_clients_get_plain_http_local_replies(tool: str) -> None:
    need(shutil.which(tool) is not None, tool)

    async def scenario() -> tuple[str, list[RequestHead]]:
        async with LocalReplyServer(ReplyStatus.NO_ROUTE, "no route for web.local/x") as server:
            url = f"http://127.0.0.1:{server.port}/x?y=1"
            if tool == "nghttp":
                argv = ["nghttp", "-v", "-H", ":authority: web.local", url]
            else:
                argv = ["curl", "-sS", "-i", "--http2-prior-knowledge", "-H", "Host: web.local", url]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await within(proc.communicate(), 20)
            return out.decode(errors="replace"), server.heads

    out, heads = asyncio.run(scenario())
    assert "no route for web.local/x" in out
    if tool == "curl":
        assert out.startswith("HTTP/2 404")
    else:
        assert ":status: 404" in out
    [head] = heads
    assert (head.service, head.method, head.path, head.end_stream) == ("web.local", "GET", "/x?y=1", True)
