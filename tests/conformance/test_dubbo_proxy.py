"""dubbo2.js consumer -> sofamesh proxy -> @dubbo.ts providers: calls, errors, timeouts, routing."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA, Event, Heartbeat, ResponseHead
from sofamesh.core.hessian import HessianReader
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from sofamesh.plugins.protocols.dubbo.frames import encode_frame, encode_request
from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.dubbo_peers import (
    CALLS,
    SERVICE,
    Provider,
    call,
    check_results,
    consume,
    java,
    require_dubbo_peers,
)

OTHER = "com.sofamesh.demo.Other"
UNICODE = "com.sofamesh.démo.Ünïcode"


@pytest.fixture(scope="module")
def mesh() -> Iterator[dict[str, Any]]:
    require_dubbo_peers()
    with Provider("p1") as p1, Provider("p2") as p2, Provider("p3") as p3:
        listen = f"127.0.0.1:{free_port()}"
        config = {
            "listeners": [{
                "name": "dubbo_in",
                "address": listen,
                "protocols": ["dubbo"],
                "routes": [
                    {"match": {"service": SERVICE, "group": "g2"}, "cluster": "c2"},
                    {"match": {"service": SERVICE, "version": "2.0.0"}, "cluster": "c2"},
                    {"match": {"service": {"prefix": OTHER}}, "cluster": "c3"},
                    {"match": {"service": {"prefix": UNICODE}, "method": "whoami😀"}, "cluster": "c2"},
                    {"match": {"service": SERVICE, "method": "slow"}, "cluster": "c1", "timeout_ms": 500},
                    {"match": {"service": SERVICE, "headers": {"tenant": {"exact": "t3"}}}, "cluster": "c3"},
                    {"match": {"service": "com.sofamesh.demo.Gone"}, "cluster": "gone"},
                    {"match": {"service": SERVICE}, "cluster": "c1", "timeout_ms": 5000},
                ],
            }],
            "clusters": [
                {"name": "c1", "endpoints": [p1.address]},
                {"name": "c2", "endpoints": [p2.address]},
                {"name": "c3", "endpoints": [p3.address]},
                {"name": "gone", "endpoints": [f"127.0.0.1:{free_port()}"], "connect_timeout_ms": 300},
            ],
        }
        with ProxyProcess(config) as proxy:
            yield {"proxy": proxy, "address": listen}


def test_several_methods_and_argument_types_pass_through_the_proxy(mesh: dict[str, Any]) -> None:
    results = consume(mesh["address"], [dict(c) for c in CALLS])
    check_results(results, "p1")
    # CALLS[-1] asks for interface Other: routed by prefix to p3
    assert results[-1]["res"]["provider"] == "p3"


def test_a_method_that_throws_returns_the_provider_error(mesh: dict[str, Any]) -> None:
    [res] = consume(mesh["address"], [call("fail", java("java.lang.String", "kaput"))])
    assert res["ok"] is False and "p1: kaput" in res["err"]


@pytest.mark.parametrize(
    ("kwargs", "provider"),
    [
        ({}, "p1"),
        ({"group": "g2"}, "p2"),
        ({"group": "g1"}, "p1"),
        ({"version": "2.0.0"}, "p2"),
        ({"interface": OTHER + ".Sub", "version": None}, "p3"),
    ],
)
def test_routes_match_interface_version_and_group(mesh: dict[str, Any], kwargs: dict[str, Any],
                                                   provider: str) -> None:
    [res] = consume(mesh["address"], [call("whoami", **kwargs)])
    assert res["ok"], res
    assert res["res"]["provider"] == provider


def test_long_non_ascii_interface_and_method_names_route_exactly(mesh: dict[str, Any]) -> None:
    interface = UNICODE + "😀" * 40 + "X" * 600
    hit, miss = consume(mesh["address"], [call("whoami😀", interface=interface), call("whoami😀", interface="com.x")])
    assert hit["ok"], hit
    assert (hit["res"]["provider"], hit["res"]["interface"], hit["res"]["method"]) == ("p2", interface, "whoami😀")
    assert "404|router unavailable" in miss["err"]


def test_routes_match_any_attachment_as_a_header(mesh: dict[str, Any]) -> None:
    with_tenant, other_tenant, without = consume(mesh["address"], [
        call("whoami", attachments={"tenant": "t3"}),
        call("whoami", version="1.0.1", attachments={"tenant": "t4"}),
        call("whoami", version="1.0.2"),
    ])
    assert with_tenant["res"]["provider"] == "p3"
    assert with_tenant["res"]["attachments"]["tenant"] == "t3"  # forwarded untouched
    assert other_tenant["res"]["provider"] == without["res"]["provider"] == "p1"


def test_unknown_interface_gets_a_local_service_not_found_reply(mesh: dict[str, Any]) -> None:
    [res] = consume(mesh["address"], [call("echo", java("java.lang.String", "x"), interface="com.nope.X")])
    assert res["ok"] is False
    assert "404|router unavailable" in res["err"]


def test_slow_method_gets_a_timeout_reply_from_the_route_timeout(mesh: dict[str, Any]) -> None:
    t0 = time.monotonic()
    [res] = consume(mesh["address"], [call("slow", java("int", 3000))])
    elapsed = time.monotonic() - t0
    assert res["ok"] is False and "504|timeout" in res["err"], res
    assert res["ms"] < 2500 and elapsed < 10


def test_an_unreachable_provider_gets_an_upstream_error_reply(mesh: dict[str, Any]) -> None:
    [res] = consume(mesh["address"], [call("echo", java("java.lang.String", "x"), interface="com.sofamesh.demo.Gone")])
    assert res["ok"] is False
    assert re.search(r"50[234]\|", res["err"]), res


def test_stopped_provider_gets_an_error_reply_and_the_proxy_keeps_serving() -> None:
    require_dubbo_peers()
    p = Provider("short-lived")
    listen = f"127.0.0.1:{free_port()}"
    config = {
        "listeners": [{"name": "d", "address": listen, "protocols": ["dubbo"],
                       "routes": [{"match": {"service": SERVICE}, "cluster": "c", "timeout_ms": 3000}]}],
        "clusters": [{"name": "c", "endpoints": [p.address], "connect_timeout_ms": 300}],
    }
    try:
        with ProxyProcess(config) as proxy:
            [ok] = consume(listen, [call("echo", java("java.lang.String", "before"))])
            assert ok["res"] == "before"
            p.stop()
            [gone] = consume(listen, [call("echo", java("java.lang.String", "after"))])
            assert gone["ok"] is False and re.search(r"50[234]\|", gone["err"]), gone
            with Provider("reborn", port=int(p.address.rsplit(":", 1)[1])):
                deadline = time.monotonic() + 10
                for _ in range(50):
                    [back] = consume(listen, [call("whoami")])
                    if back["ok"] or time.monotonic() > deadline:
                        break
                    time.sleep(0.3)
                assert back["ok"] and back["res"]["provider"] == "reborn", back
            assert proxy.stats()["listeners"]["d"]["downstream_rq_total"] >= 3
    finally:
        p.stop()


def test_200_concurrent_calls_on_one_connection_all_answer(mesh: dict[str, Any]) -> None:
    calls = [call("add", java("int", i), java("int", 1000)) for i in range(200)]
    results = consume(mesh["address"], calls, wall=90)
    assert [r["res"] for r in results] == [i + 1000 for i in range(200)]
    stats = mesh["proxy"].stats()
    add = stats["rpc"].get(f"dubbo_in|dubbo|{SERVICE}|add")
    assert add is not None and add["requests"] >= 200, stats["rpc"].keys()


def _exchange(address: str, data: bytes, want: int, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; read until ``want`` bytes or the proxy closes."""
    host, port = address.rsplit(":", 1)
    got = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


def test_heartbeats_are_answered_by_the_proxy(mesh: dict[str, Any]) -> None:
    beat = bytes.fromhex("dabbe2") + bytes(1) + (41).to_bytes(8, "big") + bytes.fromhex("000000014e")
    reply = _exchange(mesh["address"], beat, 17)
    [ev] = _events(Role.CLIENT, reply)
    assert isinstance(ev, Heartbeat) and ev.reply and ev.request_id == 41
    assert reply[2:4] == bytes.fromhex("2214")


def test_oneway_request_gets_no_answer_and_the_next_call_does(mesh: dict[str, Any]) -> None:
    oneway = encode_request(5, SERVICE, "add", parameter_types="II", args=b"\x91\x92", two_way=False)
    twoway = encode_request(6, SERVICE, "add", parameter_types="II", args=b"\x93\x94")
    reply = _exchange(mesh["address"], oneway + twoway, 1)
    [res] = _events(Role.CLIENT, reply)
    assert isinstance(res, ResponseHead) and (res.request_id, res.status) == (6, 20)


def test_corrupt_request_gets_a_bad_request_reply_and_the_connection_closes(mesh: dict[str, Any]) -> None:
    bad = encode_frame(0xC2, 0, 9, b"\x05ab")  # a string that claims 5 chars and has 2
    reply = _exchange(mesh["address"], bad + encode_request(10, SERVICE, "nothing"), 10_000)
    [res] = _events(Role.CLIENT, reply)  # nothing for request 10: the connection was closed
    assert isinstance(res, ResponseHead) and (res.request_id, res.status, res.http_status) == (9, 40, 400)
    assert "400|bad request" in HessianReader(res.raw or b"", 16).read_string()


def _events(role: Role, data: bytes) -> list[Event]:
    codec = DubboCodec(role, CodecLimits())
    codec.receive_data(data)
    out: list[Event] = []
    while (ev := codec.next_event()) is not NEED_DATA:
        assert not isinstance(ev, type(NEED_DATA))
        out.append(ev)
    return out


def _single_provider_proxy(provider: Provider, **cluster: Any) -> tuple[ProxyProcess, str]:
    listen = f"127.0.0.1:{free_port()}"
    config = {
        "listeners": [{"name": "d", "address": listen, "protocols": ["dubbo"],
                       "routes": [{"match": {"service": SERVICE}, "cluster": "c", "timeout_ms": 8000}]}],
        "clusters": [{"name": "c", "endpoints": [provider.address], "connect_timeout_ms": 300, **cluster}],
    }
    return ProxyProcess(config), listen


def test_requests_in_flight_when_the_provider_dies_each_get_a_reset_reply_at_once() -> None:
    require_dubbo_peers()
    p = Provider("dying")
    proxy, listen = _single_provider_proxy(p)
    try:
        with proxy, ThreadPoolExecutor(1) as pool:
            calls = pool.submit(consume, listen, [call("slow", java("int", 6000), repeat=5)])
            deadline = time.monotonic() + 15
            while proxy.stats()["clusters"]["c"]["upstream_rq_active"] < 5:  # all five at the provider
                assert time.monotonic() < deadline, proxy.stats()["clusters"]["c"]
                time.sleep(0.05)
            t0 = time.monotonic()
            p.stop()
            results = calls.result(30)
            assert time.monotonic() - t0 < 4  # well before the 6 s method or the 8 s route timeout
            assert [r["ok"] for r in results] == [False] * 5
            assert all(re.search(r"50[23]\|", r["err"]) for r in results), results
            assert proxy.stats()["clusters"]["c"]["upstream_cx_destroy_with_active_rq"] == 1
    finally:
        p.stop()


def test_idle_upstream_connection_survives_heartbeats_to_a_dubbo_ts_provider() -> None:
    require_dubbo_peers()
    with Provider("idle") as p:
        proxy, listen = _single_provider_proxy(p, heartbeat_interval_ms=200)
        with proxy:
            assert consume(listen, [call("echo", java("java.lang.String", "a"))])[0]["res"] == "a"
            time.sleep(3.5)  # idle across several heartbeat ticks (the proxy sweeps once a second)
            assert consume(listen, [call("echo", java("java.lang.String", "b"))])[0]["res"] == "b"
            stats = proxy.stats()["clusters"]["c"]
            assert stats["upstream_heartbeat_sent"] >= 1
            assert (stats["upstream_cx_total"], stats["upstream_heartbeat_failed"]) == (1, 0), stats


def test_the_stream_idle_timeout_answers_a_silent_call_alone_while_its_connection_keeps_serving() -> None:
    """Envoy's stream_idle_timeout per stream on a multiplexed Dubbo connection: dubbo2.js's calls
    share one connection; slow(8000), silent since it was sent, gets sofamesh's timeout reply 2 to 3 s
    later, before the client's own 6 s timeout, while echo calls every 0.3 s keep the connection busy
    and are all answered on it. (Judged per connection, the busy connection would never let the
    silent call time out.)"""
    require_dubbo_peers()
    with Provider("p1") as p1:
        listen = f"127.0.0.1:{free_port()}"
        config = {
            "listeners": [{"name": "dubbo_in", "address": listen, "protocols": ["dubbo"],
                           "stream_idle_timeout_ms": 2000,
                           "routes": [{"match": {"service": SERVICE}, "cluster": "c1", "timeout_ms": 0}]}],
            "clusters": [{"name": "c1", "endpoints": [p1.address]}],
        }
        calls = [call("slow", java("int", 8000))]
        calls += [{**call("echo", java("java.lang.String", f"e{i}")), "after": 300 * i} for i in range(20)]
        with ProxyProcess(config) as proxy:
            results = consume(listen, calls, timeout_s=6)
            stats = proxy.stats()["listeners"]["dubbo_in"]
    slow, echoes = results[0], results[1:]
    assert slow["ok"] is False and slow["ms"] < 5000, slow  # not the client's "remote invoke timeout" at 6 s
    assert "31|" in slow["err"] or "request timeout" in slow["err"], slow
    assert [(r["ok"], r["res"]) for r in echoes] == [(True, f"e{i}") for i in range(20)], echoes
    assert stats["downstream_rq_idle_timeout"] == 1 and stats["downstream_cx_total"] == 1, stats
