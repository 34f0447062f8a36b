"""Real Dubbo 2 peers for the conformance tests, and a relay that decodes (and may rewrite) frames.

Peers (installed by scripts/setup.d/21-dubbo-peers.sh into ``$SOFAMESH_CACHE``, default
``<repo>/.cache``): npm ``@dubbo.ts/provider`` 2.0.7 (peers/dubbo/provider.js) and npm
``dubbo2.js`` 2.3.9 DirectlyDubbo (peers/dubbo/consumer.js). Missing peers skip locally and fail
when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from sofamesh.testing import free_port

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
PEERS = Path(__file__).resolve().parent / "peers" / "dubbo"
NODE_MODULES = CACHE / "npm" / "dubbo" / "node_modules"
SERVICE = "com.sofamesh.demo.EchoService"


def require_dubbo_peers() -> None:
    """Skip (locally) or fail (under CI) when node or the npm peers are not installed."""
    marker = NODE_MODULES / "dubbo2.js" / "package.json"
    framework = [NODE_MODULES / "@dubbo.ts" / p for p in ("provider", "zookeeper")]
    if shutil.which("node") and marker.is_file() and all(d.is_dir() for d in framework):
        return
    msg = f"Dubbo peers not installed under {NODE_MODULES}: run scripts/setup.d/21-dubbo-peers.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(NODE_MODULES)}


def java(cls: str, value: object) -> dict[str, object]:
    """An argument in js-to-java form, as dubbo2.js sends it."""
    return {"$class": cls, "$": value}


def call(method: str, *args: dict[str, object], interface: str = SERVICE, version: str | None = "1.0.0",
         group: str | None = None, repeat: int = 1, attachments: dict[str, str] | None = None
         ) -> dict[str, Any]:
    return {"interface": interface, "version": version, "group": group, "method": method,
            "args": list(args), "repeat": repeat, "attachments": attachments}


class Provider:
    """``node provider.js`` bound to 127.0.0.1; stopped by its pid.

    With ``zookeeper`` (``host:port``), the provider publishes itself there through @dubbo.ts/zookeeper
    (interface ``interface``, ``version`` and ``group`` when given) on a free port. With ``nacos``
    (``host:port`` of a Nacos naming server) and ``nacos_modules`` (where npm nacos is installed), the
    npm nacos client registers it there the way Dubbo's NacosRegistry does, and deregisters it on stop."""

    def __init__(self, name: str = "p1", port: int = 0, timeout: float = 20.0, *, zookeeper: str | None = None,
                 nacos: str | None = None, nacos_modules: Path | None = None,
                 interface: str = SERVICE, version: str | None = None, group: str | None = None) -> None:
        self.name = name
        if zookeeper and not port:
            port = free_port()
        argv = ["node", str(PEERS / "provider.js"), "--name", name, "--port", str(port)]
        if zookeeper:
            argv += ["--zookeeper", zookeeper, "--interface", interface]
        if nacos:
            argv += ["--nacos", nacos, "--nacos-modules", str(nacos_modules), "--interface", interface]
        if zookeeper or nacos:
            argv += [*(["--version", version] if version else []), *(["--group", group] if group else [])]
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(argv, stdout=pipe, stderr=pipe, env=_env(), cwd=PEERS)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"provider {name} did not start within {timeout}s: {self.stderr()}")
        self.port = int(json.loads(line)["port"])
        self.address = f"127.0.0.1:{self.port}"

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def consume(
    target: str, calls: list[dict[str, Any]], timeout_s: int = 10, wall: float = 60.0
) -> list[dict[str, Any]]:
    """Run ``node consumer.js`` against ``target``; every call concurrently; results in call order."""
    for c in calls:
        c.setdefault("timeout_s", timeout_s)
    done = subprocess.run(["node", str(PEERS / "consumer.js"), target, json.dumps(calls)],
                          capture_output=True, env=_env(), cwd=PEERS, timeout=wall, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"consumer exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    out: list[dict[str, Any]] = json.loads(done.stdout)
    return out


# The calls every scenario makes (direct, relayed, proxied), and what each must return.
CALLS = [
    call("echo", java("java.lang.String", "héllo wörld 😀 " + "x" * 300)),
    call("add", java("int", 2), java("int", 40)),
    call("greet", java("java.util.HashMap", {"name": "bob", "n": 3})),
    call("greet", java("com.sofamesh.demo.Person", {"name": java("java.lang.String", "ann"),
                                                    "n": java("int", 5)})),
    call("concat", java("java.util.List", ["a", "b", "c"]), java("java.lang.String", "-")),
    call("whoami", group="g1"),
    call("nothing"),
    call("fail", java("java.lang.String", "boom")),
    call("whoami", interface="com.sofamesh.demo.Other", version=None),
]


def check_results(results: list[dict[str, object]], provider: str) -> None:
    echo, add, greet_map, greet_obj, concat, who, nothing, fail, other = results
    assert echo == {**echo, "ok": True, "res": "héllo wörld 😀 " + "x" * 300}
    assert (add["ok"], add["res"]) == (True, 42)
    assert greet_map["res"] == {"greeting": "hello bob", "name": "bob", "n": 3}
    assert greet_obj["res"] == {"greeting": "hello ann", "name": "ann", "n": 5}
    assert concat["res"] == "a-b-c"
    assert isinstance(who["res"], dict)
    assert (who["res"]["provider"], who["res"]["group"], who["res"]["version"]) == (provider, "g1", "1.0.0")
    assert (nothing["ok"], nothing["res"]) == (True, None)
    assert fail["ok"] is False and f"{provider}: boom" in str(fail["err"])
    assert isinstance(other["res"], dict) and other["res"]["interface"] == "com.sofamesh.demo.Other"


Transform = Callable[[bytes], tuple[bytes, bytes]]  # chunk -> (forward, answer back)


class Relay:
    """A loopback TCP relay in threads, one upstream connection per downstream connection.

    Records the bytes each way. ``down``/``up`` transforms (per connection, made by the factories)
    may rewrite what passes and answer locally; by default bytes pass untouched.
    """

    def __init__(self, upstream: tuple[str, int],
                 transforms: Callable[[], tuple[Transform, Transform]] | None = None) -> None:
        self.upstream = upstream
        self.transforms = transforms
        self.to_upstream = bytearray()
        self.to_downstream = bytearray()
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                down, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            up = socket.create_connection(self.upstream, timeout=5)
            self._conns += [down, up]
            t = threading.Thread(target=self._pump, args=(down, up), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, down: socket.socket, up: socket.socket) -> None:
        fwd, back = self.transforms() if self.transforms else (lambda b: (b, b""), lambda b: (b, b""))
        peers = {down: (up, fwd, self.to_upstream), up: (down, back, self.to_downstream)}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    other, transform, record = peers[s]
                    forward, answer = transform(data)
                    with self._lock:
                        record += forward
                    if forward:
                        other.sendall(forward)
                    if answer:
                        s.sendall(answer)
        except OSError:
            return
        finally:
            down.close()
            up.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for t in [self._accept, *self._threads]:
            t.join(5)
        for c in self._conns:
            c.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
