"""Test helpers for sofamesh and for plugin authors: free ports, a proxy in a subprocess, a real
HTTP upstream. (The pytest fixture ``sofamesh_proxy`` is in ``sofamesh.pytest_plugin``.)

    from sofamesh.testing import free_port, ProxyProcess, UpstreamServer
    with UpstreamServer("up") as up, ProxyProcess({"listeners": [...], "clusters": [...]}) as proxy:
        proxy.admin_url, proxy.stats()
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)


class ProxyProcess:
    """``sofamesh proxy -c <tmp file>`` in a subprocess; ready when its admin /ready says so."""

    def __init__(self, config: dict[str, Any] | str, *, args: tuple[str, ...] = (), timeout: float = 15.0,
                 env: dict[str, str] | None = None, python: str | None = None) -> None:
        if isinstance(config, str):
            config = yaml.safe_load(config) or {}
        config = dict(config)
        if config.get("admin", {}) is not None and "address" not in (config.get("admin") or {}):
            config["admin"] = {"address": f"127.0.0.1:{free_port()}"}
        self.config = config
        self.args = args
        self.timeout = timeout
        self.env = env
        # Another interpreter (another install of sofamesh, e.g. the compiled build) runs with -P: the
        # current directory, often a checkout, must not shadow that install's own package.
        self.python = [python, "-P"] if python else [sys.executable]
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="sofamesh-test-")
        self.config_path = Path(self._dir.name) / "proxy.yaml"
        self.log_path = Path(self._dir.name) / "proxy.log"
        self.final_log: str | None = None

    @property
    def admin_url(self) -> str:
        return f"http://{self.config['admin']['address']}"

    def start(self) -> ProxyProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = open(self.log_path, "wb")
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            [*self.python, "-m", "sofamesh", "proxy", "-c", str(self.config_path), *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sofamesh proxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/ready", timeout=0.5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"sofamesh proxy not ready after {self.timeout} s:\n{self.log()}")

    def log(self) -> str:
        if self.final_log is not None:
            return self.final_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as r:
            return bytes(r.read())

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/stats")))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait (bounded), SIGKILL if needed. Returns the exit code."""
        p = self.proc
        if p is None:
            return 0
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.final_log = self.log()
        self._dir.cleanup()
        return int(p.returncode)

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()



def pattern(n: int) -> bytes:
    """Deterministic bytes of length n (so a download can be checked without keeping a copy)."""
    block = bytes(range(256)) * 256
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


class _UpstreamHandler(BaseHTTPRequestHandler):
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
        self.server.paths[url.path] = self.server.paths.get(url.path, 0) + 1
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
    """A real HTTP/1.1 upstream on a free 127.0.0.1 port, in a thread (``with UpstreamServer("a") as up``).

    ``GET /any`` answers ``"<name> GET /any"``; ``/slow?ms=N`` answers after N ms; ``/big?n=N``
    streams N bytes of ``pattern`` chunked (``big_sent`` counts what went out); ``/echo`` answers
    the body's length and sha256 and the request headers; ``/reset`` closes without answering.
    ``requests``, ``peers`` and ``paths`` (path -> count, counted when a request arrives) say what
    it saw.
    """

    daemon_threads = True

    def __init__(self, name: str = "up") -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.name = name
        self.requests = 0
        self.big_sent = 0
        self.peers: set[tuple[str, int]] = set()
        self.paths: dict[str, int] = {}
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


__all__ = ["ProxyProcess", "UpstreamServer", "free_port", "pattern", "wait_port"]
