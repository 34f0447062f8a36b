"""Header add / set / remove on a route's requests and responses (Envoy's ``request_headers_to_add``,
``response_headers_to_remove``, ...). Compiled once per route; routes without it pay nothing.

HTTP heads are re-encoded by their codec, so a changed head is all it takes. RPC frames (Bolt header
maps, Dubbo attachments) travel undecoded and are not changed here.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sofamesh.core.headers import Headers

if TYPE_CHECKING:
    from sofamesh.core.config.model import HeaderMutationConfig
    from sofamesh.core.events import RequestHead, ResponseHead


class HeaderMutation:
    """``remove`` first, then ``set`` (replacing every value of the name), then ``add`` (appending)."""

    __slots__ = ("_add", "_drop", "_set")

    def __init__(self, config: HeaderMutationConfig) -> None:
        self._set = tuple((k.lower(), v) for k, v in config.set.items())
        self._add = tuple((k.lower(), v) for k, v in config.add.items())
        self._drop = frozenset(k.lower() for k in config.remove) | {k for k, _ in self._set}

    def apply(self, headers: Headers) -> Headers:
        drop = self._drop
        kept = [(k, v) for k, v in headers if k.lower() not in drop or k[:1] == ":"]
        return Headers([*kept, *self._set, *self._add])

    def request(self, head: RequestHead) -> RequestHead:
        if head.raw is not None:
            return head
        return dataclasses.replace(head, headers=self.apply(head.headers))

    def response(self, head: ResponseHead) -> ResponseHead:
        if head.raw is not None:
            return head
        return dataclasses.replace(head, headers=self.apply(head.headers))


__all__ = ["HeaderMutation"]
