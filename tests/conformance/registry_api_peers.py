"""Real clients of the Eureka, Nacos and Consul registry APIs, driven from tests: PyPI
py-eureka-client and py-consul (tests/conformance/peers/registry_apis/py_clients.py in their own
venv) and npm nacos (nacos_client.js). Installed by scripts/setup.d/37-registry-api-peers.sh; a
missing client skips locally and fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.sofaregistry_peers import RegistryClient

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
VENV_PYTHON = CACHE / "venv-registry-apis" / "bin" / "python"
NODE_MODULES = CACHE / "npm" / "registry-apis" / "node_modules"
PEERS = Path(__file__).resolve().parent / "peers" / "registry_apis"


def require_clients() -> None:
    missing = []
    if not VENV_PYTHON.exists():
        missing.append(str(VENV_PYTHON))
    if not (NODE_MODULES / "nacos" / "package.json").exists() or not shutil.which("node"):
        missing.append(str(NODE_MODULES / "nacos"))
    if not missing:
        return
    msg = f"registry API clients not installed ({', '.join(missing)}): run scripts/setup.d/37-registry-api-peers.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


class Client(RegistryClient):
    """One client process registering one instance; JSON-line commands in, events out (the
    SOFARegistry client's driver protocol, whose event pump and waits it shares)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._err = log.open("ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_for(lambda e: e["event"] == "ready", 30, "client ready")

    @classmethod
    def python(cls, kind: str, server: str, name: str, iid: str, port: int, version: str, log: Path) -> Client:
        return cls([str(VENV_PYTHON), str(PEERS / "py_clients.py"), kind, server, name, iid, str(port), version],
                   log)

    @classmethod
    def nacos(cls, server: str, service: str, port: int, version: str, log: Path) -> Client:
        return cls(["node", str(PEERS / "nacos_client.js"), str(NODE_MODULES), server, service, str(port), version],
                   log)

    def ask(self, timeout: float = 15, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.wait_for(lambda e: e["event"] in (cmd["cmd"], "error"), timeout, f"answer to {cmd}")

    def die(self) -> None:
        """Exit without deregistering: the instance's lease must lapse on its own."""
        self.send(cmd="die")
        self.proc.wait(10)
        self._err.close()

    def close(self) -> None:
        """End of stdin: the client deregisters and exits; killed after 10 s."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()
        if not self._err.closed:
            self._err.close()
