"""A real HTTP/1.1 upstream for integration tests: the standard library's ThreadingHTTPServer."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def pattern(n: int) -> bytes:
    """Deterministic bytes of length n (so a download can be checked without keeping a copy)."""
    block = bytes(range(256)) * 256
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    server: UpstreamServer

    def log_message(self, fmt: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("content-length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", self.server.name)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.requests += 1
        self.server.peers.add(self.client_address)
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self._body()
        if url.path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000)
            self._send(200, b"slow done\n")
        elif url.path == "/big":
            n = int(q.get("n", "1000000"))
            block = pattern(65536)
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-upstream", self.server.name)
            self.end_headers()
            sent = 0
            try:
                while sent < n:
                    piece = block[: min(65536, n - sent)]
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                    sent += len(piece)
                    self.server.big_sent = sent
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True
        elif url.path == "/reset":
            self.wfile.flush()
            self.connection.shutdown(2)
            self.close_connection = True
        elif url.path == "/echo":
            digest = hashlib.sha256(body).hexdigest()
            headers = "".join(f"{k.lower()}={v};" for k, v in self.headers.items())
            self._send(200, f"{len(body)} {digest}\n{headers}\n".encode())
        else:
            self._send(200, f"{self.server.name} {self.command} {self.path}\n".encode())

    do_POST = do_GET
    do_PUT = do_GET
    do_HEAD = do_GET


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str = "up") -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.name = name
        self.requests = 0
        self.big_sent = 0
        self.peers: set[tuple[str, int]] = set()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> UpstreamServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
