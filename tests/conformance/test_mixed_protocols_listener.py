"""One sofamesh listener carrying Bolt, Dubbo and HTTP/1 at once, told apart by sniffing the first bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.bolt_peers import node_consumer, node_provider
from tests.conformance.dubbo_peers import SERVICE, Provider, call, consume, java, require_dubbo_peers

BOLT_SERVICE = "com.example.EchoService"


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"http says hi to {self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    t.join(5)


@pytest.mark.parametrize("protocols", ["auto", ["http1", "bolt", "dubbo"]])
def test_bolt_dubbo_and_http1_clients_share_one_listener(http_upstream: str, protocols: object) -> None:
    require_dubbo_peers()
    listen = f"127.0.0.1:{free_port()}"
    with Provider("mixed") as p, node_provider(BOLT_SERVICE, "B") as bolt:
        config = {
            "listeners": [{"name": "shared", "address": listen, "protocols": protocols, "routes": [
                {"match": {"protocol": "dubbo", "service": SERVICE}, "cluster": "rpc"},
                {"match": {"protocol": "bolt", "service": f"{BOLT_SERVICE}:1.0"}, "cluster": "sofa"},
                {"match": {"protocol": "http1", "path": {"prefix": "/"}}, "cluster": "web"},
            ]}],
            "clusters": [{"name": "rpc", "endpoints": [p.address]}, {"name": "web", "endpoints": [http_upstream]},
                         {"name": "sofa", "endpoints": [bolt.address]}],
        }
        with ProxyProcess(config) as proxy, ThreadPoolExecutor(4) as pool:
            rpc = pool.submit(consume, listen, [call("add", java("int", 20), java("int", 22), repeat=20)])
            sofa = pool.submit(node_consumer, listen, BOLT_SERVICE, [{"method": "echo", "args": [f"s{i}"]}
                                                                      for i in range(20)])
            web = [pool.submit(httpx.get, f"http://{listen}/page/{i}", timeout=10) for i in range(20)]
            assert [r["res"] for r in rpc.result(60)] == [42] * 20
            assert [r["result"] for r in sofa.result(60)] == [f"B:s{i}" for i in range(20)]
            assert [w.result(30).text for w in web] == [f"http says hi to /page/{i}" for i in range(20)]
            rpc_stats = proxy.stats()["rpc"]
            assert rpc_stats[f"shared|dubbo|{SERVICE}|add"]["requests"] == 20
            # sofa-rpc-node sends no method header, so bolt's stats key may carry an empty method
            bolt_keys = [k for k in rpc_stats if k.startswith(f"shared|bolt|{BOLT_SERVICE}:1.0|")]
            assert sum(rpc_stats[k]["requests"] for k in bolt_keys) == 20, list(rpc_stats)
