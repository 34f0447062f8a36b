"""An anthunder AioClient calling one SOFA interface at a direct address; prints JSON results.

usage: python anthunder_client.py HOST:PORT INTERFACE CALLS_JSON
CALLS_JSON: [{"method": "echo", "body": "hi", "timeout": 3000}, ...], all started at once on the
client's one connection. ``"headers": {...}`` adds header-map entries; ``"trace": {"sofaTraceId": ..,
"sofaRpcId": ..}`` makes anthunder's tracer send those ids (default: a new trace). ``"oneway": true`` sends a oneway request (result null once written). Prints one JSON array, in order: {"ok": true, "result": "<body>"} or
{"ok": false, "error": "<exception type>", "message": "..."}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import Future

from anthunder import SERVICE_MAP
from anthunder.client.aio_client import AioClient
from anthunder.protocol import BoltRequest, SofaHeader
from anthunder.protocol.constants import PTYPE
from mytracer import SpanContext

logging.basicConfig(level=logging.CRITICAL)


def main() -> None:
    address, interface, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    host, port = address.rsplit(":", 1)
    SERVICE_MAP[interface] = (host, int(port))
    client = AioClient("sofamesh-test-consumer")
    futures: list[tuple[Future[object], float]] = []
    for call in calls:
        timeout_ms = call.get("timeout", 3000)
        if call.get("oneway"):
            header = SofaHeader.build_header(SpanContext(), interface, call["method"])
            pkg = BoltRequest.new_request(header, call.get("body", "").encode(), ptype=PTYPE.ONEWAY, timeout_ms=-1)
            futures.append((asyncio.run_coroutine_threadsafe(client.invoke(pkg), client._loop), timeout_ms / 1000))
            continue
        fut = client.invoke_async(interface, call["method"], call.get("body", "").encode(),
                                  spanctx=SpanContext(**call.get("trace", {})), timeout_ms=timeout_ms, **call.get("headers", {}))
        futures.append((fut, timeout_ms / 1000))
    results = []
    for fut, timeout in futures:
        try:
            pkg = fut.result(timeout=timeout + 1)
            results.append({"ok": True, "result": None if pkg is None else pkg.content.decode()})
        except Exception as exc:
            results.append({"ok": False, "error": type(exc).__name__, "message": str(exc)})
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
