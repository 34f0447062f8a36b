"""Test helpers for sofamesh and for plugin authors: free ports, a proxy in a subprocess, a real
HTTP upstream. (The pytest fixture ``sofamesh_proxy`` is in ``sofamesh.pytest_plugin``.)

    from sofamesh.testing import free_port, ProxyProcess, UpstreamServer
    with UpstreamServer("up") as up, ProxyProcess({"listeners": [...], "clusters": [...]}) as proxy:
        proxy.admin_url, proxy.stats()

A proxy that answers every request but logs a traceback, or that exits non-zero (or has to be
killed) when it is stopped, fails the test: ``ProxyProcess.stop()`` raises ``ProxyFailed``. A test
that means to provoke a traceback or an exit code says so (``expect_tracebacks``, ``expect_exit``),
and then the stop fails if it did not happen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

_PORTS_FROM = 21000  # Dubbo's 20880 and its neighbours stay out
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``.

    It is taken below the kernel's ephemeral range, so neither an outgoing connection's local port
    nor another ``bind(port 0)`` can take it between now and the moment it is bound; each
    pytest-xdist worker draws from a slice of its own, and a process never hands the same port out
    twice."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    span = (low - _PORTS_FROM) // workers
    if span >= 200:
        first = _PORTS_FROM + (index % workers) * span
        for _ in range(200):
            port = random.randrange(first, first + span)
            if port in _handed_out:
                continue
            with socket.socket(family) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket(family) as s:  # no room below the ephemeral range: let the kernel choose
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


class _AdminPortTaken(RuntimeError):
    """The proxy exited at start because the admin port chosen for it was taken meanwhile."""


class ProxyFailed(AssertionError):
    """The proxy under test logged an unhandled exception or did not exit as expected."""


# What Python writes for an exception nobody handled: a logged exc_info or an uncaught one, an
# exception in __del__ or a callback ("Exception ignored in"), and an interpreter abort.
_CRASH_START = re.compile(r"^(Traceback \(most recent call last\):|Exception ignored in|Fatal Python error)", re.M)
# A line of our log format (cli._setup_logging: "%(asctime)s %(levelname)s %(name)s: ...").
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.M)
# A record that may carry exc_info (log.exception, asyncio's handler): its traceback follows its message.
_RECORD_WITH_EXC = re.compile(_LOG_LINE.pattern + r"\S* (WARNING|ERROR|CRITICAL) ", re.M)
# A report ends where the next log line, the "sofamesh: stopped" summary, or the next report that
# is not a chained exception's traceback (or an ignored exception's own) starts.
_REPORT_END = re.compile(_LOG_LINE.pattern + r"|^(sofamesh: |Exception ignored in|Fatal Python error)", re.M)


def crash_reports(log: str) -> list[str]:
    """Each unhandled exception in ``log``, from the log record that reported it (if one did)."""
    reports: list[str] = []
    pos = 0
    while (m := _CRASH_START.search(log, pos)) is not None:
        records = list(_LOG_LINE.finditer(log, pos, m.start()))
        logged = records and m.group(1).startswith("Traceback") and _RECORD_WITH_EXC.match(log, records[-1].start())
        start = records[-1].start() if logged else m.start()
        end = _REPORT_END.search(log, m.end())
        pos = end.start() if end is not None else len(log)
        reports.append(log[start:pos].rstrip())
    return reports


def judge(
    reports: Sequence[str], returncode: int | None, *, expect_tracebacks: Sequence[str] = (), expect_exit: int = 0
) -> list[str]:
    """Why a stopped proxy fails the test, given its crash reports and exit code; [] when it does not.

    A report fails unless it contains one of ``expect_tracebacks``, and each of those must be in
    some report. The exit code must be ``expect_exit`` (``None``, still running, fails)."""
    problems: list[str] = []
    if returncode is None:
        problems.append("the proxy was still running when it was checked")
    elif returncode != expect_exit:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with {returncode}"
        problems.append(f"the proxy {how}, expected exit {expect_exit}")
    for report in reports:
        if not any(e in report for e in expect_tracebacks):
            problems.append(f"the proxy logged an unhandled exception:\n{report}")
    for e in expect_tracebacks:
        if not any(e in report for report in reports):
            problems.append(f"the proxy logged no traceback containing {e!r}, as the test expected")
    return problems


def log_problems(
    log: str, returncode: int | None, *, expect_tracebacks: Sequence[str] = (), expect_exit: int = 0
) -> list[str]:
    """``judge`` of a proxy's whole output (stdout and stderr) and exit code."""
    return judge(crash_reports(log), returncode, expect_tracebacks=expect_tracebacks, expect_exit=expect_exit)


class ProxyProcess:
    """``sofamesh proxy -c <tmp file>`` in a subprocess; ready when its admin /ready says so.

    ``stop()`` (and leaving the ``with`` block) fails with ``ProxyFailed`` when the proxy logged a
    traceback not matched by ``expect_tracebacks`` or exited with another code than ``expect_exit``
    (see ``log_problems``)."""

    def __init__(
        self,
        config: dict[str, Any] | str,
        *,
        args: tuple[str, ...] = (),
        timeout: float = 15.0,
        env: dict[str, str] | None = None,
        python: str | None = None,
        expect_tracebacks: Sequence[str] = (),
        expect_exit: int = 0,
    ) -> None:
        if isinstance(config, str):
            config = yaml.safe_load(config) or {}
        config = dict(config)
        self._own_admin_port = config.get("admin", {}) is not None and "address" not in (config.get("admin") or {})
        if self._own_admin_port:
            config["admin"] = {**(config.get("admin") or {}), "address": f"127.0.0.1:{free_port()}"}
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
        self.expect_tracebacks = tuple(expect_tracebacks)
        self.expect_exit = expect_exit
        self._reported = False
        self._ignored_sigterm: float | None = None

    @property
    def admin_url(self) -> str:
        return f"http://{self.config['admin']['address']}"

    def start(self) -> ProxyProcess:
        for attempt in range(3):
            try:
                return self._start()
            except _AdminPortTaken:
                if attempt == 2 or not self._own_admin_port:
                    raise
                self.config["admin"] = {**self.config["admin"], "address": f"127.0.0.1:{free_port()}"}
                self._dir = tempfile.TemporaryDirectory(prefix="sofamesh-test-")
                self.config_path = Path(self._dir.name) / "proxy.yaml"
                self.log_path = Path(self._dir.name) / "proxy.log"
                self.final_log = None
        raise AssertionError("unreachable")

    def _start(self) -> ProxyProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = open(self.log_path, "wb")
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            [*self.python, "-m", "sofamesh", "proxy", "-c", str(self.config_path), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop(check=False)
                admin = self.config["admin"]["address"] if self.config.get("admin") else None
                log = self.log()
                if admin and "address already in use" in log and f", {admin.rsplit(':', 1)[1]})" in log:
                    raise _AdminPortTaken(f"the admin port {admin} was taken:\n{self.log()}")
                raise RuntimeError(f"sofamesh proxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/ready", timeout=0.5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop(check=False)
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

    def stop(self, timeout: float = 15.0, *, check: bool = True) -> int:
        """SIGTERM, wait (bounded), SIGKILL if needed. Returns the exit code; with ``check``, raises
        ``ProxyFailed`` first if the proxy's log or exit code says it failed (once per proxy)."""
        p = self.proc
        if p is None:
            return 0
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._ignored_sigterm = timeout
                os.killpg(p.pid, signal.SIGKILL)  # its own session: workers too
                p.wait(5)
        if self.final_log is None:
            self.final_log = self.log()
            self._dir.cleanup()
        if check:
            self.check()
        return int(p.returncode)

    def problems(self) -> list[str]:
        """``log_problems`` of this (stopped) proxy, and whether it ignored SIGTERM."""
        assert self.proc is not None
        out = log_problems(
            self.log(), self.proc.poll(), expect_tracebacks=self.expect_tracebacks, expect_exit=self.expect_exit
        )
        if self._ignored_sigterm is not None:
            out.insert(0, f"the proxy did not stop within {self._ignored_sigterm} s of SIGTERM")
        return out

    def check(self) -> None:
        """Raise ``ProxyFailed`` with the proxy's log if ``problems()`` (once per proxy)."""
        if self._reported or self.proc is None:
            return
        problems = self.problems()
        if problems:
            self._reported = True
            raise ProxyFailed(
                "\n".join(
                    [
                        f"sofamesh proxy {self.config_path.name} (pid {self.proc.pid}):",
                        *problems,
                        "--- its log ---",
                        self.log(),
                    ]
                )
            )

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if ev is None:
            self.stop()
            return
        self.stop(check=False)  # the test already failed: say what the proxy did, and keep that failure
        try:
            self.check()
        except ProxyFailed as exc:
            ev.add_note(str(exc))


class _ExceptionRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reports: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.reports.append(self.format(record))


@contextmanager
def no_logged_tracebacks(expect: Sequence[str] = ()) -> Iterator[list[str]]:
    """For a proxy run in this process (a ``Server`` on the test's own loop), the rule of
    ``ProxyProcess.stop``: a record logged with an exception inside the block (asyncio's "Exception
    in callback", a ``log.exception``) fails it with ``ProxyFailed`` unless it contains one of
    ``expect``, and each of ``expect`` must have been logged. Yields the reports seen so far."""
    handler = _ExceptionRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.reports
    finally:
        root.removeHandler(handler)
    problems = judge(handler.reports, 0, expect_tracebacks=expect)
    if problems:
        raise ProxyFailed("\n".join(problems))


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
        self.server.per_peer[self.client_address] = self.server.per_peer.get(self.client_address, 0) + 1
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
        self.per_peer: dict[tuple[str, int], int] = {}  # GET requests per client connection
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


__all__ = [
    "ProxyFailed",
    "ProxyProcess",
    "UpstreamServer",
    "crash_reports",
    "free_port",
    "judge",
    "log_problems",
    "no_logged_tracebacks",
    "pattern",
    "wait_port",
]
