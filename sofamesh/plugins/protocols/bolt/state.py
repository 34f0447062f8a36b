"""Which Bolt frames each side may receive: ``{(role, type, cmdcode): kind}``.

Bolt is per-frame stateless (any number of requests in flight, answered in any order), so the whole
protocol state is which (type, cmdcode) pairs a side accepts. A pair missing here is a
``RemoteProtocolError`` when the peer sent it.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from sofamesh.core.codec import Role
from sofamesh.plugins.protocols.bolt.frames import (
    CMD_HEARTBEAT,
    CMD_REQUEST,
    CMD_RESPONSE,
    TYPE_ONEWAY,
    TYPE_REQUEST,
    TYPE_RESPONSE,
)


class Kind(Enum):
    REQUEST = "request"
    ONEWAY = "oneway"
    RESPONSE = "response"
    HEARTBEAT = "heartbeat"  # a probe: answer it
    HEARTBEAT_REPLY = "heartbeat_reply"  # the answer to our probe


RECEIVABLE: Final[dict[tuple[Role, int, int], Kind]] = {
    # facing a downstream client: requests and its probes (and answers to any probe we send)
    (Role.SERVER, TYPE_REQUEST, CMD_REQUEST): Kind.REQUEST,
    (Role.SERVER, TYPE_ONEWAY, CMD_REQUEST): Kind.ONEWAY,
    (Role.SERVER, TYPE_REQUEST, CMD_HEARTBEAT): Kind.HEARTBEAT,
    (Role.SERVER, TYPE_RESPONSE, CMD_HEARTBEAT): Kind.HEARTBEAT_REPLY,
    # facing an upstream server: responses, answers to our probes, and its own probes
    (Role.CLIENT, TYPE_RESPONSE, CMD_RESPONSE): Kind.RESPONSE,
    (Role.CLIENT, TYPE_RESPONSE, CMD_HEARTBEAT): Kind.HEARTBEAT_REPLY,
    (Role.CLIENT, TYPE_REQUEST, CMD_HEARTBEAT): Kind.HEARTBEAT,
}

__all__ = ["RECEIVABLE", "Kind"]
