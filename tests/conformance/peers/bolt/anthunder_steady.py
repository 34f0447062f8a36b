"""An anthunder AioClient keeping one connection to HOST:PORT and calling echo back to back, CONCURRENCY
calls at a time, until its stdin closes (run with the anthunder venv). Then prints one JSON object:
{"ok": N, "failed": N, "errors": [first few messages]}. Used to load a sidecar while it is upgraded.

usage: python anthunder_steady.py HOST:PORT INTERFACE [CONCURRENCY]
"""

from __future__ import annotations

import json
import logging
import sys
import threading

from anthunder import SERVICE_MAP
from anthunder.client.aio_client import AioClient
from mytracer import SpanContext

logging.basicConfig(level=logging.CRITICAL)


def main() -> None:
    address, interface = sys.argv[1], sys.argv[2]
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    host, port = address.rsplit(":", 1)
    SERVICE_MAP[interface] = (host, int(port))
    client = AioClient("sofamesh-upgrade-consumer")
    stop = threading.Event()
    out: dict[str, object] = {"ok": 0, "failed": 0, "errors": []}
    lock = threading.Lock()

    def worker(wid: int) -> None:
        i = 0
        while not stop.is_set():
            body = f"{wid}-{i}".encode()
            try:
                got = client.invoke_async(interface, "echo", body, spanctx=SpanContext(), timeout_ms=5000).result(6)
                good = got is not None and got.content.endswith(b":" + body)
                problem = "" if good else f"unexpected {got.content if got is not None else None!r}"
            except Exception as exc:  # every failed call is what the load reports
                problem = f"{type(exc).__name__}: {exc}"
            with lock:
                if problem:
                    out["failed"] = int(out["failed"]) + 1  # type: ignore[call-overload]
                    errors = out["errors"]
                    assert isinstance(errors, list)
                    if len(errors) < 5:
                        errors.append(problem)
                else:
                    out["ok"] = int(out["ok"]) + 1  # type: ignore[call-overload]
            i += 1

    # one call first: the client's one connection is up before the load starts
    client.invoke_async(interface, "echo", b"warm-up", spanctx=SpanContext(), timeout_ms=5000).result(10)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    print("READY", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    stop.set()
    for t in threads:
        t.join(15)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
