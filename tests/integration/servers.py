"""Real third-party servers for integration tests (Debian Prometheus, redis-server), started on free
127.0.0.1 ports and stopped by pid. Installed by scripts/setup.d/40-mixer-servers.sh."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from sofamesh.testing import free_port, wait_port


def require_binary(name: str) -> str:
    """The path of ``name``; without it the test fails under CI and skips locally."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (scripts/setup.d/40-mixer-servers.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class _Process:
    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="sofamesh-srv-")
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str]) -> None:
        log = open(Path(self.dir.name) / "server.log", "wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()

    def log(self) -> str:
        try:
            return (Path(self.dir.name) / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.dir.cleanup()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class PrometheusServer(_Process):
    """Debian's ``prometheus`` scraping ``targets`` (host:port) at ``metrics_path`` every second."""

    def __init__(self, targets: list[str], metrics_path: str = "/metrics") -> None:
        super().__init__()
        self.port = free_port()
        self.targets = targets
        self.metrics_path = metrics_path

    def __enter__(self) -> PrometheusServer:
        binary = require_binary("prometheus")
        d = Path(self.dir.name)
        (d / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "sidecar", "metrics_path": self.metrics_path,
                                "static_configs": [{"targets": self.targets}]}]}))
        self._spawn([binary, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"])
        wait_port("127.0.0.1", self.port, 15)
        deadline = time.monotonic() + 30
        while True:  # the port opens before the TSDB is up: /-/ready says 503 until then
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after 30 s:\n{self.log()}")
            time.sleep(0.1)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query_until(self, query: str, timeout: float = 25.0) -> list[dict[str, Any]]:
        """Poll the query API until ``query`` has a result (first samples take ~5 s to appear)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.api("query", query=query)["data"]["result"]
            except urllib.error.HTTPError as exc:
                if exc.code != 503:
                    raise
                result = []  # still starting up under load
            if result:
                return list(result)
            time.sleep(0.5)
        targets = self.api("targets")["data"]["activeTargets"]
        raise AssertionError(f"no result for {query!r} after {timeout} s; targets: {targets}\n{self.log()}")


class RedisServer(_Process):
    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RedisServer:
        binary = require_binary("redis-server")
        self._spawn([binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir.name,
                     "--save", "", "--appendonly", "no", "--daemonize", "no"])
        wait_port("127.0.0.1", self.port, 10)
        return self
