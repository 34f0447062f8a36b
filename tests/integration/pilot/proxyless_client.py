"""A proxyless gRPC client process for the Pilot tests (run as a script, not collected).

Usage: GRPC_XDS_BOOTSTRAP=FILE python proxyless_client.py TARGET CSDS_PORT [METADATA_JSON [INTERVAL_S]]
Serves CSDS (grpcio-csds) on 127.0.0.1:CSDS_PORT, then calls TARGET's ``/sofamesh.test.Who/Name``
every INTERVAL_S (0.02) seconds with METADATA_JSON ({}) as call metadata and prints one JSON line
per call: {"ok": "<backend name>"} or {"error": "<code>"}, with the call's duration as "ms".
"""

from __future__ import annotations

import json
import sys
import time
from concurrent import futures

import grpc
from grpc_csds import add_csds_servicer


def main() -> None:
    target, csds_port = sys.argv[1], int(sys.argv[2])
    metadata = tuple(json.loads(sys.argv[3]).items()) if len(sys.argv) > 3 else ()
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02
    admin = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_csds_servicer(admin)
    admin.add_insecure_port(f"127.0.0.1:{csds_port}")
    admin.start()
    print(json.dumps({"csds": csds_port}), flush=True)
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/sofamesh.test.Who/Name")
        deadline = time.monotonic() + 120  # the test kills us long before this
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                out = {"ok": call(b"", timeout=2, metadata=metadata).decode()}
            except grpc.RpcError as exc:
                out = {"error": exc.code().name, "detail": exc.details()}
            out["ms"] = round((time.monotonic() - start) * 1000)
            print(json.dumps(out), flush=True)
            time.sleep(interval)


if __name__ == "__main__":
    main()
