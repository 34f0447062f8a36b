"""Dubbo codec costs per request, side by side: head decode, group lookup, id rewrite, local reply.

usage: python benchmarks/dubbo_codec.py [REQUESTS]   Prints µs per operation; asserts nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from sofamesh.core.codec import CodecLimits, ReplyStatus, Role
from sofamesh.core.events import RequestHead
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from sofamesh.plugins.protocols.dubbo.frames import encode_request, encode_string

SERVICE = "com.sofamesh.demo.EchoService"
ATTACHMENTS = {"application": "dubbo2.js", "group": "g1", "interface": SERVICE, "path": SERVICE,
               "version": "1.0.0"}
# echo(String) and a heavier call: a map of 50 entries and a 20-element list of class instances.
ECHO = encode_request(1, SERVICE, "echo", version="1.0.0", parameter_types="Ljava/lang/String;",
                      args=encode_string("hello dubbo"), attachments=ATTACHMENTS)
_OBJ = b"C" + encode_string("com.example.Item") + b"\x92" + encode_string("id") + encode_string("name")
_ITEMS = _OBJ + b"\x58\xa4" + b"".join(b"\x60" + bytes((0x90 + i % 40,)) + encode_string(f"item-{i}")
                                       for i in range(20))
_MAP = b"H" + b"".join(encode_string(f"k{i}") + encode_string("v" * 20) for i in range(50)) + b"Z"
HEAVY = encode_request(2, SERVICE, "save", version="1.0.0", parameter_types="Ljava/util/Map;Ljava/util/List;",
                       args=_MAP + _ITEMS, attachments=ATTACHMENTS)


def per_op(label: str, n: int, fn: Callable[[], object], ops_per_call: int = 1) -> None:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = time.perf_counter() - t0
    print(f"{label:<40} {dt / (n * ops_per_call) * 1e6:7.2f} µs", flush=True)


def head_of(frame: bytes) -> RequestHead:
    codec = DubboCodec(Role.SERVER, CodecLimits())
    codec.receive_data(frame)
    ev = codec.next_event()
    assert isinstance(ev, RequestHead)
    return ev


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    codec = DubboCodec(Role.SERVER, CodecLimits())
    stream = ECHO * 100
    print(f"{n} operations each; echo frame {len(ECHO)} bytes, heavy frame {len(HEAVY)} bytes")

    def decode_100() -> None:
        codec.receive_data(stream)
        for _ in range(100):
            codec.next_event()

    per_op("decode echo head, one codec, 100/batch", n // 100, decode_100, 100)
    for label, frame in (("echo", ECHO), ("heavy", HEAVY)):
        per_op(f"decode {label} head, fresh codec", n, lambda f=frame: head_of(f))  # type: ignore[misc]
        per_op(f"decode {label} head + resolve group", n,
               lambda f=frame: head_of(f).key("group"))  # type: ignore[misc]
    head = head_of(ECHO)
    per_op("rewrite request id", n, lambda: codec.rewrite_request_id(ECHO, 123456789))
    per_op("local reply (timeout)", n, lambda: codec.local_reply(head, ReplyStatus.TIMEOUT, "after 3000 ms"))


if __name__ == "__main__":
    main()
