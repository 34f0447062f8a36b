"""Real Thrift peers (thriftpy2 client and server) talking through a running ``sofamesh proxy`` that
loads this distribution's ``thrift`` plugin from its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port, wait_port

HERE = Path(__file__).parent
PEER = HERE / "peers" / "thrift_peer.py"
APACHE = HERE / "peers" / "apache_peer.py"
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or HERE.parents[2] / ".cache")
PEER_PY = CACHE / "venv-thrift" / "bin" / "python"

if not PEER_PY.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"thriftpy2 peer missing at {PEER_PY}: scripts/setup.d/40-thrift-peers.sh did not run")
    pytest.skip(f"thriftpy2 peer not installed ({PEER_PY}); run scripts/setup.d/40-thrift-peers.sh",
                allow_module_level=True)


class ThriftServer:
    """A thriftpy2 TThreadedServer in a subprocess, on a free port; stopped by pid."""

    def __init__(self, name: str, *flags: str) -> None:
        self.name = name
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # the peer's output, kept until stop() for failure reports
        self.proc = subprocess.Popen([str(PEER_PY), str(PEER), "server", str(self.port), name, *flags],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port("127.0.0.1", self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def thrift_server() -> Iterator[Callable[..., ThriftServer]]:
    started: list[ThriftServer] = []

    def make(name: str, *flags: str) -> ThriftServer:
        s = ThriftServer(name, *flags)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def client(port: int, program: list[list[Any]], *flags: str, timeout: float = 60) -> Any:
    out = subprocess.run([str(PEER_PY), str(PEER), "client", str(port), json.dumps(program), *flags],
                         capture_output=True, timeout=timeout, check=True)
    return json.loads(out.stdout)


def apache_client(port: int, seqids: list[int], *flags: str) -> Any:
    out = subprocess.run([str(PEER_PY), str(APACHE), str(port), json.dumps(seqids), *flags], capture_output=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def thrift_config(routes: list[dict[str, Any]], clusters: list[dict[str, Any]], protocols: Any = ("thrift",)
                  ) -> tuple[dict[str, Any], int]:
    port = free_port()
    listener = {"name": "thrift_in", "address": f"127.0.0.1:{port}",
                "protocols": list(protocols) if not isinstance(protocols, str) else protocols, "routes": routes}
    return {"listeners": [listener], "clusters": clusters}, port


def one_cluster(*servers: ThriftServer, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "echo", "endpoints": [s.address for s in servers], "health": {"ejection_ms": 0}, **extra}]


def test_calls_oneway_and_a_declared_exception_pass_through_the_proxy(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    up = thrift_server("up-a")
    cfg, port = thrift_config([{"name": "all", "cluster": "echo"}], one_cluster(up))
    p = sofamesh_proxy(cfg)
    got = client(port, [["echo", "hi"], ["add", 40, 2], ["lookup", "known"], ["lookup", "missing"],
                        ["notify", "first"], ["notify", "second"], ["notes"]])
    assert got == [{"ok": "up-a:hi"}, {"ok": 42}, {"ok": "value"}, {"error": "NotFound", "key": "missing"},
                   {"ok": None}, {"ok": None}, {"ok": ["first", "second"]}]
    st = p.stats()
    assert st["clusters"]["echo"]["upstream_rq_oneway"] == 2
    rpc = st["rpc"]
    assert rpc["thrift_in|thrift||echo"]["requests"] == 1
    assert rpc["thrift_in|thrift||lookup"]["statuses"] == {"0": 1, "1": 1}  # success, declared exception


def test_multiplexed_services_are_routed_by_their_service_prefix(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    echo_up, admin_up = thrift_server("up-echo", "--multiplexed"), thrift_server("up-admin", "--multiplexed")
    cfg, port = thrift_config(
        [{"name": "admin", "match": {"service": "Admin"}, "cluster": "admin"},
         {"name": "echo", "match": {"service": {"exact": "Echo"}, "method": {"regex": "echo|add"}}, "cluster": "echo"}],
        [*one_cluster(echo_up), {"name": "admin", "endpoints": [admin_up.address]}])
    sofamesh_proxy(cfg)
    assert client(port, [["echo", "x"], ["add", 1, 2]], "--service", "Echo") == [{"ok": "up-echo:x"}, {"ok": 3}]
    assert client(port, [["whoami"]], "--service", "Admin") == [{"ok": "up-admin"}]
    [no_route] = client(port, [["lookup", "known"]], "--service", "Echo")
    assert no_route["error"] == "TApplicationException" and no_route["type"] == 1  # UNKNOWN_METHOD
    assert no_route["message"] == "sofamesh 404 no_route: no route for Echo/lookup on listener thrift_in"


def test_a_non_strict_client_is_answered_in_its_own_framing(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    up = thrift_server("up-lenient", "--lenient")
    cfg, port = thrift_config([{"match": {"method": "echo"}, "cluster": "echo"}], one_cluster(up))
    sofamesh_proxy(cfg)
    got = client(port, [["echo", "old"], ["add", 1, 1]], "--non-strict")
    assert got[0] == {"ok": "up-lenient:old"}
    assert got[1]["error"] == "TApplicationException" and "404 no_route" in got[1]["message"]


def test_a_provider_that_is_down_becomes_an_application_exception(sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    dead = free_port()
    cfg, port = thrift_config([{"cluster": "echo"}],
                              [{"name": "echo", "endpoints": [f"127.0.0.1:{dead}"], "connect_timeout_ms": 500}])
    p = sofamesh_proxy(cfg)
    [down, oneway] = client(port, [["echo", "anyone?"], ["notify", "lost"]])
    assert down["error"] == "TApplicationException" and down["type"] == 6  # INTERNAL_ERROR
    assert down["message"].startswith("sofamesh 503 no_healthy_upstream: upstream connect error")
    assert oneway == {"ok": None}  # a oneway call gets no answer, not even an error
    deadline = time.monotonic() + 5
    while (st := p.stats()["listeners"]["thrift_in"])["downstream_rq_active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert st["downstream_rq_total"] == 2 and st["downstream_rq_active"] == 0
    assert st["downstream_rq_local_reply"] >= 1


def test_a_slow_call_times_out_and_its_late_reply_is_dropped(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    up = thrift_server("up-slow")
    cfg, port = thrift_config([{"match": {"method": "slow"}, "cluster": "echo", "timeout_ms": 200},
                               {"cluster": "echo"}], one_cluster(up))
    p = sofamesh_proxy(cfg)
    got = client(port, [["slow", 600], ["echo", "after"]])
    assert got[0]["error"] == "TApplicationException" and got[0]["message"].startswith("sofamesh 504 timeout")
    assert got[1] == {"ok": "up-slow:after"}  # queued behind the slow call on the server, still answered
    st = p.stats()["clusters"]["echo"]
    assert st["upstream_rq_timeout"] == 1 and st["upstream_rq_late_response"] == 1


def test_two_hundred_concurrent_clients_share_one_upstream_connection(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    up = thrift_server("up-many")
    cfg, port = thrift_config([{"cluster": "echo"}], one_cluster(up))
    p = sofamesh_proxy(cfg)
    got = client(port, [["echo", "c{i}"]], "--threads", "200", timeout=120)
    assert got == [[{"ok": f"up-many:c{i}"}] for i in range(200)]  # every client got its own answer
    st = p.stats()
    assert st["listeners"]["thrift_in"]["downstream_cx_total"] == 200
    assert st["clusters"]["echo"]["upstream_cx_total"] == 1  # all seqid-0 calls remapped onto one connection
    assert st["clusters"]["echo"]["upstream_rq_2xx"] == 200


def test_two_hundred_pipelined_calls_over_two_connections_each_get_their_reply(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    a, b = thrift_server("up-a"), thrift_server("up-b")
    cfg, port = thrift_config([{"cluster": "echo"}], one_cluster(a, b))
    p = sofamesh_proxy(cfg)
    out = subprocess.run([str(PEER_PY), str(PEER), "pipeline", str(port), "2", "200"], capture_output=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout) == {"ok": 200, "wrong": 0, "missing": 0}
    st = p.stats()["clusters"]["echo"]
    assert st["upstream_cx_total"] == 2 and st["upstream_rq_2xx"] == 200  # one connection per endpoint


def test_thrift_and_http_share_one_port_by_sniffing(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    up = thrift_server("up-shared", "--lenient")
    with UpstreamServer("up-web") as web:
        cfg, port = thrift_config(
            [{"match": {"protocol": "thrift"}, "cluster": "echo"}, {"match": {"protocol": "http1"}, "cluster": "web"}],
            [*one_cluster(up), {"name": "web", "endpoints": [web.address]}], protocols="auto")
        sofamesh_proxy(cfg)
        assert client(port, [["echo", "sniffed"]]) == [{"ok": "up-shared:sniffed"}]
        assert client(port, [["echo", "old"]], "--non-strict") == [{"ok": "up-shared:old"}]
        assert httpx.get(f"http://127.0.0.1:{port}/page", timeout=5).text == "up-web GET /page\n"


def test_an_apache_thrift_client_gets_its_own_seqids_back_from_a_thriftpy2_server(thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    plain, mux = thrift_server("up-plain"), thrift_server("up-mux", "--multiplexed")
    cfg, port = thrift_config([{"match": {"service": "Echo"}, "cluster": "mux"}, {"cluster": "echo"}],
                              [*one_cluster(plain), {"name": "mux", "endpoints": [mux.address]}])
    sofamesh_proxy(cfg)
    seqids = [7, 2**31 - 1, -(2**31), -1]  # i32 on the wire; the proxy's ids are their unsigned view
    got = apache_client(port, seqids)
    assert got == [{"ok": f"up-plain:a{s}", "seqid": s} for s in seqids]
    assert apache_client(port, [41], "--service", "Echo") == [{"ok": "up-mux:a41", "seqid": 41}]


def test_an_apache_thrift_client_reads_the_proxys_application_exception(sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    cfg, port = thrift_config([{"match": {"method": "nothing"}, "cluster": "echo"}],
                              [{"name": "echo", "endpoints": [f"127.0.0.1:{free_port()}"]}])
    sofamesh_proxy(cfg)
    [got] = apache_client(port, [99])
    assert got == {"error": "TApplicationException", "type": 1, "seqid": 99,
                   "message": "sofamesh 404 no_route: no route for /echo on listener thrift_in"}
