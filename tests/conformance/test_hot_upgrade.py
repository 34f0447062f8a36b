"""Hot upgrade (docs/upgrade.md) with real clients: HTTP/1.1 keep-alive, wrk, sofa-rpc-node and
anthunder (Bolt), dubbo2.js (Dubbo) and grpcio keep calling while the sidecar is replaced by a new
process, again and again. No call fails, no client reconnects (the same local ports throughout, and
the sidecar's connection total does not move), each new process answers, and each old one exits 0
with its report. Also: xDS-fed sidecars, --workers, HTTP/2 GOAWAY, successors that die."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.conformance.bolt_peers import ANTHUNDER_PY, CACHE, anthunder_listener, node_provider, require_anthunder
from tests.conformance.bolt_peers import PEERS as BOLT_PEERS
from tests.conformance.dubbo_peers import NODE_MODULES as DUBBO_MODULES
from tests.conformance.dubbo_peers import PEERS as DUBBO_PEERS
from tests.conformance.dubbo_peers import SERVICE, Provider, require_dubbo_peers

BOLT_SERVICE = "com.sofamesh.upgrade.EchoService"
ANTHUNDER_SERVICE = "com.sofamesh.upgrade.AnthunderEcho"


class Sidecar:
    """One sidecar's successive processes: the first serves the upgrade socket, each next one is
    started with ``--hot-upgrade`` and takes over."""

    def __init__(self, config: dict[str, Any], sock: Path) -> None:
        self.config = {**config, "admin": {"address": f"127.0.0.1:{free_port()}"}}
        self.sock = str(sock)
        self.current = ProxyProcess(self.config, args=("--upgrade-socket", self.sock)).start()
        self.reports: list[str] = []
        self.stats: list[tuple[dict[str, Any], dict[str, Any]]] = []  # /stats before and after each upgrade

    def totals_continued(self) -> list[str]:
        """Counters that went down across an upgrade (each new process continues the old one's)."""
        down = []
        for before, after in self.stats:
            for kind, key in (("listeners", "downstream_rq_total"), ("listeners", "downstream_rq_2xx"),
                              ("clusters", "upstream_rq_total"), ("clusters", "upstream_cx_total"),
                              ("rpc", "requests")):
                for name, b in before[kind].items():
                    a = after[kind].get(name, {})
                    if a.get(key, 0) < b[key]:
                        down.append(f"{kind} {name} {key}: {b[key]} -> {a.get(key)}")
            for name, b in before["listeners"].items():
                if after["listeners"][name]["latency"]["count"] < b["latency"]["count"]:
                    down.append(f"listener {name} latency count went down")
            for name, b in before["clusters"].items():
                if after["clusters"][name]["upstream_rq_time"]["count"] < b["upstream_rq_time"]["count"]:
                    down.append(f"cluster {name} upstream_rq_time count went down")
        return down

    def admin(self, path: str) -> dict[str, Any]:
        url = f"http://{self.config['admin']['address']}{path}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return dict(json.loads(r.read()))

    def upgrade(self) -> None:
        old = self.current
        before = self.admin("/stats")
        new = ProxyProcess(self.config, args=("--upgrade-socket", self.sock, "--hot-upgrade")).start()
        assert new.proc is not None and old.proc is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the admin port moves too: the new pid answers it
            state = self.admin("/hot_upgrade")
            if state["pid"] == new.proc.pid and state["phase"] == "serving" and old.proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no take-over within 20 s: {state}\n--- old ---\n{old.log()}\n--- new ---\n{new.log()}")
        assert old.stop() == 0  # it exited by itself, with no traceback in its log
        report = re.search(r"sofamesh: handed over to pid (\d+): (.*)", old.log())
        assert report is not None, old.log()
        assert int(report.group(1)) == new.proc.pid
        self.reports.append(report.group(2))
        self.current = new
        self.stats.append((before, self.admin("/stats")))

    def stop(self) -> None:
        self.current.stop()


class KeepAliveClients:
    """Threads each calling through one HTTP/1.1 keep-alive connection, recording the local port of
    every call and every failure."""

    def __init__(self, port: int, n: int, host: str | None = None) -> None:
        self.port = port
        self.headers = {"Host": host} if host else {}
        self.ok = 0
        self.failures: list[str] = []
        self.ports: list[set[int]] = [set() for _ in range(n)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", f"/hello?c={i}", headers=self.headers)
                r = conn.getresponse()
                r.read()
                assert conn.sock is not None
                self.ports[i].add(conn.sock.getsockname()[1])
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {r.status}")
            except Exception as exc:  # every failure is what the test reports
                self.failures.append(repr(exc))
                conn.close()
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


class Wrk:
    """wrk (HTTP/1.1 keep-alive, ``CONNECTIONS`` connections) until ``finish`` stops it (SIGINT: it
    prints its summary, with ``Socket errors`` when a connection failed or closed)."""

    def __init__(self, port: int, connections: int) -> None:
        self.proc = subprocess.Popen(["wrk", "-t1", f"-c{connections}", "-d120s", f"http://127.0.0.1:{port}/wrk"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def finish(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return out.decode(errors="replace")


class NodeLoad:
    """A node client under continuous load (``steady.js``) until its stdin closes."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""
        assert line.strip() == b"READY", f"{argv[:2]} did not start: {line!r}"

    def finish(self) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=30)  # closes its stdin: the client stops
        assert self.proc.returncode == 0, err.decode(errors="replace")
        return dict(json.loads(out.decode().strip().splitlines()[-1]))


def client_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of ``pid``'s established TCP connections to ``server_port`` (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                if inode in inodes and state == "01" and int(remote.rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def sidecar_config(http_upstream: str, bolt_upstream: str, dubbo_upstream: str,
                   anthunder_upstream: str) -> tuple[dict[str, Any], dict[str, int]]:
    ports = {"web": free_port(), "bolt": free_port(), "dubbo": free_port(), "anthunder": free_port()}
    config = {
        "drain_timeout_ms": 10000,
        "listeners": [
            {"name": "web", "address": f"127.0.0.1:{ports['web']}", "protocols": ["http1"],
             "routes": [{"name": "all", "cluster": "web"}]},
            {"name": "bolt", "address": f"127.0.0.1:{ports['bolt']}", "protocols": ["bolt"],
             "routes": [{"name": "all", "cluster": "bolt", "timeout_ms": 5000}]},
            {"name": "dubbo", "address": f"127.0.0.1:{ports['dubbo']}", "protocols": ["dubbo"],
             "routes": [{"match": {"service": SERVICE}, "cluster": "dubbo", "timeout_ms": 5000}]},
            {"name": "anthunder", "address": f"127.0.0.1:{ports['anthunder']}", "protocols": ["bolt"],
             "routes": [{"name": "all", "cluster": "anthunder", "timeout_ms": 5000}]},
        ],
        "clusters": [
            {"name": "web", "endpoints": [http_upstream]},
            {"name": "bolt", "protocol": "bolt", "endpoints": [bolt_upstream]},
            {"name": "dubbo", "endpoints": [dubbo_upstream]},
            {"name": "anthunder", "protocol": "bolt", "endpoints": [anthunder_upstream]},
        ],
    }
    return config, ports


def web_config(upstream: str) -> tuple[dict[str, Any], int]:
    port = free_port()
    return {"listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                           "routes": [{"name": "all", "cluster": "web"}]}],
            "clusters": [{"name": "web", "endpoints": [upstream]}]}, port


def test_five_upgrades_under_load_fail_no_call_and_move_every_connection(tmp_path: Path) -> None:
    require_dubbo_peers()
    require_anthunder()
    with UpstreamServer() as web, node_provider(BOLT_SERVICE, "B") as bolt_provider, Provider() as dubbo_provider, \
            anthunder_listener(ANTHUNDER_SERVICE, "A") as anthunder_provider:
        config, ports = sidecar_config(web.address, bolt_provider.address, dubbo_provider.address,
                                       f"127.0.0.1:{anthunder_provider.port}")
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        try:
            http_load = KeepAliveClients(ports["web"], 4)
            wrk = Wrk(ports["web"], 2)
            bolt_load = NodeLoad(["node", str(BOLT_PEERS / "steady.js"), f"127.0.0.1:{ports['bolt']}", BOLT_SERVICE, "4"],
                                 BOLT_PEERS, {"SOFAMESH_CACHE": str(CACHE)})
            dubbo_load = NodeLoad(["node", str(DUBBO_PEERS / "steady.js"), f"127.0.0.1:{ports['dubbo']}", "4"],
                                  DUBBO_PEERS, {"NODE_PATH": str(DUBBO_MODULES)})
            anthunder_load = NodeLoad([str(ANTHUNDER_PY), str(BOLT_PEERS / "anthunder_steady.py"),
                                       f"127.0.0.1:{ports['anthunder']}", ANTHUNDER_SERVICE, "4"], BOLT_PEERS, {})
            time.sleep(1.0)
            before = {n: s["downstream_cx_total"] for n, s in sidecar.admin("/stats")["listeners"].items()}
            bolt_ports = client_ports(bolt_load.proc.pid, ports["bolt"])
            dubbo_ports = client_ports(dubbo_load.proc.pid, ports["dubbo"])
            anthunder_ports = client_ports(anthunder_load.proc.pid, ports["anthunder"])
            assert len(bolt_ports) == 1 and len(dubbo_ports) == 1 and len(anthunder_ports) == 1
            pids = set()
            for _ in range(5):
                sidecar.upgrade()
                assert sidecar.current.proc is not None
                pids.add(sidecar.current.proc.pid)
                time.sleep(0.3)
            after = {n: s["downstream_cx_total"] for n, s in sidecar.admin("/stats")["listeners"].items()}
            assert client_ports(bolt_load.proc.pid, ports["bolt"]) == bolt_ports
            assert client_ports(dubbo_load.proc.pid, ports["dubbo"]) == dubbo_ports
            assert client_ports(anthunder_load.proc.pid, ports["anthunder"]) == anthunder_ports
            http_load.stop()
            wrk_out = wrk.finish()
            bolt = bolt_load.finish()
            dubbo = dubbo_load.finish()
            anthunder = anthunder_load.finish()
        finally:
            sidecar.stop()
    assert len(pids) == 5
    assert http_load.failures == [] and http_load.ok > 0
    assert [len(p) for p in http_load.ports] == [1, 1, 1, 1]  # each client kept its one connection
    assert bolt["failed"] == 0 and bolt["ok"] > 0, bolt
    assert dubbo["failed"] == 0 and dubbo["ok"] > 0, dubbo
    assert anthunder["failed"] == 0 and anthunder["ok"] > 0, anthunder
    assert after == before  # a moved connection is not a new one
    assert sidecar.reports == ["4 listener(s), 9 connection(s) moved, 0 drained, 0 cut"] * 5
    requests = re.search(r"(\d+) requests in", wrk_out)
    assert requests is not None and int(requests.group(1)) > 0, wrk_out
    assert "Socket errors" not in wrk_out and "Non-2xx" not in wrk_out, wrk_out  # no close, no error
    # cluster, listener and RPC totals continue in each new process (gauges start afresh)
    assert sidecar.totals_continued() == []
    last = sidecar.stats[-1][1]
    assert {k.split("|")[1] for k in last["rpc"]} == {"bolt", "dubbo"} and all(
        r["requests"] > 0 for r in last["rpc"].values())
    assert last["clusters"]["bolt"]["upstream_cx_total"] >= 6  # each process opened its own to the provider


def test_an_upgrade_that_cannot_start_is_refused_and_the_old_process_keeps_serving(tmp_path: Path) -> None:
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        try:
            first = sidecar.admin("/hot_upgrade")["pid"]
            load = KeepAliveClients(port, 2)
            time.sleep(0.3)
            # a config that does not load: refused before it reaches the running process
            bad = tmp_path / "bad.yaml"
            bad.write_text(json.dumps({**sidecar.config, "clusters": []}))
            refused = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(bad), "--upgrade-socket",
                                      sidecar.sock, "--hot-upgrade"], capture_output=True, text=True, timeout=60)
            assert refused.returncode == 2 and "unknown cluster" in refused.stderr.lower(), refused.stderr
            # a config that loads but cannot start (a port someone else holds): the old process had
            # handed its sockets over, heard that the new one failed, and never stopped accepting
            with socket.socket() as held:
                held.bind(("127.0.0.1", 0))
                held.listen()
                busy = {**sidecar.config, "listeners": [*sidecar.config["listeners"], {
                    "name": "extra", "address": f"127.0.0.1:{held.getsockname()[1]}", "protocols": ["http1"],
                    "routes": [{"name": "all", "cluster": "web"}]}]}
                bad.write_text(json.dumps(busy))
                failed = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(bad), "--upgrade-socket",
                                         sidecar.sock, "--hot-upgrade"], capture_output=True, text=True, timeout=60)
            assert failed.returncode == 2 and "cannot listen" in failed.stderr, failed.stderr
            assert "hot upgrade abandoned" in failed.stderr
            time.sleep(0.3)
            state = sidecar.admin("/hot_upgrade")
            assert (state["pid"], state["phase"]) == (first, "serving")
            assert "did not take over" in sidecar.current.log()
            sidecar.upgrade()  # and a good upgrade still works afterwards
            time.sleep(0.3)
            load.stop()
        finally:
            sidecar.stop()
    assert load.failures == [] and load.ok > 0
    assert [len(p) for p in load.ports] == [1, 1]
    assert sidecar.reports == ["1 listener(s), 2 connection(s) moved, 0 drained, 0 cut"]


def _wait_gone(pid: int, timeout: float = 20.0) -> None:
    """Until ``pid`` has exited (a zombie left for a parent that is not us counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still runs after {timeout} s")


def test_admin_post_and_sigusr2_start_the_successor_themselves(tmp_path: Path) -> None:
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        load = KeepAliveClients(port, 2)
        newest = 0
        try:
            first = sidecar.current
            assert first.proc is not None
            url = f"http://{sidecar.config['admin']['address']}/hot_upgrade"
            started = _post_upgrade_twice(url)
            assert first.proc.wait(20) == 0  # its config file (in its temp dir) stays for the successors
            assert f"sofamesh: handed over to pid {started}: 1 listener(s), 2 connection(s) moved" in first.log()
            _wait_for(lambda: sidecar.admin("/hot_upgrade") == {**sidecar.admin("/hot_upgrade"), "pid": started,
                                                                 "phase": "serving"})
            os.kill(started, signal.SIGUSR2)  # the successor, a child of the first process, does it again
            _wait_for(lambda: sidecar.admin("/hot_upgrade")["pid"] not in (started, first.proc.pid))
            newest = sidecar.admin("/hot_upgrade")["pid"]
            _wait_gone(started)
            time.sleep(0.3)
            load.stop()
        finally:
            load.stop()
            newest = newest or sidecar.admin("/hot_upgrade")["pid"]
            if newest != first.proc.pid:
                os.kill(newest, signal.SIGTERM)
                _wait_gone(newest)
            first.stop()  # no traceback in the log the three processes shared
    assert load.failures == [] and load.ok > 0
    assert [len(p) for p in load.ports] == [1, 1]


def _post_upgrade_twice(url: str) -> int:
    """``POST /hot_upgrade``: the pid it started; a second POST during that upgrade gets 409."""
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as r:
        started = int(json.loads(r.read())["started"])
    with pytest.raises(urllib.error.HTTPError) as again:  # one upgrade at a time
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5)
    assert again.value.code == 409 and b"already in progress" in again.value.read()
    return started


def _read_response(c: socket.socket) -> tuple[int, bytes]:
    """One whole HTTP/1.1 response from ``c`` (its head and body may arrive in separate reads)."""
    resp = http.client.HTTPResponse(c)
    resp.begin()
    return resp.status, resp.read()


def _wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met within the timeout")


def test_hot_upgrade_refusals_are_clear(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(json.dumps({"listeners": [], "clusters": []}))
    out = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(cfg), "--hot-upgrade"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--hot-upgrade needs the upgrade socket" in out.stderr
    out = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(cfg), "--upgrade-socket",
                          str(tmp_path / "none.sock"), "--hot-upgrade"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no process serves the upgrade socket" in out.stderr


def test_a_request_body_still_arriving_finishes_in_the_old_process_then_its_connection_moves(tmp_path: Path) -> None:
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                local = c.getsockname()
                c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
                upgrading = threading.Thread(target=sidecar.upgrade)
                upgrading.start()
                # the new process accepts; the old one waits for this request before moving it
                _wait_for(lambda: sidecar.admin("/hot_upgrade")["phase"] == "taking over")
                c.sendall(b"world")
                first = _read_response(c)
                upgrading.join(30)
                assert not upgrading.is_alive()
                c.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
                second = _read_response(c)
                assert c.getsockname() == local
        finally:
            sidecar.stop()
    assert first[0] == 200 and first[1].startswith(b"10 "), first  # the echo of the 10-byte body
    assert second[0] == 200, second
    assert sidecar.reports == ["1 listener(s), 1 connection(s) moved, 0 drained, 0 cut"]


def test_a_sidecar_fed_by_pilot_upgrades_under_load_and_its_successor_serves_only_when_warm(tmp_path: Path) -> None:
    from tests.integration.pilot.conftest import PilotProcess

    pilot = PilotProcess(tmp_path / "pilot").start()
    try:
        with UpstreamServer("u1") as up:
            host, port = up.address.rsplit(":", 1)
            pilot.register("hello", "u1", address=host, port=int(port), protocol="http")
            egress = free_port()
            sidecar = Sidecar(xds_bootstrap(pilot.xds_port, "upgrade-1", egress), tmp_path / "upgrade.sock")
            load: KeepAliveClients | None = None
            try:
                load = KeepAliveClients(egress, 3, host="hello")
                time.sleep(0.5)
                before = sidecar.admin("/stats")["listeners"]
                for _ in range(3):
                    sidecar.upgrade()
                    dump = json.loads(sidecar.current.get("/config_dump"))
                    assert dump["xds"]["synced"] and dump["xds"]["connects"] == 1  # its own stream, warm
                    time.sleep(0.3)
                after = sidecar.admin("/stats")["listeners"]
                # Pilot sees the newest process only, once the old ones are gone
                _wait_for(lambda: len([n for n in pilot.get("/debug/syncz")["nodes"] if n["node"] == "upgrade-1"]) == 1)
                load.stop()
                # a successor that cannot get its config from Pilot never takes over
                pilot.stop()
                late = sidecar.current
                cold = tmp_path / "cold.yaml"
                cold.write_text(json.dumps({**sidecar.config, "xds": {**sidecar.config["xds"],
                                                                      "initial_fetch_timeout_ms": 2000}}))
                failed = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(cold),
                                         "--upgrade-socket", sidecar.sock, "--hot-upgrade"],
                                        capture_output=True, text=True, timeout=90)
                assert failed.returncode == 2 and "no complete config" in failed.stderr, failed.stderr
                assert late.proc is not None and late.proc.poll() is None
                assert sidecar.admin("/hot_upgrade")["pid"] == late.proc.pid
                status, _ = _get(egress, "hello")
                assert status == 200  # the last applied config keeps serving
            finally:
                if load is not None:
                    load.stop()
                sidecar.stop()
    finally:
        pilot.stop()
    assert load.failures == [] and load.ok > 0
    assert [len(p) for p in load.ports] == [1, 1, 1]  # each client kept its one connection
    counted = {n: s["downstream_cx_total"] for n, s in after.items()}
    assert counted == {n: s["downstream_cx_total"] for n, s in before.items() if n in counted}
    assert all(r.endswith("3 connection(s) moved, 0 drained, 0 cut") for r in sidecar.reports), sidecar.reports


def xds_bootstrap(xds_port: int, node: str, egress: int) -> dict[str, Any]:
    """A sidecar whose listeners and clusters all come from Pilot (its HTTP egress on ``egress``)."""
    return {"drain_timeout_ms": 10000,
            "xds": {"address": f"127.0.0.1:{xds_port}", "node_id": node, "backoff_initial_ms": 100,
                    "backoff_max_ms": 500, "initial_fetch_timeout_ms": 10000,
                    "metadata": {"sofamesh.outbound_port": egress, "sofamesh.bolt_port": free_port(),
                                 "sofamesh.dubbo_port": free_port()}}}


def _get(port: int, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/after", headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class GrpcLoad:
    """grpcio calls in threads on one channel: unary calls, and streaming calls (server streaming and
    bidi) each kept open across a pause, recording every failure."""

    def __init__(self, port: int) -> None:
        import grpc

        from tests.conformance.test_http2_peers import ECHO

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.unary = self.channel.unary_unary(f"/{ECHO}/Unary")
        self.server_stream = self.channel.unary_stream(f"/{ECHO}/ServerStream")
        self.bidi = self.channel.stream_stream(f"/{ECHO}/Bidi")
        self.ok = {"unary": 0, "server_stream": 0, "bidi": 0}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(kind,))
                         for kind in ("unary", "unary", "server_stream", "bidi")]
        for t in self._threads:
            t.start()

    def _call(self, kind: str) -> bool:
        if kind == "unary":
            return bool(self.unary(b"hi", timeout=10) == b"echo:hi")
        if kind == "server_stream":
            return list(self.server_stream(b"3:tick", timeout=10)) == [b"tick-0", b"tick-1", b"tick-2"]

        def slowly() -> Any:  # the stream stays open 0.2 s: upgrades land while streams are open
            yield b"x"
            time.sleep(0.2)
            yield b"y"

        return list(self.bidi(slowly(), timeout=10)) == [b"bidi:x", b"bidi:y"]

    def _run(self, kind: str) -> None:
        while not self._stop.is_set():
            try:
                if self._call(kind):
                    self.ok[kind] += 1
                else:
                    self.failures.append(f"{kind}: wrong reply")
            except Exception as exc:  # every failed RPC is what the test reports
                self.failures.append(f"{kind}: {exc!r}")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self.channel.close()


def test_grpc_unary_and_streaming_calls_fail_none_across_upgrades_http2_drains_with_goaway(tmp_path: Path) -> None:
    from tests.conformance.test_http2_peers import GRPC_SERVER, start_peer, stop_peer

    backend = start_peer([sys.executable, str(GRPC_SERVER)])
    try:
        port = free_port()
        config = {"drain_timeout_ms": 10000,
                  "listeners": [{"name": "grpc", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                                 "routes": [{"name": "all", "cluster": "echo", "timeout_ms": 10000}]}],
                  "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [f"127.0.0.1:{backend.port}"]}]}
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        load = GrpcLoad(port)
        try:
            _wait_for(lambda: all(load.ok.values()))
            for _ in range(3):
                sidecar.upgrade()
                time.sleep(0.5)
            seen = dict(load.ok)
            _wait_for(lambda: all(load.ok[k] > seen[k] for k in seen))  # and calls go on on the newest
        finally:
            load.stop()
            sidecar.stop()
    finally:
        stop_peer(backend)
    assert load.failures == [], load.failures[:5]
    # the channel's one connection drained in each old process (GOAWAY, then its streams ended) and
    # the channel opened the next on the new process: nothing was cut
    assert sidecar.reports == ["1 listener(s), 0 connection(s) moved, 1 drained, 0 cut"] * 3, sidecar.reports


def _successor(sidecar: Sidecar, config: dict[str, Any], tmp_path: Path) -> subprocess.Popen[bytes]:
    path = tmp_path / f"successor-{time.monotonic_ns()}.yaml"
    path.write_text(json.dumps(config))
    return subprocess.Popen([sys.executable, "-m", "sofamesh", "proxy", "-c", str(path), "--upgrade-socket", sidecar.sock,
                             "--hot-upgrade"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_successor_killed_after_it_received_the_listeners_leaves_the_old_process_serving(tmp_path: Path) -> None:
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        load = KeepAliveClients(port, 3)
        try:
            first = sidecar.admin("/hot_upgrade")["pid"]
            # the successor holds the listening sockets and waits for its config from an xDS server
            # that does not answer: it never accepts, and it is killed there
            dead_pilot = free_port()
            waiting = _successor(sidecar, {**sidecar.config, "xds": {
                "address": f"127.0.0.1:{dead_pilot}", "node_id": "n", "initial_fetch_timeout_ms": 60000}}, tmp_path)
            _wait_for(lambda: sidecar.admin("/hot_upgrade")["phase"] == "handing over")
            time.sleep(0.5)
            waiting.kill()
            waiting.wait(10)
            _wait_for(lambda: sidecar.admin("/hot_upgrade")["phase"] == "serving")
            assert sidecar.admin("/hot_upgrade")["pid"] == first
            assert "did not take over" in sidecar.current.log()
            # new connections are still accepted by the old process
            status, _ = _get(port, "x")
            assert status == 200
            sidecar.upgrade()  # a good upgrade afterwards still moves every connection
            time.sleep(0.3)
            load.stop()
        finally:
            load.stop()
            sidecar.stop()
    assert load.failures == [] and load.ok > 0
    assert [len(p) for p in load.ports] == [1, 1, 1]
    assert sidecar.reports == ["1 listener(s), 3 connection(s) moved, 0 drained, 0 cut"]


def test_a_successor_killed_during_the_connection_hand_over_the_old_process_accepts_and_reads_again(
        tmp_path: Path) -> None:
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        try:
            first = sidecar.admin("/hot_upgrade")["pid"]
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                # a request whose body is still arriving keeps this connection in the old process
                c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
                taking = _successor(sidecar, sidecar.config, tmp_path)
                # the successor accepts (it answers the admin port now) and waits for the connection
                _wait_for(lambda: sidecar.admin("/hot_upgrade")["pid"] == taking.pid)
                taking.kill()
                taking.wait(10)
                _wait_for(lambda: _answers(sidecar, first))
                assert "went away during the hand-over" in sidecar.current.log()
                c.sendall(b"world")  # the old process reads again: the request finishes there
                first_reply = _read_response(c)
                c.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
                second_reply = _read_response(c)
            status, _ = _get(port, "x")  # and it accepts again
            assert status == 200
            sidecar.upgrade()
        finally:
            sidecar.stop()
    assert first_reply[0] == 200 and first_reply[1].startswith(b"10 "), first_reply
    assert second_reply[0] == 200
    assert sidecar.reports == ["1 listener(s), 0 connection(s) moved, 0 drained, 0 cut"]


def _answers(sidecar: Sidecar, pid: int) -> bool:
    try:
        state = sidecar.admin("/hot_upgrade")
    except OSError:
        return False
    return bool(state["pid"] == pid and state["phase"] == "serving")


def test_workers_are_replaced_worker_by_worker_under_load(tmp_path: Path) -> None:
    """``--workers 2``: worker i of the new process takes over from worker i of the old one; the
    supervisors hand over the admin port; no call fails and no client reconnects."""
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        config = {**config, "admin": {"address": f"127.0.0.1:{free_port()}"}}
        sock = str(tmp_path / "upgrade.sock")
        args = ("--workers", "2", "--upgrade-socket", sock)
        first = ProxyProcess(config, args=args, timeout=30).start()
        procs = [first]
        load = KeepAliveClients(port, 6)
        try:
            time.sleep(0.5)
            before = json.loads(first.get("/stats"))["total"]["listeners"]["web"]
            for _ in range(2):
                old = procs[-1]
                new = ProxyProcess(config, args=(*args, "--hot-upgrade"), timeout=30).start()
                procs.append(new)
                assert old.proc is not None
                assert old.proc.wait(30) == 0, old.log()
                assert f"handed over to supervisor pid {new.proc.pid}: 2 worker(s)" in old.log(), old.log()  # type: ignore[union-attr]
                assert old.log().count("handed over to pid") == 2  # each worker, to its successor
                time.sleep(0.5)
            stats = json.loads(procs[-1].get("/stats"))
            refused = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(first.config_path),
                                      "--workers", "3", "--upgrade-socket", sock, "--hot-upgrade"],
                                     capture_output=True, text=True, timeout=60)
            load.stop()
        finally:
            load.stop()
            for p in procs:
                p.stop()
    assert load.failures == [] and load.ok > 0
    assert [len(p) for p in load.ports] == [1] * 6  # every client kept its one connection
    assert stats["total"]["server"]["workers"] == 2
    total = stats["total"]["listeners"]["web"]
    assert total["downstream_cx_total"] == before["downstream_cx_total"]  # moved, not counted again
    assert total["downstream_rq_total"] > before["downstream_rq_total"]  # the totals continued
    assert refused.returncode == 2 and "--workers 3 differs" in refused.stderr, refused.stderr


def test_an_http2_connection_gets_goaway_with_the_largest_stream_id_then_the_last_one_opened(tmp_path: Path) -> None:
    """RFC 9113 6.8 graceful shutdown, seen by the h2 library as the client: a stream opened after the
    first GOAWAY (2^31-1) is still served, and the second GOAWAY names it."""
    import h2.config
    import h2.connection
    import h2.events

    from tests.conformance.test_http2_peers import ECHO, GRPC_SERVER, start_peer, stop_peer

    backend = start_peer([sys.executable, str(GRPC_SERVER)])
    events: list[Any] = []
    try:
        port = free_port()
        config = {"drain_timeout_ms": 10000,
                  "listeners": [{"name": "grpc", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                                 "routes": [{"name": "all", "cluster": "echo"}]}],
                  "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [f"127.0.0.1:{backend.port}"]}]}
        sidecar = Sidecar(config, tmp_path / "upgrade.sock")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                conn.initiate_connection()

                def call(sid: int) -> None:
                    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", f"/{ECHO}/Unary"),
                                            (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])
                    conn.send_data(sid, b"\x00\x00\x00\x00\x02hi", end_stream=True)
                    c.sendall(conn.data_to_send())

                def pump(until: Any) -> None:
                    while not until():
                        data = c.recv(65536)
                        if not data:
                            events.append("closed")
                            return
                        for ev in conn.receive_data(data):
                            events.append(ev)
                        c.sendall(conn.data_to_send())

                def ended(sid: int) -> bool:
                    return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in events)

                call(1)
                pump(lambda: ended(1))
                upgrading = threading.Thread(target=sidecar.upgrade)
                upgrading.start()
                pump(lambda: any(isinstance(e, h2.events.ConnectionTerminated) for e in events))
                first = next(e for e in events if isinstance(e, h2.events.ConnectionTerminated))
                # the h2 library refuses to open streams once it has seen a GOAWAY: write this one by
                # hand, as a client whose request crossed the GOAWAY would have
                sent = len(events)
                raw = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
                raw.initiate_connection()
                raw.data_to_send()
                raw.send_headers(3, [(":method", "POST"), (":scheme", "http"), (":path", f"/{ECHO}/Unary"),
                                     (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])
                raw.send_data(3, b"\x00\x00\x00\x00\x02hi", end_stream=True)
                c.sendall(raw.data_to_send())
                frames = b""
                c.settimeout(20)
                while True:
                    data = c.recv(65536)
                    if not data:
                        break
                    frames += data
                upgrading.join(30)
        finally:
            sidecar.stop()
    finally:
        stop_peer(backend)
    assert first.error_code == 0 and first.last_stream_id == 2**31 - 1, first
    assert len(events) == sent
    goaways, headers_on_3 = _h2_frames(frames)
    assert headers_on_3, "stream 3, opened after the first GOAWAY, was not answered"
    assert goaways == [(3, 0)], goaways  # the second GOAWAY names stream 3, NO_ERROR
    assert sidecar.reports == ["1 listener(s), 0 connection(s) moved, 1 drained, 0 cut"]


def _h2_frames(data: bytes) -> tuple[list[tuple[int, int]], bool]:
    """(GOAWAY (last stream id, error code) pairs, whether HEADERS came on stream 3) in raw frames."""
    goaways, headers_on_3, i = [], False, 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        kind, sid = data[i + 3], int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
        payload = data[i + 9:i + 9 + length]
        if kind == 0x7:
            goaways.append((int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")))
        elif kind == 0x1 and sid == 3:
            headers_on_3 = True
        i += 9 + length
    return goaways, headers_on_3


def test_workers_fed_by_pilot_are_replaced_worker_by_worker_each_once_its_config_is_complete(tmp_path: Path) -> None:
    """Each new worker serves only once the new supervisor's own xDS stream relayed a complete config."""
    from tests.integration.pilot.conftest import PilotProcess

    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "pilot").start()
        stack.callback(pilot.stop)
        up = stack.enter_context(UpstreamServer("u1"))
        host, port = up.address.rsplit(":", 1)
        pilot.register("hello", "u1", address=host, port=int(port), protocol="http")
        egress = free_port()
        config = {**xds_bootstrap(pilot.xds_port, "upgrade-w", egress), "admin": {"address": f"127.0.0.1:{free_port()}"}}
        args = ("--workers", "2", "--upgrade-socket", str(tmp_path / "upgrade.sock"))
        procs = [ProxyProcess(config, args=args, timeout=60).start()]
        stack.callback(lambda: [p.stop() for p in procs])
        load = KeepAliveClients(egress, 4, host="hello")
        stack.callback(load.stop)
        time.sleep(0.5)
        for _ in range(2):
            old, new = procs[-1], ProxyProcess(config, args=(*args, "--hot-upgrade"), timeout=60).start()
            procs.append(new)
            assert old.proc is not None and old.proc.wait(60) == 0, old.log()
            assert old.log().count("handed over to pid") == 2, old.log()
            dump = json.loads(new.get("/config_dump"))
            assert dump["xds"]["synced"]
            assert {w["relay_version"] for w in dump["workers"]} == {dump["xds"]["relay_version"]}
            time.sleep(0.5)
        load.stop()
    assert load.failures == [] and load.ok > 0
    assert [len(p) for p in load.ports] == [1] * 4


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(p) for p in f.read().split())


def _supervisor_state(proc: ProxyProcess) -> tuple[int, str]:
    try:
        state = json.loads(proc.get("/hot_upgrade"))
    except OSError:
        return 0, ""
    return int(state["pid"]), str(state["phase"])


def test_a_new_supervisor_killed_mid_upgrade_takes_its_workers_with_it_and_the_old_one_serves_on(
        tmp_path: Path) -> None:
    """``--workers 2``: the new supervisor is killed (-9) after its first worker took over. Its workers
    exit with it (none runs on without a parent); the old supervisor serves on with the worker it
    still has, and new connections are accepted."""
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        config = {**config, "admin": {"address": f"127.0.0.1:{free_port()}"}}
        args = ("--workers", "2", "--upgrade-socket", str(tmp_path / "upgrade.sock"))
        old = ProxyProcess(config, args=args, timeout=30).start()
        assert old.proc is not None
        held = 0
        try:
            going, held = _children(old.proc.pid)
            os.kill(held, signal.SIGSTOP)  # its successor cannot take over until the new supervisor is gone
            new = subprocess.Popen([sys.executable, "-m", "sofamesh", "proxy", "-c", str(old.config_path), *args,
                                    "--hot-upgrade"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            begun = time.monotonic()
            _wait_gone(going, 40)  # the first worker took over: the old one handed over and exited
            new_workers = _children(new.pid)
            assert len(new_workers) == 2
            new.kill()
            killed = time.monotonic()
            new.wait(10)
            for pid in new_workers:  # PR_SET_PDEATHSIG: each stops (gracefully) with its supervisor
                _wait_gone(pid, 4)
            # (well before its own 10 s limit, the worker waiting for the stopped one to answer would end)
            assert killed - begun < 6 or time.monotonic() - killed < 4
            os.kill(held, signal.SIGCONT)
            held = 0
            _wait_for(lambda: _supervisor_state(old) == (old.proc.pid, "serving"))  # type: ignore[union-attr]
            replies = [_get(port, "x")[0] for _ in range(6)]
            stats = old.stats()
            assert old.proc.poll() is None
            with pytest.raises(urllib.error.HTTPError) as again:  # its worker pairs are incomplete now
                urllib.request.urlopen(urllib.request.Request(f"{old.admin_url}/hot_upgrade", method="POST"), timeout=5)
            refused = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(old.config_path), *args,
                                      "--hot-upgrade"], capture_output=True, text=True, timeout=60)
        finally:
            if held:
                os.kill(held, signal.SIGCONT)
            code = old.stop()
    assert replies == [200] * 6
    assert stats["total"]["server"]["workers"] == 1
    assert "did not take over" in old.log(), old.log()
    assert again.value.code == 409 and b"restart it instead" in again.value.read()
    assert refused.returncode == 2 and "restart it instead" in refused.stderr, refused.stderr
    assert code == 0


def test_post_and_sigusr2_start_the_successor_of_a_workers_supervisor_under_load(tmp_path: Path) -> None:
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        config = {**config, "admin": {"address": f"127.0.0.1:{free_port()}"}}
        first = ProxyProcess(config, args=("--workers", "2", "--upgrade-socket", str(tmp_path / "upgrade.sock")),
                             timeout=30).start()
        assert first.proc is not None
        load = KeepAliveClients(port, 4)
        newest = 0
        try:
            time.sleep(0.5)
            url = f"{first.admin_url}/hot_upgrade"
            started = _post_upgrade_twice(url)
            assert first.proc.wait(60) == 0, first.log()
            assert f"handed over to supervisor pid {started}: 2 worker(s)" in first.log(), first.log()
            _wait_for(lambda: _supervisor_state(first) == (started, "serving"), 30)
            os.kill(started, signal.SIGUSR2)  # the successor, itself a --workers supervisor, does it again
            _wait_for(lambda: _supervisor_state(first)[0] not in (0, started, first.proc.pid), 60)  # type: ignore[union-attr]
            newest = _supervisor_state(first)[0]
            _wait_gone(started, 60)
            _wait_for(lambda: _supervisor_state(first) == (newest, "serving"), 30)
            time.sleep(0.3)
            load.stop()
            workers = json.loads(first.get("/stats"))["total"]["server"]["workers"]
        finally:
            load.stop()
            newest = newest or _supervisor_state(first)[0]
            if newest and newest != first.proc.pid:
                os.kill(newest, signal.SIGTERM)
                _wait_gone(newest)
            first.stop()
    assert load.failures == [] and load.ok > 0
    assert [len(p) for p in load.ports] == [1] * 4  # every client kept its one connection
    assert workers == 2
    assert first.log().count("handed over to supervisor pid") == 2


def test_a_new_supervisor_killed_after_its_workers_accept_the_old_one_serves_again(tmp_path: Path) -> None:
    """``--workers 2``: both new workers accept (the old supervisor stopped its admin), one old worker
    still holds a request whose body is arriving; the new supervisor is killed (-9). Its workers exit
    with it, the old worker finishes the request and serves on, the old supervisor serves its admin
    and the upgrade socket again."""
    with UpstreamServer() as web:
        config, port = web_config(web.address)
        config = {**config, "admin": {"address": f"127.0.0.1:{free_port()}"}, "drain_timeout_ms": 60000}
        sock = str(tmp_path / "upgrade.sock")
        args = ("--workers", "2", "--upgrade-socket", sock)
        old = ProxyProcess(config, args=args, timeout=30).start()
        assert old.proc is not None
        olds = _children(old.proc.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
            new = subprocess.Popen([sys.executable, "-m", "sofamesh", "proxy", "-c", str(old.config_path), *args,
                                    "--hot-upgrade"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_for(lambda: "this one exits with its last worker" in old.log(), 40)
                _wait_for(lambda: len(_children(old.proc.pid)) == 1, 40)  # type: ignore[union-attr]
                new_workers = _children(new.pid)
                assert len(new_workers) == 2
                new.kill()
                new.wait(10)
                for pid in new_workers:
                    _wait_gone(pid, 4)
                _wait_for(lambda: _supervisor_state(old) == (old.proc.pid, "serving"))  # type: ignore[union-attr]
                c.sendall(b"world")  # the old worker reads again: the request finishes there
                reply = _read_response(c)
                c.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
                again = _read_response(c)
                replies = [_get(port, "x")[0] for _ in range(6)]
                stats = old.stats()
                left = _children(old.proc.pid)
            finally:
                if new.poll() is None:
                    new.kill()
                    new.wait(10)
                code = old.stop()
    assert reply[0] == 200 and reply[1].startswith(b"10 "), reply
    assert again[0] == 200 and replies == [200] * 6
    assert len(left) == 1 and left[0] in olds
    assert stats["total"]["server"]["workers"] == 1
    assert "went away before the last of our workers handed over" in old.log(), old.log()
    assert code == 0
