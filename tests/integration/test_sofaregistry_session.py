"""Pilot's SOFARegistry session server on real sockets: what it answers to frames no client library sends."""

from __future__ import annotations

import asyncio

from sofamesh.core.hessian import JavaLong, JavaObject
from sofamesh.core.hessian.draft import decode, encode
from sofamesh.plugins.protocols.bolt import frames as bf
from sofamesh.plugins.registries.sofaregistry.session import PUBLISHER_REGISTER, SessionServer

T = 5.0


async def read_frame(reader: asyncio.StreamReader) -> tuple[tuple[int, ...], bytes]:
    head = await asyncio.wait_for(reader.readexactly(bf.V1_RESPONSE.size), T)
    fields = bf.V1_RESPONSE.unpack(head)
    body = await asyncio.wait_for(reader.readexactly(fields[7] + fields[8] + fields[9]), T)
    return fields, body


def publish(regist_id: str, data: list[str], event: str = "REGISTER") -> bytes:
    return encode(JavaObject(PUBLISHER_REGISTER, {
        "dataId": "svc:1.0@DEFAULT", "group": "DEFAULT_GROUP", "registId": regist_id,
        "version": JavaLong(1), "eventType": event, "zone": "Z",
        "dataList": [JavaObject("com.alipay.sofa.registry.core.model.DataBox", {"data": d}) for d in data]}))


async def _bad_body_then_serving() -> None:
    changes: list[str] = []
    server = SessionServer("127.0.0.1:0", None, on_change=changes.append)
    await server.start()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.bolt_port), T)
        cls = PUBLISHER_REGISTER.encode()
        writer.write(bf.encode_request(7, class_name=cls, content=b"\x4f\x91"))
        fields, _ = await read_frame(reader)
        assert (fields[4], fields[6]) == (7, bf.STATUS_SERVER_DESERIAL_EXCEPTION)

        writer.write(bf.encode_request(0, cmdcode=bf.CMD_HEARTBEAT) + bf.encode_request(
            8, class_name=cls, content=publish("r1", ["bolt://127.0.0.1:1"])))
        beat, _ = await read_frame(reader)
        assert (beat[2], beat[4], beat[6]) == (bf.CMD_HEARTBEAT, 0, 0)
        fields, body = await read_frame(reader)
        answer = decode(body[fields[7] + fields[8]:])
        assert (fields[4], fields[6]) == (8, 0)
        assert answer.class_name.endswith("RegisterResponse")
        assert (answer.get("success"), answer.get("registId"), answer.get("version")) == (True, "r1", 1)
        assert changes == ["svc:1.0@DEFAULT"] and server.publications["r1"].data == ["bolt://127.0.0.1:1"]

        writer.close()
        for _ in range(100):
            if "r1" not in server.publications:
                break
            await asyncio.sleep(0.02)
        assert "r1" not in server.publications and changes == ["svc:1.0@DEFAULT"] * 2
    finally:
        await server.stop()


async def _v2_closed() -> None:
    server = SessionServer("127.0.0.1:0", None)
    await server.start()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.bolt_port), T)
        writer.write(b"\x02" + bytes(30))
        assert await asyncio.wait_for(reader.read(), T) == b""
        writer.close()
    finally:
        await server.stop()


def test_a_bad_body_gets_a_deserialization_status_and_the_connection_keeps_serving() -> None:
    asyncio.run(asyncio.wait_for(_bad_body_then_serving(), 20))


def test_a_bolt_v2_connection_is_closed() -> None:
    asyncio.run(asyncio.wait_for(_v2_closed(), 20))
