"""Pilot's ``native`` xDS transport (ADS on the project's own HTTP/2 codec) against a third-party
HTTP/2 client (python-hyper's h2) sending what a broken client sends, and real grpcio ADS clients
that must keep syncing meanwhile."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from sofamesh.pilot.app import Pilot
from sofamesh.pilot.config import parse
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.xds.generator import CLUSTER, LISTENER

from ..conftest import run

SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def _framed(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(message).to_bytes(4, "big") + message


def _cds(node: str = "raw") -> bytes:
    return discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=node), type_url=CLUSTER).SerializeToString()


class H2Peer:
    """A blocking h2 client on its own socket; records what each stream got."""

    def __init__(self, port: int, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.auto_ack = window is None
        self.heads: dict[int, dict[str, str]] = {}
        self.trailers: dict[int, dict[str, str]] = {}
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.pings = 0
        self.closed = False
        self.flush()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def open(self, path: str, content_type: str = "application/grpc") -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "pilot"),
                ("content-type", content_type),
                ("te", "trailers"),
            ],
        )
        self.flush()
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(sid, data, end_stream=end)
        self.flush()

    def status(self, sid: int) -> tuple[str | None, str | None]:
        """(grpc-status, grpc-message) from the trailers, or from a trailers-only head."""
        fields = self.trailers.get(sid) or self.heads.get(sid) or {}
        return fields.get("grpc-status"), fields.get("grpc-message")

    def until(self, done: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out: heads {self.heads} trailers {self.trailers} resets {self.resets} "
                    f"data { ({s: len(d) for s, d in self.data.items()}) } pings {self.pings}"
                )
            self.sock.settimeout(min(left, 0.5))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                self.closed = True
                if not done():
                    raise AssertionError(f"connection closed: trailers {self.trailers} goaway {self.goaway}")
                return
            for ev in self.conn.receive_data(chunk):
                self._event(ev)
            self.flush()

    def _event(self, ev: Any) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            self.heads[ev.stream_id] = dict(ev.headers)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.trailers[ev.stream_id] = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            if self.auto_ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.ended.add(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.resets[ev.stream_id] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings += 1

    def raw_frames_until_closed(self, timeout: float) -> list[tuple[int, int, bytes]]:
        """(type, stream id, payload) of every frame until Pilot closes the connection."""
        raw = bytearray()
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(65536):
            raw += chunk
        out = []
        while len(raw) >= 9:
            size = int.from_bytes(raw[:3], "big")
            out.append((raw[3], int.from_bytes(raw[5:9], "big") & 0x7FFF_FFFF, bytes(raw[9 : 9 + size])))
            del raw[: 9 + size]
        return out

    def messages(self, sid: int) -> list[bytes]:
        buf, out = bytes(self.data.get(sid, b"")), []
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + size:
                break
            out.append(buf[5 : 5 + size])
            buf = buf[5 + size :]
        return out

    def close(self) -> None:
        self.sock.close()


def _pilot(tmp_path: Path) -> Pilot:
    return Pilot(
        parse(
            {
                "xds": {"address": "127.0.0.1:0", "transport": "native"},
                "api": {"address": "127.0.0.1:0"},
                "data_dir": str(tmp_path),
                "debounce": {"quiet_ms": 10, "max_delay_ms": 50},
                "grace_s": 2,
            }
        )
    )


async def _register(pilot: Pilot, services: int) -> None:
    reg = pilot.writable_registry()
    for i in range(services):
        name = f"svc-{i:03d}.example"
        await reg.register(
            Service(name, "http"), ServiceInstance(service=name, id="p1", address="127.0.0.1", port=8000 + i), None
        )


class _Grpcio:
    """A grpc.aio SotW ADS client: one request at a time, each answered before the next."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

        async def requests() -> Any:
            while (req := await self.queue.get()) is not None:
                yield req

        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources(requests())

    async def ask(self, type_url: str, ack: discovery_pb2.DiscoveryResponse | None = None) -> Any:
        if ack is not None:  # ACK the last answer first, as Envoy does
            await self.queue.put(
                discovery_pb2.DiscoveryRequest(
                    type_url=ack.type_url, version_info=ack.version_info, response_nonce=ack.nonce
                )
            )
        await self.queue.put(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="grpcio"), type_url=type_url))
        return await asyncio.wait_for(self.call.read(), 10)

    async def close(self) -> None:
        await self.queue.put(None)
        await self.channel.close()


def test_broken_grpc_streams_get_their_own_status_while_the_connection_and_a_grpcio_client_go_on(
    tmp_path: Path,
) -> None:
    pilot = _pilot(tmp_path)
    got: dict[str, Any] = {}

    def broken(port: int) -> None:
        peer = H2Peer(port)
        try:
            streams = {
                "compressed": (peer.open(SOTW), _framed(_cds(), flag=1), False),
                "flag": (peer.open(SOTW), _framed(_cds(), flag=7), False),
                "garbage": (peer.open(SOTW), _framed(b"\xff\xff\xff\xff"), False),
                "delta_garbage": (peer.open(DELTA), _framed(b"\x0a\x05ab"), False),
                "too_big": (peer.open(SOTW), (5 * 1024 * 1024).to_bytes(5, "big"), False),
                "truncated": (peer.open(SOTW), _framed(_cds())[:-3], True),
                "unknown": (peer.open("/envoy.service.discovery.v3.AggregatedDiscoveryService/Nope"), b"", True),
            }
            for sid, data, end in streams.values():
                peer.send(sid, data, end)
            sids = [sid for sid, _, _ in streams.values()]
            peer.until(lambda: all(peer.status(s)[0] is not None for s in sids))
            got.update({name: peer.status(sid) for name, (sid, _, _) in streams.items()})
            got["still_open"] = {name: sid in peer.resets for name, (sid, _, _) in streams.items()}
            plain = peer.open(SOTW, content_type="text/plain")
            peer.send(plain, b"hello", end=True)
            peer.conn.ping(b"12345678")
            peer.flush()
            # the same connection still serves a good stream
            good = peer.open(SOTW)
            peer.send(good, _framed(_cds()))
            peer.until(lambda: bool(peer.messages(good)) and plain in peer.heads and peer.pings == 1)
            got["plain"] = peer.heads[plain].get(":status")
            got["good"] = discovery_pb2.DiscoveryResponse.FromString(peer.messages(good)[0])
            got["goaway_after_stream_errors"] = peer.goaway
        finally:
            peer.close()
        # an HTTP/2 connection error (DATA on stream 0) ends that connection alone, with a GOAWAY
        bad = H2Peer(port)
        try:
            bad.sock.sendall(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
            bad.until(lambda: bad.goaway is not None)
            got["conn_error"] = bad.goaway.error_code
        finally:
            bad.close()

    async def scenario() -> None:
        await pilot.start()
        client: _Grpcio | None = None
        try:
            await _register(pilot, 3)
            client = _Grpcio(pilot.xds_port)
            cds = await client.ask(CLUSTER)
            got["before"] = len(cds.resources)
            await asyncio.to_thread(broken, pilot.xds_port)
            lds = await client.ask(LISTENER, ack=cds)  # the grpcio stream was never disturbed
            got["after"] = lds.type_url
            await _register(pilot, 4)  # and it still gets pushes
            pushed = await asyncio.wait_for(client.call.read(), 10)
            got["pushed"] = (pushed.type_url, len(pushed.resources))
            got["protocol_errors"] = pilot.ads.transport.describe()["protocol_errors"]
        finally:
            if client is not None:
                await client.close()
            await pilot.stop()

    run(scenario(), 60)
    assert got["before"] >= 3
    assert got["compressed"] == ("12", "compressed message: no grpc-encoding is accepted")
    assert got["flag"] == ("12", "message prefix flag 7 is neither 0 nor 1")
    assert got["garbage"][0] == "13" and got["garbage"][1].startswith("malformed DiscoveryRequest"), got["garbage"]
    assert got["delta_garbage"][0] == "13" and got["delta_garbage"][1].startswith("malformed DeltaDiscoveryRequest")
    assert got["too_big"] == ("8", "message of 5242880 bytes is over the 4194304-byte limit")
    assert got["truncated"] == ("13", "the stream ended inside a message (17 bytes of it)") or got["truncated"][
        1
    ].startswith("the stream ended inside a message"), got["truncated"]
    assert got["unknown"][0] == "12" and "Nope" in got["unknown"][1]
    # a client still sending is stopped with RST_STREAM(NO_ERROR) after its status (RFC 9113 8.1)
    assert got["still_open"]["garbage"] and got["still_open"]["compressed"] and not got["still_open"]["truncated"]
    assert got["plain"] == "415"
    assert got["good"].type_url == CLUSTER and len(got["good"].resources) >= 3
    assert got["goaway_after_stream_errors"] is None
    assert got["conn_error"] == 1  # PROTOCOL_ERROR
    assert got["after"] == LISTENER
    assert got["pushed"] == (CLUSTER, 4)
    assert got["protocol_errors"] == 1


def test_responses_wait_for_the_clients_window_and_shutdown_ends_streams_with_goaway_and_status(tmp_path: Path) -> None:
    pilot = _pilot(tmp_path)
    got: dict[str, Any] = {}

    def small_window(port: int) -> None:
        peer = H2Peer(port, window=100)
        try:
            sid = peer.open(SOTW)
            peer.send(sid, _framed(_cds()))
            peer.until(lambda: len(peer.data.get(sid, b"")) >= 100)
            time.sleep(0.3)  # whatever Pilot would send beyond the window has had time to come
            peer.sock.settimeout(0.3)
            try:
                for ev in peer.conn.receive_data(peer.sock.recv(65536)):
                    peer._event(ev)
            except TimeoutError:
                pass
            got["held"] = len(peer.data[sid])  # the window, no more
            peer.auto_ack = True
            peer.conn.acknowledge_received_data(len(peer.data[sid]), sid)
            peer.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
            peer.flush()
            peer.until(lambda: bool(peer.messages(sid)))
            got["resources"] = len(discovery_pb2.DiscoveryResponse.FromString(peer.messages(sid)[0]).resources)
            got["size"] = len(peer.data[sid])
            got["stopping"] = True
            # h2 takes no frame after a GOAWAY (gRPC clients do: the streams it let live): read raw
            got["frames"] = peer.raw_frames_until_closed(15)
            block = next(payload for kind, s, payload in got["frames"] if kind == 1 and s == sid)
            got["trailers"] = {k.decode(): v.decode() for k, v in peer.conn.decoder.decode(block, raw=True)}
            got["sid"] = sid
        finally:
            peer.close()

    async def scenario() -> None:
        await pilot.start()
        client: _Grpcio | None = None
        try:
            await _register(pilot, 40)
            task = asyncio.create_task(asyncio.to_thread(small_window, pilot.xds_port))
            client = _Grpcio(pilot.xds_port)
            await client.ask(CLUSTER)
            for _ in range(200):
                if "stopping" in got or task.done():
                    break
                await asyncio.sleep(0.05)
        finally:
            await pilot.stop()
        await asyncio.wait_for(task, 20)
        assert client is not None
        got["grpcio"] = (await asyncio.wait_for(client.call.code(), 10), await client.call.details())
        await client.close()

    run(scenario(), 60)
    assert got["held"] == 100, got
    assert got["resources"] >= 40 and got["size"] > 1000
    goaways = [payload for kind, _, payload in got["frames"] if kind == 7]
    # GOAWAY(NO_ERROR) naming the stream as the last one served, then the stream's status trailers
    assert [(int.from_bytes(g[:4], "big"), int.from_bytes(g[4:8], "big")) for g in goaways] == [(got["sid"], 0)]
    # then its trailers (HEADERS) and RST_STREAM(NO_ERROR), as the client had not half-closed
    assert [k for k, sid, _ in got["frames"] if sid == got["sid"]] == [1, 3], got["frames"]
    assert got["trailers"] == {"grpc-status": "0"}
    assert got["grpcio"][0] == grpc.StatusCode.OK, got["grpcio"]  # a grpcio stream ends with status 0
