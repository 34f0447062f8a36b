"""A fence for a cache that follows an etcd prefix through a watch (the etcd registry and config
store): write one key under the prefix, then wait until the watch has delivered an event at or past
that write's revision. etcd delivers a watch's events in revision order, so every change the prefix
had before the fence is in the cache by then. The key is shared by every replica (each fence is a
put: nothing accumulates) and is never a resource.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

FENCE_KEY = ".fence"
"""Appended to the watched prefix: the one key fences write."""

Post = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class WatchFence:
    """Tracks the highest revision the watch delivered and wakes fences waiting for it."""

    def __init__(self, prefix: str) -> None:
        self.key = prefix + FENCE_KEY
        self.delivered = 0  # highest mod_revision the watch (or a full read) has applied
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.fences = 0

    def is_fence(self, key: str) -> bool:
        return key == self.key

    def reached(self, revision: int) -> None:
        """The cache now holds the prefix as of ``revision`` (a watch event's, or a full read's)."""
        if revision <= self.delivered:
            return
        self.delivered = revision
        if self._waiters:
            keep = []
            for want, fut in self._waiters:
                if want <= revision:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((want, fut))
            self._waiters = keep

    async def wait(self, post: Post) -> None:
        """Write the fence key and wait until the watch delivered it (the caller bounds the wait)."""
        self.fences += 1
        value = base64.b64encode(str(self.fences).encode()).decode()
        data = await post("/v3/kv/put", {"key": base64.b64encode(self.key.encode()).decode(), "value": value})
        written = int(data["header"]["revision"])
        if written <= self.delivered:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((written, fut))
        try:
            await fut
        finally:
            self._waiters = [(w, f) for w, f in self._waiters if f is not fut]


__all__ = ["FENCE_KEY", "WatchFence"]
