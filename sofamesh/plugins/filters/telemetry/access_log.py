"""Access log as JSON lines, written off the hot path.

A stream's end appends one tuple of raw values to a list (no formatting, no I/O). A daemon thread
swaps the list every ``flush_ms`` and writes the JSON lines. ``close`` flushes what is left.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sofamesh.plugins.filters.identity import source_ip, source_principal

if TYPE_CHECKING:
    from sofamesh.core.proxy.stream import Stream

Field = Callable[["Stream"], Any]

FIELDS: dict[str, Field] = {
    "start_time": lambda s: round(time.time() - (s.conn.loop.time() - s.context.start), 6),
    "duration_ms": lambda s: round((s.conn.loop.time() - s.context.start) * 1000.0, 3),
    "listener": lambda s: s.context.listener,
    "protocol": lambda s: s.head.protocol,
    "request_id": lambda s: s.head.request_id,
    "service": lambda s: s.head.service,
    "method": lambda s: s.head.key("method") or "",
    "path": lambda s: s.head.path,
    "response_code": lambda s: s.http_status or 200,
    "status": lambda s: s.status,
    "response_flags": lambda s: s.context.response_flags or "-",
    "route": lambda s: s.context.route,
    "upstream_cluster": lambda s: s.context.cluster,
    "upstream_host": lambda s: s.context.endpoint,
    "source_address": lambda s: source_ip(s.context),
    "source_principal": lambda s: source_principal(s.context),
    "request_principal": lambda s: s.context.request_principal or "",
}
DEFAULT_FIELDS = ("start_time", "duration_ms", "protocol", "service", "method", "path", "response_code",
                  "response_flags", "upstream_cluster", "upstream_host", "source_address", "source_principal")


class AccessLog:
    __slots__ = ("_lock", "_pending", "_stop", "_thread", "fields", "flush_s", "getters", "path")

    def __init__(self, path: str, fields: tuple[str, ...], flush_ms: int = 200) -> None:
        self.path = path
        self.fields = fields
        self.getters = tuple(FIELDS[f] for f in fields)
        self.flush_s = flush_ms / 1000.0
        self._pending: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, stream: Stream) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sofamesh-access-log", daemon=True)
            self._thread.start()
        self._pending.append(tuple(g(stream) for g in self.getters))

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._lock:
            pending = self._pending
            rows = [pending.popleft() for _ in range(len(pending))]  # deque pops are thread-safe
            if not rows:
                return
            fields = self.fields
            text = "".join(json.dumps(dict(zip(fields, r, strict=True)), separators=(",", ":")) + "\n" for r in rows)
            if self.path in ("-", "stdout"):
                sys.stdout.write(text)
                sys.stdout.flush()
                return
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)

    def close(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(2.0)
        self.flush()


__all__ = ["DEFAULT_FIELDS", "FIELDS", "AccessLog"]
