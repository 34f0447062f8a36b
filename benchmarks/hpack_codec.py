"""HPACK side by side: the ``hpack`` package (a dev dependency, for comparison) and the project's own
(``hpack_codec``), on the header blocks of gRPC unary calls on one connection (requests decoded,
responses and trailers encoded, as a server does).

Usage: ``python benchmarks/hpack_codec.py [--calls N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import hpack

from sofamesh.plugins.protocols.http2 import hpack_codec

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/echo.v1.Echo/Say"),
           (b":authority", b"echo:50051"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
           (b"grpc-timeout", b"1S"), (b"user-agent", b"grpc-python/1.85")]  # fmt: skip
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]


def request_blocks(calls: int) -> list[bytes]:
    """What a client's encoder (hpack's, as grpcio's and h2's behave alike here) sends."""
    enc = hpack.Encoder()
    return [enc.encode([*REQUEST, (b"x-call-id", str(i).encode())]) for i in range(calls)]


def run(
    blocks: list[bytes], decode: Callable[[bytes], object], encode: Callable[[list[tuple[bytes, bytes]]], bytes]
) -> int:
    n = 0
    for block in blocks:
        decode(block)
        encode(RESPONSE)
        encode(TRAILERS)
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    blocks = request_blocks(args.calls)

    def package() -> int:
        dec, enc = hpack.Decoder(), hpack.Encoder()
        return run(blocks, lambda b: dec.decode(b, raw=True), enc.encode)

    def own() -> int:
        dec, enc = hpack_codec.Decoder(), hpack_codec.Encoder()
        return run(blocks, dec.decode, enc.encode)

    best = {"hpack": float("inf"), "hpack_codec": float("inf")}
    for _ in range(args.rounds):  # interleaved, so all see the same machine state
        for name, fn in (("hpack", package), ("hpack_codec", own)):
            start = time.perf_counter()
            assert fn() == args.calls
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{name:12s} {seconds / args.calls * 1e6:7.2f} us per call (best of {args.rounds})")
    print(f"ratio hpack_codec/hpack: {best['hpack_codec'] / best['hpack']:.2f}")


if __name__ == "__main__":
    main()
