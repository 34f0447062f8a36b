"""Header add / set / remove on a route's requests and responses (Envoy's ``request_headers_to_add``,
``response_headers_to_remove``, ...). Compiled once per route; routes without it pay nothing.

HTTP heads are re-encoded by their codec, so a changed head is all it takes. Framed RPC (Bolt
header maps, Dubbo attachments) travels as encoded frames: the codec rewrites the header section of
the frame (``Codec.edit_headers``) and nothing else of it is decoded. RPC keys are case-sensitive
and a map holds one value per key, so ``add`` there puts a key only where it is absent.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sofamesh.core.codec import HeaderEdit
from sofamesh.core.headers import Headers

if TYPE_CHECKING:
    from sofamesh.core.codec import Codec
    from sofamesh.core.config.model import HeaderMutationConfig
    from sofamesh.core.events import RequestHead, ResponseHead


class HeaderMutation:
    """``remove`` first, then ``set`` (replacing every value of the name), then ``add`` (appending)."""

    __slots__ = ("_add", "_drop", "_set", "frame_edit")

    def __init__(self, config: HeaderMutationConfig) -> None:
        self._set = tuple((k.lower(), v) for k, v in config.set.items())
        self._add = tuple((k.lower(), v) for k, v in config.add.items())
        self._drop = frozenset(k.lower() for k in config.remove) | {k for k, _ in self._set}
        self.frame_edit = HeaderEdit(frozenset(config.remove), tuple(config.set.items()), tuple(config.add.items()))

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

    def request_frame(self, head: RequestHead, codec: Codec) -> RequestHead:
        """An RPC request whose frame ``codec`` edited; raises ``ValueError`` when it cannot."""
        raw = head.raw
        assert raw is not None
        edited = codec.edit_headers(raw, self.frame_edit, head)
        if edited is raw:
            return head
        resolve = head.resolve
        drop = self.frame_edit.remove
        if resolve is not None and drop:  # keys the codec would read lazily from the old frame
            looked_up = resolve

            def resolve(name: str) -> str | None:
                return None if name in drop else looked_up(name)

        return dataclasses.replace(head, raw=edited, headers=self.edited_headers(head.headers), resolve=resolve)

    def response_frame(self, head: ResponseHead, codec: Codec, request: RequestHead) -> ResponseHead:
        """An RPC response (answering ``request``) whose frame ``codec`` edited; ``ValueError`` when it cannot."""
        raw = head.raw
        assert raw is not None
        edited = codec.edit_headers(raw, self.frame_edit, request)
        if edited is raw:
            return head
        return dataclasses.replace(head, raw=edited, headers=self.edited_headers(head.headers))

    def edited_headers(self, headers: Headers) -> Headers:
        """``headers`` decoded from a header map, after the same edit as the frame's (exact keys)."""
        edited = self.frame_edit.edited(list(headers))
        if edited is None:
            return headers
        return Headers([(k, v) for k, v in edited if k is not None])


__all__ = ["HeaderMutation"]
