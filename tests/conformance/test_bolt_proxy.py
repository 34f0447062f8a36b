"""Real SOFA clients and servers talking through a running sofamesh proxy (``sofamesh proxy -c``).

sofa-rpc-node consumer -> sofamesh -> sofa-rpc-node provider, anthunder client -> sofamesh ->
anthunder listener. Where the status on the wire matters, a test-local ByteRelay sits between the
client and sofamesh and decodes what sofamesh answered.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sofamesh.core.codec import CodecLimits, ReplyStatus, Role
from sofamesh.core.events import NEED_DATA, RequestHead, ResponseHead
from sofamesh.plugins.protocols.bolt import BoltCodec
from sofamesh.testing import ProxyProcess
from tests.conformance.bolt_peers import (
    ByteRelay,
    anthunder_client,
    anthunder_listener,
    free_port,
    node_consumer,
    node_provider,
)

ECHO = "com.example.EchoService"
OTHER = "com.example.OtherService"
PY = "com.example.Py"


def proxy_config(routes: list[dict[str, Any]], clusters: dict[str, list[str]], port: int,
                 cluster_extra: dict[str, Any] | None = None, protocols: str | list[str] = "bolt") -> dict[str, Any]:
    return {
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "rpc_in", "address": f"127.0.0.1:{port}",
                       "protocols": protocols if protocols == "auto" else [protocols], "routes": routes}],
        "clusters": [{"name": name, "protocol": "bolt", "connect_timeout_ms": 500, "endpoints": eps,
                      **(cluster_extra or {})} for name, eps in clusters.items()],
    }


@contextmanager
def sofamesh(routes: list[dict[str, Any]], clusters: dict[str, list[str]], protocols: str = "bolt",
             **cluster_extra: Any) -> Iterator[tuple[str, ProxyProcess]]:
    port = free_port()
    with ProxyProcess(proxy_config(routes, clusters, port, cluster_extra, protocols)) as proxy:
        yield f"127.0.0.1:{port}", proxy


@contextmanager
def echo_provider_behind_sofamesh(timeout_ms: int = 3000) -> Iterator[str]:
    """sofa-rpc-node provider "A" of EchoService:1.0 behind sofamesh; yields sofamesh's address."""
    route = {"match": {"service": f"{ECHO}:1.0"}, "cluster": "a", "timeout_ms": timeout_ms}
    with node_provider(ECHO, "A") as provider, sofamesh([route], {"a": [provider.address]}) as (address, _):
        yield address


@contextmanager
def py_listener_behind_sofamesh() -> Iterator[str]:
    """anthunder listener "B" of com.example.Py behind sofamesh; yields sofamesh's address."""
    with anthunder_listener(PY, "B") as listener, sofamesh([to("py", PY)], {"py": [listener.address]}) as (
            address, _):
        yield address


def to(cluster: str, service: str | dict[str, str] | None = None, **match: Any) -> dict[str, Any]:
    if service is not None:
        match["service"] = service
    return {"match": match, "cluster": cluster, "timeout_ms": 3000}


def wire_statuses(relay: ByteRelay) -> dict[str, int]:
    """method -> Bolt status sofamesh answered, as decoded by the relay."""
    out: dict[str, int] = {}
    for conn in relay.connections:
        methods = {r.request_id: r.key("method") or "" for r in conn.requests if isinstance(r, RequestHead)}
        for resp in conn.responses:
            if isinstance(resp, ResponseHead):
                out[methods[resp.request_id]] = resp.status
    return out


def test_sofa_rpc_node_calls_several_methods_through_sofamesh_in_every_framing() -> None:
    calls: list[dict[str, object]] = [{"method": "echo", "args": ["hi"]}, {"method": "plus", "args": [2, 3]},
                                      {"method": "fail", "args": ["x"]}, {"method": "whoami"}]
    with echo_provider_behind_sofamesh() as address:
        for framing in ("v1", "v2", "v2crc"):
            results = node_consumer(address, ECHO, calls, framing=framing)
            assert results[0] == {"ok": True, "result": "A:hi"}, framing
            assert results[1] == {"ok": True, "result": 5}, framing
            assert results[2]["ok"] is False and "fail: x" in str(results[2]["message"]), framing
            assert results[3] == {"ok": True, "result": "A"}, framing


def test_anthunder_client_calls_the_anthunder_listener_through_sofamesh() -> None:
    calls: list[dict[str, object]] = [{"method": "echo", "body": "hi"}, {"method": "whoami"},
                                      {"method": "fail", "body": "x"}]
    with py_listener_behind_sofamesh() as address:
        results = anthunder_client(address, PY, calls)
    assert results[:2] == [{"ok": True, "result": "B:hi"}, {"ok": True, "result": "B"}]
    assert results[2]["ok"] is False


def test_a_stopped_provider_gives_status_6_or_7_and_the_client_raises_its_normal_error() -> None:
    with node_provider(ECHO, "A") as provider:
        dead = provider.address
    with sofamesh([to("a", f"{ECHO}:1.0")], {"a": [dead]}) as (address, _), ByteRelay(address) as relay:
        t0 = time.monotonic()
        results = node_consumer(relay.address, ECHO, [{"method": "echo", "args": ["hi"]}])
        elapsed = time.monotonic() - t0
    assert results[0]["ok"] is False and results[0]["name"] == "Error"
    assert wire_statuses(relay)["echo"] in (6, 7)
    assert elapsed < 10


def test_anthunder_sees_an_error_when_the_listener_is_gone() -> None:
    with anthunder_listener(PY, "B") as listener:
        dead = listener.address
    with sofamesh([to("py", PY)], {"py": [dead]}) as (address, _), ByteRelay(address) as relay:
        results = anthunder_client(relay.address, PY, [{"method": "echo", "body": "hi"}])
    assert results[0]["ok"] is False
    assert wire_statuses(relay)["echo"] in (6, 7)


def test_an_unrouted_service_gets_status_6() -> None:
    with echo_provider_behind_sofamesh() as address, ByteRelay(address) as relay:
        results = node_consumer(relay.address, OTHER, [{"method": "echo", "args": ["hi"]}])
    assert results[0]["ok"] is False
    assert wire_statuses(relay)["echo"] == 6


def test_a_slow_method_times_out_with_status_7_at_the_route_timeout() -> None:
    with echo_provider_behind_sofamesh(timeout_ms=400) as address, ByteRelay(address) as relay:
        t0 = time.monotonic()
        results = node_consumer(relay.address, ECHO, [{"method": "slow", "args": [8000], "timeout": 10000},
                                                      {"method": "echo", "args": ["fast"]}])
        elapsed = time.monotonic() - t0
    assert results[0]["ok"] is False and results[0]["name"] == "Error"
    assert results[1] == {"ok": True, "result": "A:fast"}
    assert wire_statuses(relay)["slow"] == 7
    assert elapsed < 7.5  # answered at the 0.4 s route timeout, not when the provider replies at 8 s


@pytest.mark.parametrize("framing", ["v1", "v2crc"])
def test_200_concurrent_calls_over_few_connections_are_all_answered_with_their_own_ids(framing: str) -> None:
    calls: list[dict[str, object]] = [{"method": "echo", "args": [f"m{i}"], "timeout": 10000}
                                      for i in range(200)]
    with echo_provider_behind_sofamesh() as address:
        results = node_consumer(address, ECHO, calls, clients=4, framing=framing, timeout=90)
    assert results == [{"ok": True, "result": f"A:m{i}"} for i in range(200)]


def test_200_concurrent_anthunder_calls_on_one_connection_are_all_answered() -> None:
    calls: list[dict[str, object]] = [{"method": "echo", "body": f"m{i}", "timeout": 10000}
                                      for i in range(200)]
    with py_listener_behind_sofamesh() as address:
        results = anthunder_client(address, PY, calls, timeout=90)
    assert results == [{"ok": True, "result": f"B:m{i}"} for i in range(200)]


def test_requests_are_routed_by_service_and_by_method_across_two_providers() -> None:
    with node_provider(ECHO, "A") as a, node_provider(f"{ECHO},{OTHER}", "B") as b:
        routes = [
            to("b", f"{ECHO}:1.0", method="whoami"),  # method read from the hessian body
            to("a", {"prefix": ECHO}),
            to("b", {"exact": f"{OTHER}:1.0"}),
        ]
        with sofamesh(routes, {"a": [a.address], "b": [b.address]}) as (address, _):
            echo = node_consumer(address, ECHO, [{"method": "echo", "args": ["x"]}, {"method": "whoami"}])
            other = node_consumer(address, OTHER, [{"method": "whoami"}, {"method": "echo", "args": ["y"]}])
    assert echo == [{"ok": True, "result": "A:x"}, {"ok": True, "result": "B"}]
    assert other == [{"ok": True, "result": "B"}, {"ok": True, "result": "B:y"}]


def test_anthunder_requests_are_routed_by_the_method_header() -> None:
    with anthunder_listener(PY, "A") as a, anthunder_listener(PY, "B") as b:
        routes = [to("b", PY, method="whoami"), to("a", PY)]
        with sofamesh(routes, {"a": [a.address], "b": [b.address]}) as (address, _):
            results = anthunder_client(address, PY, [{"method": "whoami"}, {"method": "echo", "body": "z"}])
    assert results == [{"ok": True, "result": "B"}, {"ok": True, "result": "A:z"}]


def _wait_for_heartbeats(proxy: ProxyProcess, cluster: str, count: int) -> dict[str, Any]:
    for _ in range(100):  # bounded: 10 s
        stats: dict[str, Any] = proxy.stats()["clusters"][cluster]
        if stats["upstream_heartbeat_sent"] >= count:
            return stats
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} heartbeats sent: {stats}")


def test_idle_upstream_connections_stay_alive_on_heartbeats_sofa_rpc_node_answers() -> None:
    route = to("a", f"{ECHO}:1.0")
    with node_provider(ECHO, "A") as provider, sofamesh([route], {"a": [provider.address]},
                                                          heartbeat_interval_ms=100) as (address, proxy):
        assert node_consumer(address, ECHO, [{"method": "whoami"}]) == [{"ok": True, "result": "A"}]
        stats = _wait_for_heartbeats(proxy, "a", 3)
        assert node_consumer(address, ECHO, [{"method": "whoami"}]) == [{"ok": True, "result": "A"}]
        stats = proxy.stats()["clusters"]["a"]
    assert stats["upstream_heartbeat_failed"] == 0
    assert stats["upstream_cx_total"] == 1  # the same upstream connection served both calls


def test_idle_upstream_connections_stay_alive_on_heartbeats_anthunder_answers() -> None:
    with anthunder_listener(PY, "B") as listener, sofamesh([to("py", PY)], {"py": [listener.address]},
                                                            heartbeat_interval_ms=100) as (address, proxy):
        assert anthunder_client(address, PY, [{"method": "whoami"}]) == [{"ok": True, "result": "B"}]
        _wait_for_heartbeats(proxy, "py", 3)
        assert anthunder_client(address, PY, [{"method": "whoami"}]) == [{"ok": True, "result": "B"}]
        stats = proxy.stats()["clusters"]["py"]
    assert stats["upstream_heartbeat_failed"] == 0
    assert stats["upstream_cx_total"] == 1


def test_stats_count_bolt_statuses_per_service_and_map_them_to_http_classes() -> None:
    with node_provider(ECHO, "A") as provider, sofamesh([to("a", f"{ECHO}:1.0")], {"a": [provider.address]}) as (
            address, proxy):
        node_consumer(address, ECHO, [{"method": "echo", "args": ["x"]}, {"method": "fail", "args": ["y"]},
                                      {"method": "whoami"}])
        stats = proxy.stats()
    (rpc,) = [v for k, v in stats["rpc"].items() if f"{ECHO}:1.0" in k]
    assert rpc["requests"] == 3 and rpc["statuses"] == {"0": 2, "2": 1}
    assert stats["clusters"]["a"]["upstream_rq_2xx"] == 2 and stats["clusters"]["a"]["upstream_rq_5xx"] == 1


def test_the_timeout_in_the_frame_caps_the_route_timeout() -> None:
    # Capture a real slow(3000) request without waiting: the relay answers it itself.
    captured: list[bytes] = []

    def keep(codec: BoltCodec, head: RequestHead) -> bytes:
        captured.append(head.raw or b"")
        return codec.local_reply(head, ReplyStatus.INTERNAL, "captured")

    with node_provider(ECHO, "A") as provider, ByteRelay(provider.address, answer=keep) as relay:
        node_consumer(relay.address, ECHO, [{"method": "slow", "args": [3000], "timeout": 5000}])
    frame = captured[0][:10] + (400).to_bytes(4, "big") + captured[0][14:]  # v1 timeout field: 400 ms
    route = {"match": {"service": f"{ECHO}:1.0"}, "cluster": "a", "timeout_ms": 5000}
    with node_provider(ECHO, "A") as provider, sofamesh([route], {"a": [provider.address]}) as (address, _):
        host, port = address.rsplit(":", 1)
        codec = BoltCodec(Role.CLIENT, CodecLimits())
        with socket.create_connection((host, int(port)), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(frame)
            ev = NEED_DATA
            for _ in range(100):  # bounded by the socket timeout too
                codec.receive_data(s.recv(65536))
                if (ev := codec.next_event()) is not NEED_DATA:
                    break
            elapsed = time.monotonic() - t0
    assert isinstance(ev, ResponseHead) and ev.status == 7
    assert 0.3 < elapsed < 4.5  # the frame's 0.4 s, not the route's 5 s


def test_requests_in_flight_when_the_provider_dies_are_answered_with_connection_closed() -> None:
    route = {"match": {"service": f"{ECHO}:1.0"}, "cluster": "a", "timeout_ms": 8000}
    killed_at: list[float] = []
    # The provider is stopped once the call has reached it (seen by a relay in front of it).
    with node_provider(ECHO, "A") as provider, ByteRelay(provider.address) as at_provider, sofamesh(
            [route], {"a": [at_provider.address]}) as (address, _), ByteRelay(address) as relay:

        def stop_when_in_flight() -> None:
            for _ in range(400):  # bounded: 20 s
                if any(c.requests for c in at_provider.connections):
                    time.sleep(0.2)
                    killed_at.append(time.monotonic())
                    provider.stop()
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=stop_when_in_flight, daemon=True)
        killer.start()
        results = node_consumer(relay.address, ECHO, [{"method": "slow", "args": [6000], "timeout": 8000}])
        answered_at = time.monotonic()
        killer.join(5)
    assert killed_at, "the call never reached the provider"
    assert results[0]["ok"] is False
    assert wire_statuses(relay)["slow"] == 0x10  # CONNECTION_CLOSED: the upstream went away under it
    assert answered_at - killed_at[0] < 5.0  # at once, not at the 6 s method or the 8 s route timeout


def test_a_listener_sniffing_every_installed_protocol_recognises_bolt_v1_and_v2() -> None:
    with node_provider(ECHO, "A") as provider, sofamesh([to("a", f"{ECHO}:1.0")], {"a": [provider.address]},
                                                          protocols="auto") as (address, _):
        for framing in ("v1", "v2crc"):
            assert node_consumer(address, ECHO, [{"method": "whoami"}], framing=framing) == [
                {"ok": True, "result": "A"}], framing


def test_anthunder_oneway_calls_are_forwarded_and_never_answered() -> None:
    with anthunder_listener(PY, "B") as listener, sofamesh([to("py", PY)], {"py": [listener.address]}) as (
            address, proxy), ByteRelay(address) as relay:
        sent = anthunder_client(relay.address, PY, [{"method": "remember", "body": f"o{i}", "oneway": True}
                                                    for i in range(3)])
        assert sent == [{"ok": True, "result": None}] * 3
        recalled = ""
        for _ in range(50):  # bounded: the oneway frames may still be on their way
            recalled = str(anthunder_client(address, PY, [{"method": "recall"}])[0]["result"])
            if recalled.count("o") == 3:
                break
            time.sleep(0.1)
        stats = proxy.stats()["clusters"]["py"]
    assert sorted(recalled.split(",")) == ["o0", "o1", "o2"]
    assert stats["upstream_rq_oneway"] == 3
    (conn,) = relay.connections
    assert [e.oneway for e in conn.requests if isinstance(e, RequestHead)] == [True] * 3
    assert [e for e in conn.responses if isinstance(e, ResponseHead)] == []


def test_anthunder_requests_are_routed_by_any_header_map_key_and_by_version() -> None:
    with anthunder_listener(PY, "A") as a, anthunder_listener(f"{PY}:2.0", "B") as b, anthunder_listener(PY, "C") as c:
        routes = [
            to("c", PY, headers={"x-tenant": {"exact": "gold"}}),
            {"match": {"service": {"prefix": PY}, "version": "2.0"}, "cluster": "b", "timeout_ms": 3000},
            to("a", {"prefix": PY}),
        ]
        with sofamesh(routes, {"a": [a.address], "b": [b.address], "c": [c.address]}) as (address, _):
            plain = anthunder_client(address, PY, [{"method": "whoami"},
                                                   {"method": "whoami", "headers": {"x-tenant": "gold"}},
                                                   {"method": "whoami", "headers": {"x-tenant": "iron"}}])
            versioned = anthunder_client(address, f"{PY}:2.0", [{"method": "whoami"}])
    assert [r["result"] for r in plain] == ["A", "C", "A"]
    assert versioned == [{"ok": True, "result": "B"}]


def test_multi_megabyte_frames_pass_whole_and_frames_over_the_listener_limit_get_status_9() -> None:
    big: list[dict[str, object]] = [{"method": "echo", "repeat": ["x", 3_000_000], "timeout": 20000},
                                    {"method": "whoami"}]
    with echo_provider_behind_sofamesh() as address:
        results = node_consumer(address, ECHO, big, timeout=90)
    assert results[0] == {"ok": True, "result": "A:" + "x" * 3_000_000}
    assert results[1] == {"ok": True, "result": "A"}

    port = free_port()
    with node_provider(ECHO, "A") as provider:
        config = proxy_config([to("a", f"{ECHO}:1.0")], {"a": [provider.address]}, port)
        config["listeners"][0]["limits"] = {"max_frame_bytes": 1_000_000}
        with ProxyProcess(config), ByteRelay(f"127.0.0.1:{port}") as relay:
            results = node_consumer(relay.address, ECHO, big[:1], timeout=90)
    assert results[0]["ok"] is False
    assert [e.status for c in relay.connections for e in c.responses if isinstance(e, ResponseHead)] == [9]


def test_bolt_is_served_by_every_worker_process() -> None:
    port = free_port()
    with node_provider(ECHO, "A") as provider:
        config = proxy_config([to("a", f"{ECHO}:1.0")], {"a": [provider.address]}, port)
        with ProxyProcess(config, args=("--workers", "2")) as proxy:
            served, rounds = [0, 0], 0
            # The kernel spreads connections over the workers by hash: 8 per round all land on one
            # worker once in 128 rounds, so another round is run (bounded) until both have served.
            while min(served) == 0 and rounds < 5:
                calls: list[dict[str, object]] = [{"method": "echo", "args": [f"r{rounds}w{i}"], "timeout": 10000}
                                                  for i in range(100)]
                results = node_consumer(f"127.0.0.1:{port}", ECHO, calls, clients=8, timeout=90)
                assert results == [{"ok": True, "result": f"A:r{rounds}w{i}"} for i in range(100)]
                rounds += 1
                workers = proxy.stats()["workers"]
                served = [w["listeners"]["rpc_in"]["downstream_rq_total"] for w in workers]
            assert len(served) == 2 and min(served) > 0 and sum(served) == 100 * rounds, served
            assert [w["clusters"]["a"]["upstream_rq_total"] for w in workers] == served  # each forwarded its own


def test_the_stream_idle_timeout_answers_a_silent_call_alone_while_its_connection_keeps_serving() -> None:
    """Envoy's stream_idle_timeout per stream on a multiplexed Bolt connection: sofa-rpc-node's
    calls share one connection; slow(8000), silent since it was sent, gets status 7 (timeout) from
    sofamesh 2 to 3 s later (the timeout plus at most one 1 s sweep), before the client's own 6 s
    timeout, while echo calls every 0.3 s keep that connection busy and are all answered on it.
    (Judged per connection, the busy connection would never let the silent call time out.)"""
    route = {"match": {"service": f"{ECHO}:1.0"}, "cluster": "a", "timeout_ms": 0}
    port = free_port()
    cfg = proxy_config([route], {}, port)
    cfg["listeners"][0]["stream_idle_timeout_ms"] = 2000
    echoes = range(20)  # one every 0.3 s for 6 s
    calls: list[dict[str, object]] = [{"method": "slow", "args": [8000], "timeout": 6000}]
    calls += [{"method": "echo", "args": [f"e{i}"], "timeout": 10000, "after": 300 * i} for i in echoes]
    with node_provider(ECHO, "A") as provider:
        cfg["clusters"] = [{"name": "a", "protocol": "bolt", "connect_timeout_ms": 500,
                            "endpoints": [provider.address]}]
        with ProxyProcess(cfg) as proxy, ByteRelay(f"127.0.0.1:{port}") as relay:
            results = node_consumer(relay.address, ECHO, calls)
            stats = proxy.stats()["listeners"]["rpc_in"]
    # answered by sofamesh (status 7 on the wire), not ended by the client's own timeout
    assert results[0]["ok"] is False and results[0]["name"] == "Error", results[0]
    assert results[1:] == [{"ok": True, "result": f"A:e{i}"} for i in echoes]
    [conn] = relay.connections
    statuses = sorted(r.status for r in conn.responses if isinstance(r, ResponseHead))
    assert statuses == [0] * len(echoes) + [7], statuses
    assert stats["downstream_rq_idle_timeout"] == 1 and stats["downstream_cx_total"] == 1, stats
