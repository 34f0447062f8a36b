"""gRPC unary calls with h2load (Debian nghttp2-client): direct to a grpcio server, and through a
sofamesh proxy listening with the ``http2`` codec, side by side in one run.

The server is ``tests/conformance/peers/grpc/echo_server.py``. Each call is a 5-byte gRPC message
to ``/sofamesh.test.Echo/Unary``. Prints requests/s and failures for each path and the ratio.
Until the kernel forwards HTTP/2 upstream streams, the proxied run reports its failures instead.
h2load judges HTTP status only, and a gRPC error is ``:status 200`` with ``grpc-status`` in the
trailers: check correctness with the conformance tests, not with this count.

Usage: ``python benchmarks/grpc_h2load.py [-n 20000] [-c 4] [-m 16] [--direct-only]``
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sofamesh.testing import ProxyProcess, free_port

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "conformance" / "peers" / "grpc" / "echo_server.py"
BODY = b"\x00\x00\x00\x00\x05hello"


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, str(SERVER)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints READY first, before any log
    if not line.startswith(b"READY "):
        proc.kill()
        raise SystemExit(f"echo server did not start: {line!r}")
    return proc, int(line.split()[1])


def h2load(port: int, args: argparse.Namespace, body: Path) -> dict[str, float]:
    cmd = ["h2load", "-n", str(args.n), "-c", str(args.c), "-m", str(args.m), "-d", str(body),
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}/sofamesh.test.Echo/Unary"]
    out = subprocess.run(cmd, capture_output=True, timeout=600, check=False).stdout.decode()
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    ok2xx = re.search(r"status codes: (\d+) 2xx", out)
    return {
        "req_s": float(rps.group(1)) if rps else 0.0,
        "succeeded": float(done.group(1)) if done else 0.0,
        "failed": float(done.group(2)) if done else float(args.n),
        "2xx": float(ok2xx.group(1)) if ok2xx else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20_000, help="calls")
    parser.add_argument("-c", type=int, default=4, help="connections")
    parser.add_argument("-m", type=int, default=16, help="streams in flight per connection")
    parser.add_argument("--direct-only", action="store_true")
    args = parser.parse_args()
    server, port = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            body = Path(tmp) / "body"
            body.write_bytes(BODY)
            results = {"direct": h2load(port, args, body)}
            if not args.direct_only:
                listen = free_port()
                config = {
                    "listeners": [{"name": "grpc_in", "address": f"127.0.0.1:{listen}", "protocols": ["http2"],
                                   "routes": [{"match": {"service": "sofamesh.test.Echo"}, "cluster": "echo",
                                               "timeout_ms": 5000}]}],
                    "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [f"127.0.0.1:{port}"]}],
                }
                with ProxyProcess(config):
                    time.sleep(0.2)
                    results["sofamesh"] = h2load(listen, args, body)
    finally:
        server.terminate()
        server.wait(timeout=10)
    for name, r in results.items():
        print(f"{name:9s} {r['req_s']:9.0f} req/s  {r['succeeded']:.0f} succeeded, {r['failed']:.0f} failed")
    if "sofamesh" in results and results["sofamesh"]["req_s"] and results["sofamesh"]["failed"] == 0:
        print(f"ratio direct/sofamesh req/s: {results['direct']['req_s'] / results['sofamesh']['req_s']:.2f}")


if __name__ == "__main__":
    main()
