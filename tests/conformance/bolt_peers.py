"""Real SOFA Bolt peers for the conformance tests, and a byte relay that decodes what passes.

Peers (installed by scripts/setup.d/20-bolt-peers.sh into ``$SOFAMESH_CACHE``, default
``<repo>/.cache``): npm sofa-rpc-node 2.10.0 (provider.js / consumer.js) and PyPI anthunder 0.8.1
(anthunder_listener.py / anthunder_client.py in its own venv). Missing peers skip locally and fail
when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sofamesh.core.codec import Role
from sofamesh.core.events import NEED_DATA, Event, Heartbeat, RequestHead, ResponseHead
from sofamesh.plugins.protocols.bolt import BoltCodec
from sofamesh.testing import free_port

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
PEERS = Path(__file__).resolve().parent / "peers" / "bolt"
NODE_MODULES = CACHE / "npm" / "sofa-rpc-node" / "node_modules"
ANTHUNDER_PY = CACHE / "venv-anthunder" / "bin" / "python"


def require(path: Path, what: str) -> None:
    """Skip (locally) or fail (under CI) when a peer is not installed."""
    if path.exists() and (what != "node" or shutil.which("node")):
        return
    msg = f"{what} peer not installed at {path}: run scripts/setup.d/20-bolt-peers.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def require_node() -> None:
    require(NODE_MODULES / "sofa-rpc-node" / "package.json", "node")


def require_anthunder() -> None:
    require(ANTHUNDER_PY, "anthunder")


class Peer:
    """A peer server process started by a test; stopped by its pid."""

    def __init__(self, argv: list[str], port: int, timeout: float = 20.0) -> None:
        self.port = port
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PEERS,
                                     env={**os.environ, "SOFAMESH_CACHE": str(CACHE)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"peer {argv} exited with {self.proc.returncode}: {err}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"peer {argv} did not listen on 127.0.0.1:{port} within {timeout}s")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@contextlib.contextmanager
def node_provider(interfaces: str, tag: str, port: int | None = None) -> Iterator[Peer]:
    """sofa-rpc-node RpcServer: echo, plus, whoami, fail (throws), slow(ms); version 1.0."""
    require_node()
    port = port or free_port()
    peer = Peer(["node", "-r", str(PEERS / "loopback.js"), str(PEERS / "provider.js"), str(port),
                 interfaces, tag], port)
    try:
        yield peer
    finally:
        peer.stop()


@contextlib.contextmanager
def anthunder_listener(interfaces: str, tag: str, port: int | None = None) -> Iterator[Peer]:
    """anthunder AioListener: echo, whoami, fail (raises), slow(body = ms)."""
    require_anthunder()
    port = port or free_port()
    peer = Peer([str(ANTHUNDER_PY), str(PEERS / "anthunder_listener.py"), str(port), interfaces, tag], port)
    try:
        yield peer
    finally:
        peer.stop()


def _run_json(argv: list[str], timeout: float) -> list[dict[str, object]]:
    out = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=PEERS, check=False,
                         env={**os.environ, "SOFAMESH_CACHE": str(CACHE)})
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {out.returncode}: {out.stderr.decode()[-2000:]}")
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("[")]
    if not lines:
        raise RuntimeError(f"{argv[:3]} printed no result: {out.stdout.decode()[-2000:]}")
    result: list[dict[str, object]] = json.loads(lines[-1])
    return result


def node_consumer(address: str, interface: str, calls: list[dict[str, object]], clients: int = 1,
                  framing: str = "v1", timeout: float = 60.0) -> list[dict[str, object]]:
    """Run sofa-rpc-node RpcClient calls (all at once) against ``address``; one result per call."""
    require_node()
    return _run_json(["node", str(PEERS / "consumer.js"), address, interface, json.dumps(calls),
                      str(clients), framing], timeout)


def anthunder_client(address: str, interface: str, calls: list[dict[str, object]],
                     timeout: float = 60.0) -> list[dict[str, object]]:
    """Run anthunder AioClient calls (all at once, one connection) against ``address``."""
    require_anthunder()
    return _run_json([str(ANTHUNDER_PY), str(PEERS / "anthunder_client.py"), address, interface,
                      json.dumps(calls)], timeout)


# -- a byte relay that feeds both directions through the codec ---------------------------------
@dataclass
class RelayedConnection:
    """What one relayed connection carried: raw bytes each way and the events the codecs decoded."""

    downstream_bytes: bytearray = field(default_factory=bytearray)
    upstream_bytes: bytearray = field(default_factory=bytearray)
    requests: list[Event] = field(default_factory=list)  # from the client side (server-role codec)
    responses: list[Event] = field(default_factory=list)  # from the server side (client-role codec)
    errors: list[BaseException] = field(default_factory=list)


IDLE_S = 120.0  # a relayed connection silent this long is dropped (every await here is bounded)

RequestHook = Callable[[BoltCodec, RequestHead], "bytes | None"]


class ByteRelay:
    """A 127.0.0.1 relay in its own thread and event loop. Every byte is forwarded as received
    (unless ``id_offset`` or ``answer`` changes frames) and also fed to a server-role codec
    (client -> server) and a client-role codec (server -> client), whose events are recorded.

    ``id_offset``: forward each request with its id XOR this value (via ``rewrite_request_id``) and
    restore the id on the response, so the peers only work if the rewrite keeps frames valid.
    ``answer``: called for each request; bytes returned are sent back to the client instead of
    forwarding the request (for local replies).
    """

    def __init__(self, upstream: str, id_offset: int = 0, answer: RequestHook | None = None) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.id_offset = id_offset
        self.answer = answer
        self.connections: list[RelayedConnection] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ByteRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(10)

    def _shutdown(self) -> None:
        if self._server:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        self._loop.call_later(0.2, self._loop.stop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.wait_for(asyncio.start_server(self._handle, "127.0.0.1", 0), 5)
            self.port = self._server.sockets[0].getsockname()[1]

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        conn = RelayedConnection()
        self.connections.append(conn)
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 5)
        down_codec = BoltCodec(Role.SERVER)
        up_codec = BoltCodec(Role.CLIENT)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, codec: BoltCodec,
                       sink: bytearray, events: list[Event], downstream: bool) -> None:
            try:
                while data := await asyncio.wait_for(src.read(65536), IDLE_S):
                    sink += data
                    codec.receive_data(data)
                    out = bytearray()
                    while (ev := codec.next_event()) is not NEED_DATA:
                        events.append(ev)  # type: ignore[arg-type]
                        out += self._forward(ev, codec, writer, downstream)
                    if out:
                        dst.write(bytes(out))
                        await asyncio.wait_for(dst.drain(), IDLE_S)
            except Exception as exc:  # recorded and asserted on by the tests
                conn.errors.append(exc)
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(
                pump(reader, up_writer, down_codec, conn.downstream_bytes, conn.requests, True),
                pump(up_reader, writer, up_codec, conn.upstream_bytes, conn.responses, False),
            ), 10 * IDLE_S)

    def _forward(self, ev: object, codec: BoltCodec, client: asyncio.StreamWriter, downstream: bool) -> bytes:
        if isinstance(ev, RequestHead) and ev.raw is not None:
            if self.answer is not None:
                reply = self.answer(codec, ev)
                if reply is not None:
                    client.write(reply)
                    return b""
            return self._renumber(codec, ev.raw, ev.request_id)
        if isinstance(ev, ResponseHead) and ev.raw is not None:
            return self._renumber(codec, ev.raw, ev.request_id)
        if isinstance(ev, Heartbeat) and ev.raw is not None:
            return ev.raw
        return b""

    def _renumber(self, codec: BoltCodec, raw: bytes, request_id: int) -> bytes:
        return codec.rewrite_request_id(raw, request_id ^ self.id_offset) if self.id_offset else raw
