"""Real ZooKeeper (Debian ``zookeeper``, run with java directly) and etcd (Debian ``etcd-server``)
servers on free 127.0.0.1 ports, for the registry plugin tests. Installed by
scripts/setup.d/35-registry-servers.sh; missing servers skip locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.plugins.registries.served import ServedRegistry
from sofamesh.testing import free_port

ZK_JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar")


def _require(ok: bool, what: str) -> None:
    if ok:
        return
    msg = f"{what} is not installed: run scripts/setup.d/35-registry-servers.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


class _Server:
    proc: subprocess.Popen[bytes] | None = None
    log: Path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def _spawn(self, argv: list[str]) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _died(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{type(self).__name__} exited: {self.log.read_text()[-2000:]}")


class ZooKeeperServer(_Server):
    """A standalone ZooKeeper; ``restart()`` keeps its data directory (and so its sessions)."""

    def __init__(self, workdir: Path) -> None:
        _require(all(Path(j).is_file() for j in ZK_JARS) and shutil.which("java") is not None, "ZooKeeper")
        self.dir = workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "zk.log"
        (workdir / "zoo.cfg").write_text(
            f"tickTime=500\ndataDir={workdir / 'data'}\nclientPort={self.port}\nclientPortAddress=127.0.0.1\n"
            "maxClientCnxns=0\nadmin.enableServer=false\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n"
            "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,envi,conf\n")

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self._spawn(["java", "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                     "-cp", ":".join(ZK_JARS), "org.apache.zookeeper.server.ZooKeeperServerMain",
                     str(self.dir / "zoo.cfg")])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._died()
            if "Mode: standalone" in self._four_letter("srvr"):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ZooKeeper not ready in {timeout}s: {self.log.read_text()[-2000:]}")

    def _four_letter(self, cmd: str) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                s.sendall(cmd.encode())
                chunks = []
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    chunks.append(chunk)
                return b"".join(chunks).decode(errors="replace")
        except OSError:
            return ""

    def restart(self) -> None:
        self.stop()
        self.start()


class EtcdServer(_Server):
    def __init__(self, workdir: Path) -> None:
        _require(shutil.which("etcd") is not None, "etcd")
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.peer_port = free_port()
        self.log = workdir / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._spawn(["etcd", "--name", "test", "--data-dir", str(self.dir / "data"),
                     "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                     "--initial-cluster", f"test={peer}", "--initial-cluster-state", "new",
                     "--unsafe-no-fsync", "--log-level", "warn", "--logger", "zap"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._died()
            try:
                if httpx.get(f"{self.endpoint}/health", timeout=2).json().get("health") == "true":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"etcd not ready in {timeout}s: {self.log.read_text()[-2000:]}")


class PilotWithConfig(_Server):
    """``python -m sofamesh pilot -c <yaml>`` on free ports; stopped by pid."""

    def __init__(self, workdir: Path, registries: list[dict[str, Any]], sync: dict[str, Any] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.log = workdir / "pilot.log"
        self.xds_port = free_port()
        config = {"xds": {"address": f"127.0.0.1:{self.xds_port}"}, "api": {"address": f"127.0.0.1:{self.api_port}"},
                  "data_dir": str(workdir / "data"), "registries": registries,
                  "debounce": {"quiet_ms": 20, "max_delay_ms": 200}, "grace_s": 1}
        if sync is not None:
            config["sync"] = sync
        self.config_path = workdir / "pilot.yaml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML

    def start(self, timeout: float = 30.0) -> None:
        self._spawn([sys.executable, "-m", "sofamesh", "pilot", "-c", str(self.config_path)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._died()
            try:
                if httpx.get(self.api_url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pilot not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def get(self, path: str) -> Any:
        resp = httpx.get(self.api_url + path, timeout=5)
        resp.raise_for_status()
        return resp.json()

    def registry_view(self) -> dict[str, dict[str, dict[str, Any]]]:
        """registry name -> service -> instance id -> instance, from /debug/registry."""
        doc = self.get("/debug/registry")
        return {r["name"]: {s: {i["id"]: i for i in insts} for s, insts in r["services"].items() if insts}
                for r in doc["registries"]}


def serve_api(
    registry: ServedRegistry, body: Callable[[httpx.AsyncClient], Awaitable[None]], timeout: float = 60.0
) -> None:
    """Start ``registry`` (a served registry API on its own port, in this process), run ``body`` with an
    HTTP client of it, stop it; all within ``timeout`` seconds."""

    async def main() -> None:
        await registry.start(registry.mesh.refresh)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{registry.port}", timeout=30) as http:
                await body(http)
        finally:
            await registry.stop()

    asyncio.run(asyncio.wait_for(main(), timeout))


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` every 0.1 s until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """``wait_for`` for a coroutine: poll every 0.05 s without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    """A ZooKeeper server for one test."""
    server = ZooKeeperServer(tmp_path / "zk")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd server for one test."""
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    yield server
    server.stop()
