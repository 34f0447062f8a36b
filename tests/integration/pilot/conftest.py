"""Fixtures for Pilot integration tests: a Pilot process on free ports, gRPC and HTTP backends."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from sofamesh.testing import free_port

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("SOFAMESH_CACHE", REPO / ".cache"))


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; only the process we started, by its pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class PilotProcess:
    """``python -m sofamesh.pilot`` in quick mode on free ports; stopped by pid."""

    def __init__(self, data_dir: Path, debounce_ms: int = 50, xds_port: int = 0, api_port: int = 0,
                 config: dict[str, Any] | None = None, ready_timeout: float = 45.0, transport: str = "grpcio") -> None:
        self.data_dir = data_dir
        self.transport = transport  # xds.transport: grpcio or native
        self.ready_timeout = ready_timeout  # several Pilots starting on a loaded 2-core machine need more
        self.config = config  # a config file's content (-c); the quick flags above override it
        self.xds_port = xds_port or free_port()
        self.api_port = api_port or free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.debounce_ms = debounce_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"pilot-{self.api_port}.log"

    def start(self) -> PilotProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        extra: list[str] = []
        if self.config is not None:
            cfg = self.data_dir.parent / f"pilot-{self.api_port}.json"
            cfg.write_text(json.dumps(self.config))
            extra = ["-c", str(cfg)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sofamesh", "pilot", *extra, "--xds", f"127.0.0.1:{self.xds_port}",
                 "--api", f"127.0.0.1:{self.api_port}", "--data-dir", str(self.data_dir),
                 "--debounce-ms", str(self.debounce_ms), "--max-delay-ms", "500", "--xds-transport", self.transport],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pilot exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(self.api_url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()  # a Pilot that never became ready is stopped here: no fixture would stop it
        raise AssertionError(f"pilot not ready in {self.ready_timeout:g}s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    @property
    def admin_token_file(self) -> Path:
        """Pilot's admin token (``<data_dir>/admin-token``), which minting and root rotation ask for."""
        configured = (self.config or {}).get("admin_token_file")
        return Path(configured) if configured else self.data_dir / "admin-token"

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token_file.read_text().strip()}"}

    def get(self, path: str) -> Any:
        r = httpx.get(self.api_url + path, timeout=5)
        r.raise_for_status()
        return r.json()

    def register(self, service: str, instance_id: str, **body: Any) -> dict[str, Any]:
        r = httpx.put(f"{self.api_url}/v1/services/{service}/instances/{instance_id}", json=body, timeout=5)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def deregister(self, service: str, instance_id: str) -> None:
        r = httpx.delete(f"{self.api_url}/v1/services/{service}/instances/{instance_id}", timeout=5)
        assert r.status_code == 200, r.text


# The tests that exercise what carries the xDS streams (Envoy SotW and delta, proxyless gRPC, the TLS
# port, replicas, sidecars through a restart) run on both xDS transports; the rest on the default.
XDS_TRANSPORTS = ["grpcio", "native"]


def on_both_transports(metafunc: pytest.Metafunc) -> None:
    """A test module's ``pytest_generate_tests``: its tests on the ``pilot`` fixture run on both transports."""
    if "pilot" in metafunc.fixturenames:
        metafunc.parametrize("pilot", XDS_TRANSPORTS, indirect=True)


@pytest.fixture
def pilot(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PilotProcess]:
    p = PilotProcess(tmp_path / "data", transport=getattr(request, "param", "grpcio")).start()
    try:
        yield p
    finally:
        p.stop()


class GrpcBackend:
    """A gRPC server answering ``/sofamesh.test.Who/Name`` with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def who(request: bytes, context: Any) -> bytes:
            self.calls += 1
            return name.encode()

        handler = grpc.method_handlers_generic_handler(
            "sofamesh.test.Who", {"Name": grpc.unary_unary_rpc_method_handler(who)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait(5)


@pytest.fixture
def grpc_backends() -> Iterator[list[GrpcBackend]]:
    backends = [GrpcBackend("b1"), GrpcBackend("b2")]
    try:
        yield backends
    finally:
        for b in backends:
            b.stop()


class LineReader:
    """Reads a child's stdout lines on a thread so the test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line.decode(errors="replace").rstrip("\n"))

        self._stream = stream
        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Call after the child exited: the pump sees EOF, then the pipe is closed."""
        self._thread.join(timeout=5)
        self._stream.close()

    def next_json(self, timeout: float) -> dict[str, Any]:
        return dict(json.loads(self.lines.get(timeout=timeout)))

    def drain(self) -> None:
        while True:
            try:
                self.lines.get_nowait()
            except queue.Empty:
                return
