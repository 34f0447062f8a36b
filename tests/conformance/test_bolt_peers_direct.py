"""The real SOFA peers work with each other directly, and the Bolt codec reads their real traffic.

The relay tests put a test-local byte relay between a real client and a real server: every byte is
fed through a server-role and a client-role ``BoltCodec`` and the decoded events are checked; in
some tests the relay renumbers request ids or answers with the codec's local replies, so the real
peers themselves accept or reject what the codec wrote.
"""

from __future__ import annotations

import pytest

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.events import Heartbeat, RequestHead, ResponseHead
from sofamesh.plugins.protocols.bolt import BoltCodec, Framing
from tests.conformance.bolt_peers import ByteRelay, anthunder_client, anthunder_listener, node_consumer, node_provider

ECHO = "com.example.EchoService"
PY = "com.example.Py"
NODE_CALLS: list[dict[str, object]] = [
    {"method": "echo", "args": ["hi"]},
    {"method": "plus", "args": [2, 3]},
    {"method": "fail", "args": ["x"]},
    {"method": "whoami"},
]


def check_node_results(results: list[dict[str, object]], tag: str) -> None:
    assert results[0] == {"ok": True, "result": f"{tag}:hi"}
    assert results[1] == {"ok": True, "result": 5}
    assert results[2]["ok"] is False and "fail: x" in str(results[2]["message"])
    assert results[3] == {"ok": True, "result": tag}


def test_sofa_rpc_node_consumer_calls_the_provider_directly() -> None:
    with node_provider(ECHO, "A") as provider:
        results = node_consumer(provider.address, ECHO, [*NODE_CALLS, {"method": "slow", "args": [1500],
                                                                       "timeout": 300}])
    check_node_results(results, "A")
    assert results[4]["ok"] is False and results[4]["name"] == "RpcResponseTimeoutError"


def test_anthunder_client_calls_the_listener_directly() -> None:
    with anthunder_listener(PY, "B") as listener:
        calls: list[dict[str, object]] = [{"method": "echo", "body": "hi"}, {"method": "whoami"},
                                          {"method": "fail", "body": "x"}]
        results = anthunder_client(listener.address, PY, calls)
    assert results[:2] == [{"ok": True, "result": "B:hi"}, {"ok": True, "result": "B"}]
    assert results[2]["ok"] is False  # anthunder drops error responses: its future fails


@pytest.mark.parametrize(("framing", "proto", "ver1", "crc"), [
    ("v1", 1, 1, False), ("v2", 2, 1, False), ("v2crc", 2, 2, True)])
def test_the_codec_decodes_sofa_rpc_node_traffic_in_each_bolt_framing(
        framing: str, proto: int, ver1: int, crc: bool) -> None:
    with node_provider(ECHO, "A") as provider, ByteRelay(provider.address) as relay:
        results = node_consumer(relay.address, ECHO, NODE_CALLS, framing=framing)
    check_node_results(results, "A")
    (conn,) = relay.connections
    assert conn.errors == []
    requests = [e for e in conn.requests if isinstance(e, RequestHead)]
    responses = [e for e in conn.responses if isinstance(e, ResponseHead)]
    assert [r.key("method") for r in requests] == ["echo", "plus", "fail", "whoami"]
    assert {r.service for r in requests} == {f"{ECHO}:1.0"}
    assert all(r.method == "" and r.version == "1.0" and r.timeout_ms == 3000 for r in requests)
    framings = {r.meta for r in [*requests, *responses]}
    assert {(f.proto, f.ver1, f.has_crc) for f in framings if isinstance(f, Framing)} == {(proto, ver1, crc)}
    assert sorted(r.request_id for r in responses) == sorted(r.request_id for r in requests)
    by_id = {r.request_id: r for r in responses}
    statuses = [by_id[r.request_id].status for r in requests]
    assert statuses[0] == statuses[1] == statuses[3] == 0 and statuses[2] != 0
    assert b"".join(r.raw or b"" for r in requests) == bytes(conn.downstream_bytes)
    assert b"".join(r.raw or b"" for r in conn.responses if not isinstance(r, Heartbeat)) == bytes(
        conn.upstream_bytes)


def test_the_codec_decodes_anthunder_traffic_and_its_sofa_head_keys() -> None:
    with anthunder_listener(PY, "B") as listener, ByteRelay(listener.address) as relay:
        calls: list[dict[str, object]] = [{"method": "echo", "body": "hi"}, {"method": "whoami"}]
        results = anthunder_client(relay.address, PY, calls)
    assert [r["result"] for r in results] == ["B:hi", "B"]
    (conn,) = relay.connections
    requests = [e for e in conn.requests if isinstance(e, RequestHead)]
    assert [(r.service, r.method) for r in requests] == [(PY, "echo"), (PY, "whoami")]
    assert all(r.headers.get("sofa_head_target_service") == PY for r in requests)
    assert all(isinstance(r.meta, Framing) and r.meta.codec == 11 for r in requests)
    assert [e.status for e in conn.responses if isinstance(e, ResponseHead)] == [0, 0]


def test_renumbered_request_ids_keep_crc_frames_valid_for_real_peers() -> None:
    calls = [{"method": "echo", "args": [f"m{i}"]} for i in range(50)]
    with node_provider(ECHO, "A") as provider, ByteRelay(provider.address, id_offset=0x5A5A5A5A) as relay:
        results = node_consumer(relay.address, ECHO, calls, framing="v2crc")
    assert results == [{"ok": True, "result": f"A:m{i}"} for i in range(50)]
    (conn,) = relay.connections
    assert {e.request_id for e in conn.responses if isinstance(e, ResponseHead)} == {
        e.request_id ^ 0x5A5A5A5A for e in conn.requests if isinstance(e, RequestHead)}


def _answer_some_locally(codec: BoltCodec, head: RequestHead) -> bytes | None:
    method = head.key("method")
    if method == "whoami":
        return codec.local_reply(head, ReplyStatus.NO_ROUTE, "no route")
    if method == "plus":
        return codec.local_reply(head, ReplyStatus.TIMEOUT, "timeout")
    return None


@pytest.mark.parametrize("framing", ["v1", "v2crc"])
def test_sofa_rpc_node_takes_local_replies_as_errors_and_keeps_the_connection(framing: str) -> None:
    calls: list[dict[str, object]] = [{"method": "whoami"}, {"method": "plus", "args": [1, 2]},
                                      {"method": "echo", "args": ["after"]}]
    with node_provider(ECHO, "A") as provider:
        with ByteRelay(provider.address, answer=_answer_some_locally) as relay:
            results = node_consumer(relay.address, ECHO, calls, framing=framing)
    assert [r["ok"] for r in results] == [False, False, True]
    assert results[2]["result"] == "A:after"
    assert all(r["name"] == "Error" for r in results[:2])  # sofa-rpc-node's error for an empty error body


def test_anthunder_takes_a_local_reply_as_an_error_and_keeps_the_connection() -> None:
    with anthunder_listener(PY, "B") as listener, ByteRelay(listener.address,
                                                             answer=_answer_some_locally) as relay:
        results = anthunder_client(relay.address, PY, [{"method": "whoami"}, {"method": "echo", "body": "x"}])
    assert results[0]["ok"] is False
    assert results[1] == {"ok": True, "result": "B:x"}
    assert len(relay.connections) == 1
