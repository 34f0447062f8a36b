"""Real Dubbo peers (dubbo2.js consumer, @dubbo.ts provider) directly, through a recording relay
decoded by the ``dubbo`` codec, and through a relay that rewrites request ids and answers locally."""

from __future__ import annotations

import socket
import time

from sofamesh.core.codec import CodecLimits, ReplyStatus, Role
from sofamesh.core.events import NEED_DATA, Event, Heartbeat, RequestHead, ResponseHead
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from tests.conformance.dubbo_peers import (
    CALLS,
    SERVICE,
    Provider,
    Relay,
    Transform,
    call,
    check_results,
    consume,
    java,
    require_dubbo_peers,
)

LIMITS = CodecLimits()


def drain(codec: DubboCodec, data: bytes) -> list[Event]:
    codec.receive_data(data)
    out: list[Event] = []
    for _ in range(100_000):
        ev = codec.next_event()
        if ev is NEED_DATA:
            return out
        assert not isinstance(ev, type(NEED_DATA))
        out.append(ev)
    raise AssertionError("codec produced too many events")


def test_consumer_calls_provider_directly_with_several_argument_types() -> None:
    require_dubbo_peers()
    with Provider("direct") as p:
        check_results(consume(p.address, [dict(c) for c in CALLS]), "direct")


def test_slow_method_times_out_at_the_consumer() -> None:
    require_dubbo_peers()
    with Provider() as p:
        t0 = time.monotonic()
        [res] = consume(p.address, [call("slow", java("int", 3000))], timeout_s=1)
        assert res["ok"] is False and "timeout" in str(res["err"])
        assert time.monotonic() - t0 < 3


def test_relayed_frames_decode_into_routable_heads_and_pass_through_byte_for_byte() -> None:
    require_dubbo_peers()
    with Provider("relayed") as p, Relay(("127.0.0.1", p.port)) as relay:
        check_results(consume(relay.address, [dict(c) for c in CALLS]), "relayed")
        time.sleep(0.1)
        requests = drain(DubboCodec(Role.SERVER, LIMITS), bytes(relay.to_upstream))
        responses = drain(DubboCodec(Role.CLIENT, LIMITS), bytes(relay.to_downstream))
    heads = [e for e in requests if isinstance(e, RequestHead)]
    assert b"".join(h.raw or b"" for h in heads) == bytes(relay.to_upstream)
    assert sorted((h.service, h.method, h.version, h.key("group")) for h in heads) == sorted(
        (c["interface"], c["method"], c["version"] or "", c["group"]) for c in CALLS)
    assert all(h.key("application") == "dubbo2.js" and not h.oneway for h in heads)
    res = [e for e in responses if isinstance(e, ResponseHead)]
    assert b"".join(r.raw or b"" for r in res) == bytes(relay.to_downstream)
    assert sorted(r.request_id for r in res) == sorted(h.request_id for h in heads)
    by_method = {h.request_id: h.method for h in heads}
    assert {(by_method[r.request_id], r.status) for r in res if r.status != 20} == {("fail", 70)}


def codec_relay() -> tuple[Transform, Transform]:
    """Like the proxy: new upstream ids wider than 32 bits, local replies for method ``blocked``.

    The ids stay below 2**53: both JavaScript peers hold the 64-bit id in a double, so a larger id
    comes back altered (an upstream id counter never gets that far)."""
    down, up = DubboCodec(Role.SERVER, LIMITS), DubboCodec(Role.CLIENT, LIMITS)
    ids: dict[int, int] = {}
    counter = iter(range(2**52, 2**53))

    def forward(data: bytes) -> tuple[bytes, bytes]:
        out, answer = [], []
        for ev in drain(down, data):
            if isinstance(ev, Heartbeat):
                answer.append(down.heartbeat_reply(ev))
            elif isinstance(ev, RequestHead) and ev.method == "blocked":
                message = f"no route for {ev.service}.blocked"
                answer.append(down.local_reply(ev, ReplyStatus.NO_ROUTE, message))
            elif isinstance(ev, RequestHead):
                new_id = next(counter)
                ids[new_id] = ev.request_id
                out.append(down.rewrite_request_id(ev.raw or b"", new_id))
        return b"".join(out), b"".join(answer)

    def back(data: bytes) -> tuple[bytes, bytes]:
        out, answer = [], []
        for ev in drain(up, data):
            if isinstance(ev, ResponseHead):
                out.append(up.rewrite_request_id(ev.raw or b"", ids.pop(ev.request_id)))
            elif isinstance(ev, Heartbeat) and not ev.reply:
                answer.append(up.heartbeat_reply(ev))
        return b"".join(out), b"".join(answer)

    return forward, back


def test_rewritten_64_bit_ids_and_local_replies_are_understood_by_the_real_consumer() -> None:
    require_dubbo_peers()
    with Provider("rewritten") as p, Relay(("127.0.0.1", p.port), codec_relay) as relay:
        calls = [dict(c) for c in CALLS]
        calls += [call("blocked"), call("add", java("int", 1), java("int", 1), repeat=50)]
        results = consume(relay.address, calls)
    check_results(results[: len(CALLS)], "rewritten")
    blocked = results[len(CALLS)]
    assert blocked["ok"] is False and "404|router unavailable: no route for" in str(blocked["err"])
    assert [r["res"] for r in results[len(CALLS) + 1 :]] == [2] * 50
    sent = relay.to_upstream
    ids = [int.from_bytes(sent[i + 4 : i + 12], "big") for i in _frame_offsets(sent)]
    assert ids and all(i >= 2**52 for i in ids)


def _frame_offsets(stream: bytearray) -> list[int]:
    offsets, pos = [], 0
    while pos + 16 <= len(stream):
        offsets.append(pos)
        pos += 16 + int.from_bytes(stream[pos + 12 : pos + 16], "big")
    return offsets


def test_provider_answers_our_heartbeat_with_an_event_our_codec_reads() -> None:
    require_dubbo_peers()
    codec = DubboCodec(Role.CLIENT, LIMITS)
    with Provider() as p, socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(codec.heartbeat(77))
        s.settimeout(5)
        beats = drain(codec, s.recv(4096))
    # @dubbo.ts answers a two-way heartbeat with a heartbeat of its own (an event, id 0).
    assert beats and all(isinstance(b, Heartbeat) for b in beats)
    assert SERVICE  # the provider serves any interface; nothing else was sent
