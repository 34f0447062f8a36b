"""The Hessian head readers on the request path, per call: Dubbo body head and ``group`` attachment
(every argument skipped), Bolt ``methodName`` and argument 0 from a Hessian 2.0 and a draft
(sofa-rpc-node) SofaRequest body. Process CPU time, best of REPEATS rounds, so a loaded machine's
noise stays out.

usage: PYTHONPATH=<checkout> python benchmarks/hessian_readers.py [N] [REPEATS]
Run it with PYTHONPATH at two checkouts, side by side, to compare them; asserts nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from sofamesh.plugins.protocols.bolt.hessian import argument_bytes, read_method_name
from sofamesh.plugins.protocols.dubbo.frames import (
    HEADER_LEN,
    encode_request,
    encode_string,
    read_attachments,
    read_body_head,
)

SERVICE = "com.sofamesh.demo.EchoService"
ATTACHMENTS = {"application": "dubbo2.js", "group": "g1", "interface": SERVICE, "path": SERVICE, "version": "1.0.0"}
_OBJ = b"C" + encode_string("com.example.Item") + b"\x92" + encode_string("id") + encode_string("name")
_ITEMS = _OBJ + b"\x58\xa4" + b"".join(b"\x60" + bytes((0x90 + i % 40,)) + encode_string(f"item-{i}") for i in range(20))
_MAP = b"H" + b"".join(encode_string(f"k{i}") + encode_string("v" * 20) for i in range(50)) + b"Z"
ECHO = encode_request(1, SERVICE, "echo", version="1.0.0", parameter_types="Ljava/lang/String;",
                      args=encode_string("hello dubbo"), attachments=ATTACHMENTS)
HEAVY = encode_request(2, SERVICE, "save", version="1.0.0", parameter_types="Ljava/util/Map;Ljava/util/List;",
                       args=_MAP + _ITEMS, attachments=ATTACHMENTS)

_FIELDS = ["targetAppName", "methodName", "targetServiceUniqueName", "requestProps", "methodArgSigs"]
SOFA_2 = (b"C" + encode_string("com.alipay.sofa.rpc.core.request.SofaRequest") + bytes((0x90 + len(_FIELDS),))
          + b"".join(encode_string(f) for f in _FIELDS) + b"\x60" + encode_string("app") + encode_string("sayHello")
          + encode_string(SERVICE + ":1.0") + b"H" + encode_string("k") + encode_string("v") + b"Z"
          + b"\x71" + encode_string("[string") + encode_string("java.lang.String") + encode_string("hello"))
_DRAFT_CLASS = b"com.alipay.sofa.rpc.core.request.SofaRequest"
SOFA_DRAFT = (b"O" + bytes((0x90 + len(_DRAFT_CLASS),)) + _DRAFT_CLASS + bytes((0x90 + len(_FIELDS),))
              + b"".join(encode_string(f) for f in _FIELDS) + b"o\x90" + encode_string("app")
              + encode_string("sayHello") + encode_string(SERVICE + ":1.0") + b"N" + b"N" + encode_string("hello"))


def best(n: int, repeats: int, fn: Callable[[], object]) -> float:
    rounds = []
    for _ in range(repeats):
        t0 = time.process_time()  # CPU time: rounds the scheduler takes us off the core do not count
        for _ in range(n):
            fn()
        rounds.append((time.process_time() - t0) / n * 1e6)
    return min(rounds)


def dubbo_group(frame: bytes) -> str | None:
    head = read_body_head(frame, HEADER_LEN)
    return read_attachments(frame, head, 1024).get("group")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    assert read_method_name(SOFA_2) == "sayHello" and read_method_name(SOFA_DRAFT) == "sayHello"
    assert argument_bytes(SOFA_2, 0) == encode_string("hello") == argument_bytes(SOFA_DRAFT, 0)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("dubbo echo: body head", lambda: read_body_head(ECHO, HEADER_LEN)),
        ("dubbo echo: head + group", lambda: dubbo_group(ECHO)),
        ("dubbo heavy: head + group", lambda: dubbo_group(HEAVY)),
        ("bolt 2.0: methodName", lambda: read_method_name(memoryview(SOFA_2))),
        ("bolt 2.0: argument 0", lambda: argument_bytes(memoryview(SOFA_2), 0)),
        ("bolt draft: methodName", lambda: read_method_name(memoryview(SOFA_DRAFT))),
        ("bolt draft: argument 0", lambda: argument_bytes(memoryview(SOFA_DRAFT), 0)),
    ]
    for label, fn in cases:
        print(f"{label:<32} {best(n, repeats, fn):8.2f} µs", flush=True)


if __name__ == "__main__":
    main()
