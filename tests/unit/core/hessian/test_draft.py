"""The draft Hessian 2 codec (hessian.js-1 v2, sofa-hessian-node) for SOFARegistry's Java objects."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from sofamesh.core.hessian import HessianError, JavaLong, JavaObject, TypedList
from sofamesh.core.hessian.draft import decode, encode

# A PublisherRegister as sofa-registry-node 0.0.1 (sofa-bolt-node + hessian.js-1 EncoderV2) writes it.
CLIENT_PUBLISH = bytes.fromhex(
    "4fc835636f6d2e616c697061792e736f66612e72656769737472792e636f72652e6d6f64656c2e5075626c6973686572"
    "5265676973746572a00a696e7374616e63654964047a6f6e65076170704e616d65066461746149640567726f75700970"
    "726f63657373496408726567697374496408636c69656e7449640a64617461496e666f496402697004706f7274096576"
    "656e74547970650776657273696f6e0974696d657374616d700a6174747269627574657308646174614c6973746f9001"
    "690c44454641554c545f5a4f4e450361707016636f6d2e782e4563686f3a312e304044454641554c540d44454641554c"
    "545f47524f55504e0272314e4e4e4e085245474953544552e14c000001a2132e1de04e5674000e6a6176612e7574696c"
    "2e4c6973746e014fbb636f6d2e616c697061792e736f66612e72656769737472792e636f72652e6d6f64656c2e446174"
    "61426f789104646174616f911a626f6c743a2f2f3132372e302e302e313a31323230303f613d317a")


def test_a_publisher_register_written_by_the_node_client_decodes_field_by_field() -> None:
    obj = decode(CLIENT_PUBLISH)
    assert isinstance(obj, JavaObject)
    assert obj.class_name == "com.alipay.sofa.registry.core.model.PublisherRegister"
    assert list(obj.fields)[:5] == ["instanceId", "zone", "appName", "dataId", "group"]
    assert obj.get("dataId") == "com.x.Echo:1.0@DEFAULT"
    assert obj.get("eventType") == "REGISTER"
    assert obj.get("version") == 1
    assert obj.get("timestamp") == 1795618119136
    assert obj.get("port") is None
    boxes = obj.get("dataList")
    assert [b.class_name for b in boxes] == ["com.alipay.sofa.registry.core.model.DataBox"]
    assert boxes[0].get("data") == "bolt://127.0.0.1:12200?a=1"


def test_re_encoding_the_decoded_client_message_gives_back_its_bytes() -> None:
    obj = decode(CLIENT_PUBLISH)
    obj.fields["version"] = JavaLong(obj.fields["version"])
    obj.fields["timestamp"] = JavaLong(obj.fields["timestamp"])
    obj.fields["dataList"] = TypedList(obj.fields["dataList"], "java.util.List")
    assert encode(obj) == CLIENT_PUBLISH


@pytest.mark.parametrize("value", [0, -16, 47, 48, -17, 2047, -2048, 2048, 262143, -262144, 262144,
                                   2**31 - 1, -(2**31)])
def test_ints_of_every_width_round_trip(value: int) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize("value", [0, -8, 15, 16, -2048, 2047, 262143, -262144, 2**31 - 1, 2**31, -(2**63)])
def test_longs_of_every_width_round_trip(value: int) -> None:
    assert decode(encode(JavaLong(value))) == value


@pytest.mark.parametrize("text", ["", "a" * 31, "b" * 32, "c" * 1024, "é" * 40000, "x\U0001f600y" * 20000])
def test_strings_round_trip_with_lengths_in_utf16_units_across_chunks(text: str) -> None:
    data = encode(text)
    assert decode(data) == text
    if len(text) > 0x8000:
        assert data[0] == 0x73  # 's': a non-final chunk first


def test_a_supplementary_character_is_written_as_two_three_byte_surrogates() -> None:
    assert encode("\U0001f600") == bytes([2]) + "\ud83d\ude00".encode("utf-8", "surrogatepass")


def test_objects_lists_maps_and_booleans_nest_and_class_definitions_are_written_once() -> None:
    box = "com.alipay.sofa.registry.core.model.DataBox"
    value = JavaObject("R", {"ok": True, "no": False, "none": None,
                             "data": {"Z1": [JavaObject(box, {"data": "a"}), JavaObject(box, {"data": "b"})]}})
    data = encode(value)
    assert data.count(box.encode()) == 1
    back = decode(data)
    assert back.get("ok") is True and back.get("no") is False and back.get("none") is None
    assert [b.get("data") for b in back.get("data")["Z1"]] == ["a", "b"]


@pytest.mark.parametrize("data", [b"", b"O\x91", b"o\x90", b"V\x6e\x02\x01", b"S\x00\x05ab", b"\xff", b"\x40"])
def test_bytes_that_are_not_a_whole_value_raise(data: bytes) -> None:
    with pytest.raises(HessianError):
        decode(data)


def test_a_value_it_cannot_write_raises() -> None:
    with pytest.raises(HessianError, match="cannot write a set"):
        encode({1})
    with pytest.raises(HessianError):
        encode(2**40)


def test_doubles_dates_and_binary_take_the_draft_forms_and_read_back() -> None:
    when = datetime(2020, 6, 1, 12, 30, 0, 123000, tzinfo=UTC)
    blob = bytes(range(256)) * 300  # longer than one 0x8000 chunk
    assert encode(1.5) == b"D" + struct.pack(">d", 1.5)
    assert encode(when) == b"d" + struct.pack(">q", 1591014600123)
    assert encode(b"hi") == b"B\x00\x02hi"
    assert encode(blob)[:3] == b"b\x80\x00"
    assert decode(encode([1.5, when, blob])) == [1.5, when, blob]
