"""Path and host rewrites of a route (Envoy's ``prefix_rewrite``, ``regex_rewrite``,
``host_rewrite_literal``), applied to the request head before it is forwarded. HTTP only: an RPC
frame is forwarded as it came."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from sofamesh.core.headers import Headers

if TYPE_CHECKING:
    from sofamesh.core.config.model import RewriteConfig, RouteMatch
    from sofamesh.core.events import RequestHead


class Rewrite:
    __slots__ = ("_cut", "_host", "_prefix", "_regex", "_sub")

    def __init__(self, config: RewriteConfig, match: RouteMatch) -> None:
        self._prefix = config.prefix
        self._regex = re.compile(config.regex) if config.regex is not None else None
        self._sub = re.sub(r"\\(\d)", r"\\g<\1>", config.substitution)  # RE2's \1 in Python's syntax
        self._host = config.host
        # How much of the path the prefix replaces: the matched prefix, else the whole path.
        pm = match.path
        if pm is None:
            self._cut: int | None = 1  # no path match means prefix "/"
        elif pm.prefix is not None:
            self._cut = len(pm.prefix)
        else:
            self._cut = None

    def path(self, path: str) -> str:
        path, sep, query = path.partition("?")
        if self._prefix is not None:
            path = self._prefix + (path[self._cut:] if self._cut is not None else "")
        elif self._regex is not None:
            path = self._regex.sub(self._sub, path)
        return path + sep + query

    def apply(self, head: RequestHead) -> RequestHead:
        if head.raw is not None:
            return head
        path = self.path(head.path) if self._prefix is not None or self._regex is not None else head.path
        host = self._host
        items = []
        for k, v in head.headers:
            if k == ":path" and path != head.path:
                v = path
            elif host is not None and (k == ":authority" or k.lower() == "host"):
                v = host
            items.append((k, v))
        service = head.service
        if host is not None and head.service == (head.headers.get(":authority") or head.headers.get("host")
                                                 or head.service):
            service = host  # HTTP/1's service is its Host; a gRPC service name stays
        return dataclasses.replace(head, path=path, service=service, headers=Headers(items))


__all__ = ["Rewrite"]
