"""A real grpcio client through sofamesh to two grpcio servers, one of them answering UNAVAILABLE:
the route's retry_policy (retry_on: unavailable) retries on the other, and every call succeeds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from sofamesh.testing import ProxyProcess, free_port

SERVICE = "sofamesh.test.Echo"
CALLS = 60


class _Server:
    """A grpcio server of ``SERVICE``/Unary (raw bytes): echoes, or aborts with ``code``."""

    def __init__(self, code: grpc.StatusCode | None) -> None:
        self.calls = 0
        self.attempts: set[str] = set()
        self.lock = threading.Lock()

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self.lock:
                self.calls += 1
                self.attempts.add(dict(context.invocation_metadata()).get("x-envoy-attempt-count", "-"))
            if code is not None:
                context.abort(code, "not now")
            return request

        handler = grpc.method_handlers_generic_handler(SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(unary)})
        self.server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def servers() -> Iterator[tuple[_Server, _Server]]:
    good, down = _Server(None), _Server(grpc.StatusCode.UNAVAILABLE)
    yield good, down
    for s in (good, down):
        s.server.stop(None)


def test_grpc_calls_answered_unavailable_are_retried_on_another_endpoint(servers: tuple[_Server, _Server]) -> None:
    good, down = servers
    port = free_port()
    config = {
        "listeners": [{"name": "grpc", "address": f"127.0.0.1:{port}", "protocols": ["http2"], "routes": [{
            "name": "echo", "match": {"service": SERVICE}, "cluster": "echo",
            "retry_policy": {"retry_on": "unavailable", "num_retries": 2}}]}],
        # round robin over [down, good]: every other call meets UNAVAILABLE first; no ejection here
        "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [down.address, good.address],
                      "health": {"ejection_ms": 0}}],
    }
    with ProxyProcess(config) as proxy, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        replies = [unary(f"call {i}".encode(), timeout=10) for i in range(CALLS)]
        stats = proxy.stats()["clusters"]["echo"]
    assert replies == [f"call {i}".encode() for i in range(CALLS)]
    assert down.calls > 0 and good.calls == CALLS
    assert stats["upstream_rq_retry"] == down.calls == stats["upstream_rq_retry_success"]
    assert good.attempts == {"1", "2"} and down.attempts == {"1"}


def test_without_a_retry_policy_unavailable_reaches_the_client(servers: tuple[_Server, _Server]) -> None:
    _, down = servers
    port = free_port()
    config = {
        "listeners": [{"name": "grpc", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                       "routes": [{"name": "echo", "match": {"service": SERVICE}, "cluster": "echo"}]}],
        "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [down.address]}],
    }
    with ProxyProcess(config), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE and down.calls == 1
