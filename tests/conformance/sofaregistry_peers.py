"""The real SOFARegistry client (npm sofa-registry-node 0.0.1) driven from tests, and a Pilot serving it.

Installed by scripts/setup.d/36-sofaregistry-peers.sh into ``$SOFAMESH_CACHE/npm/sofa-registry``.
A missing client skips locally and fails when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
NODE_MODULES = CACHE / "npm" / "sofa-registry" / "node_modules"
CLIENT_JS = Path(__file__).resolve().parent / "peers" / "sofaregistry" / "client.js"


def require_registry_client() -> None:
    if (NODE_MODULES / "sofa-registry-node" / "package.json").exists() and shutil.which("node"):
        return
    msg = f"sofa-registry-node not installed at {NODE_MODULES}: run scripts/setup.d/36-sofaregistry-peers.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


class RegistryClient:
    """One ``sofa-registry-node`` RegistryClient process (client.js); stopped by pid."""

    def __init__(self, http_port: int, app: str, log: Path) -> None:
        self.log = log
        self._err = log.open("ab")
        self.proc = subprocess.Popen(
            ["node", str(CLIENT_JS), str(NODE_MODULES), "127.0.0.1", str(http_port), app],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.wait_for(lambda e: e["event"] == "ready", 20, "client ready")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"{"):  # the client library logs plain lines to stdout too
                self.events.put(json.loads(line))

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def wait_for(self, pred: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(ev)
            if pred(ev):
                return ev
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; saw {seen}; "
                             f"stderr: {self.log.read_text()[-2000:]}")

    def close(self) -> None:
        """Close stdin (the script then closes the client and exits); kill it after 5 s."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._thread.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()
