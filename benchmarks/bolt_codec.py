"""Bolt codec cost per frame: decode a request, decode a response, rewrite an id (v1 and v2+CRC).

usage: python benchmarks/bolt_codec.py [N]   (prints µs per operation; asserts nothing)
Frames are the ones captured from sofa-rpc-node in tests/unit/plugins/protocols/bolt.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA
from sofamesh.plugins.protocols.bolt import BoltCodec

_CAPTURED = Path(__file__).resolve().parents[1] / "tests/unit/plugins/protocols/bolt/bolt_captured.py"
_spec = importlib.util.spec_from_file_location("bolt_captured", _CAPTURED)
assert _spec is not None and _spec.loader is not None
captured = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(captured)


def per_op(label: str, n: int, fn: object) -> None:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    dt = time.perf_counter() - t0
    print(f"{label:<44} {dt / n * 1e6:8.2f} µs")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for name, req, resp in (("v1", captured.NODE_V1_REQUEST, captured.NODE_V1_RESPONSE),
                            ("v2+crc", captured.NODE_V2CRC_REQUEST, captured.NODE_V2CRC_RESPONSE)):
        server = BoltCodec(Role.SERVER, CodecLimits())
        client = BoltCodec(Role.CLIENT, CodecLimits())
        burst_req = req * 100
        burst_resp = resp * 100

        def decode_requests(codec: BoltCodec = server, burst: bytes = burst_req) -> None:
            for _ in range(n // 100):
                codec.receive_data(burst)
                while codec.next_event() is not NEED_DATA:
                    pass

        def decode_responses(codec: BoltCodec = client, burst: bytes = burst_resp) -> None:
            for _ in range(n // 100):
                codec.receive_data(burst)
                while codec.next_event() is not NEED_DATA:
                    pass

        def rewrite(codec: BoltCodec = client, frame: bytes = req) -> None:
            for i in range(n):
                codec.rewrite_request_id(frame, i)

        def resolve_method(codec: BoltCodec = server, frame: bytes = req) -> None:
            codec.receive_data(frame)
            head = codec.next_event()
            for _ in range(n):
                head.resolve("method")  # type: ignore[union-attr]

        per_op(f"{name}: decode request (header map parsed)", n, decode_requests)
        per_op(f"{name}: decode response", n, decode_responses)
        per_op(f"{name}: rewrite request id", n, rewrite)
        per_op(f"{name}: method from hessian body (cached)", n, resolve_method)


if __name__ == "__main__":
    main()
