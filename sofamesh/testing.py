"""Test helpers for sofamesh and for plugin authors: free ports and a proxy in a subprocess.

    from sofamesh.testing import free_port, ProxyProcess
    with ProxyProcess({"listeners": [...], "clusters": [...]}) as proxy:
        proxy.admin_url, proxy.stats()
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

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
                 env: dict[str, str] | None = None) -> None:
        if isinstance(config, str):
            config = yaml.safe_load(config) or {}
        config = dict(config)
        if config.get("admin", {}) is not None and "address" not in (config.get("admin") or {}):
            config["admin"] = {"address": f"127.0.0.1:{free_port()}"}
        self.config = config
        self.args = args
        self.timeout = timeout
        self.env = env
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
            [sys.executable, "-m", "sofamesh", "proxy", "-c", str(self.config_path), *self.args],
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


__all__ = ["ProxyProcess", "free_port", "wait_port"]
