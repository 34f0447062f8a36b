"""Capture the HTTP/2 fuzz seeds from real clients: ``python -m fuzz.capture_http2``.

Each client (curl with ``--http2-prior-knowledge``, nghttp, grpcio) is pointed at a TCP relay this
script owns on 127.0.0.1; the relay forwards both directions to a real HTTP/2 server so every
exchange runs to its end (curl and nghttp: hypercorn serving ``app`` below, which answers every
request 200; grpcio: grpcio's server, ``tests/conformance/peers/grpc/echo_server.py``), and writes
what each client connection sent, byte for byte from its preface to its close, into
``fuzz/captured/http2/<client>-<what>.bin``: the input the ``http2_server`` target decodes. The
files are committed; ``fuzz/seeds.py`` reads them. Run again to refresh them (curl and nghttp
from the system, hypercorn and grpcio from the venv's dev extras; scripts/setup.d/22-http2-peers.sh).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "captured" / "http2"
PEERS = ROOT / "tests" / "conformance" / "peers" / "grpc"
ECHO = "sofamesh.test.Echo"
MESSAGE = b"\x00\x00\x00\x00\x05hello"  # one gRPC message (not compressed, 5 bytes)


class Recorder:
    """A relay on a port of its own: what each client connection sent, in order."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.sent: list[bytearray] = []
        self.open = 0  # connections not yet closed both ways
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        record = bytearray()
        self.sent.append(record)
        self.open += 1
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            self.open -= 1
            cw.close()
            return

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, keep: bytearray | None) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await r.read(65536):
                    if keep is not None:
                        keep += data
                    w.write(data)
                    await w.drain()
            w.close()

        try:
            await asyncio.gather(pump(cr, uw, record), pump(ur, cw, None))
        finally:
            self.open -= 1

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app hypercorn serves to curl and nghttp: 200 and the request body's length."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"{scope['method']} {scope['path']} {size}\n".encode()})


def _clients(port: int, body: Path) -> dict[str, list[str]]:
    url = f"http://127.0.0.1:{port}"
    grpc_headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    return {
        "curl-get": ["curl", "-sS", "-o", "/dev/null", "--http2-prior-knowledge", f"{url}/index.html?q=1"],
        "curl-grpc-post": [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--http2-prior-knowledge",
            *grpc_headers,
            "--data-binary",
            f"@{body}",
            f"{url}/{ECHO}/Unary",
        ],
        "nghttp-two-streams": ["nghttp", "-n", "-H", "user-agent: nghttp-seed", f"{url}/a", f"{url}/b?c=d"],
        "nghttp-grpc-upload": ["nghttp", "-n", "-d", str(body), *grpc_headers, f"{url}/{ECHO}/Unary"],
        # one call per connection: replayed without the server's side (no DATA sent back), five
        # calls' WINDOW_UPDATEs on one connection would trip the codec's WINDOW_UPDATE flood limit
        # (Envoy's max_inbound_window_update_frames_per_data_frame_sent) before the later calls
        **{
            f"grpcio-{call.replace('_', '-')}": [
                sys.executable,
                str(PEERS / "echo_client.py"),
                f"127.0.0.1:{port}",
                call,
            ]
            for call in ("unary", "server_stream", "client_stream", "bidi", "fail")
        },
    }


def _start_hypercorn() -> tuple[subprocess.Popen[bytes], int]:
    from sofamesh.testing import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "fuzz.capture_http2:app", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(5)
    raise SystemExit("hypercorn did not start")


def _start_grpc() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, str(PEERS / "echo_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + 20
    with sel:
        while time.monotonic() < deadline and sel.select(max(0.0, deadline - time.monotonic())):
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
            for line in seen.splitlines():
                if line.startswith(b"READY "):
                    return proc, int(line.split()[1])
    proc.kill()
    proc.wait(5)
    proc.stdout.close()
    raise SystemExit(f"the grpcio echo server did not start: {seen[-500:]!r}")


async def capture() -> dict[str, list[bytes]]:
    """Run every client through its own recorder; (client -> what each of its connections sent)."""
    missing = [b for b in ("curl", "nghttp") if shutil.which(b) is None]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)} (scripts/setup.d/22-http2-peers.sh)")
    servers = [_start_hypercorn(), _start_grpc()]
    out: dict[str, list[bytes]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            body = Path(tmp) / "message"
            body.write_bytes(MESSAGE)
            for name in _clients(0, body):
                rec = Recorder(servers[name.startswith("grpcio")][1])
                relay = await rec.start()
                argv = _clients(relay, body)[name]
                proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                _, err = await asyncio.wait_for(proc.communicate(), 60)
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: {argv[0]} exited {proc.returncode}: {err.decode()[-500:]}")
                for _ in range(250):  # the relay reads the client's last bytes and its close
                    if rec.sent and not rec.open:
                        break
                    await asyncio.sleep(0.02)
                await rec.stop()
                out[name] = [bytes(r) for r in rec.sent if r]
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(5)
            if proc.stdout is not None:  # the grpcio server's READY line came through a pipe
                proc.stdout.close()
    return out


def main() -> None:
    captured = asyncio.run(capture())
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.bin"):
        old.unlink()
    for name, connections in captured.items():
        for i, data in enumerate(connections):
            if not data.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
                raise SystemExit(f"{name}: connection {i} does not start with the HTTP/2 preface")
            path = OUT / (f"{name}.bin" if len(connections) == 1 else f"{name}-{i}.bin")
            path.write_bytes(data)
            print(f"{path.relative_to(ROOT)}: {len(data)} bytes")


if __name__ == "__main__":
    main()
