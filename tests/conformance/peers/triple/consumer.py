"""An apache-dubbo 3.0.0b1 Triple consumer (runs in ``.cache/venv-dubbo3``) for conformance tests.

Usage: ``python consumer.py HOST:PORT``; calls ``provider.py``'s methods once each and prints one
JSON object: ``{"sayHello": "...", "sayHellos": [...], "fail": "<error type>: <message>"}``; a call
that fails reports ``"<error type>: <message>"`` in place of its result.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import dubbo
from dubbo.configs import ReferenceConfig

SERVICE = "com.example.triple.Greeter"


def main() -> None:
    address = sys.argv[1]
    client = dubbo.Client(ReferenceConfig.from_url(f"tri://{address}/{SERVICE}"))
    calls: dict[str, Callable[[], Any]] = {
        "sayHello": lambda: client.unary("sayHello")(b"triple").decode(),
        "sayHellos": lambda: [r.decode() for r in client.server_stream("sayHellos")(b"2:triple")],
        "fail": lambda: client.unary("fail")(b"this").decode(),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            out[name] = call()
        except Exception as exc:  # the peer's own error types: reported as text
            out[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
