"""Fuzz targets: each takes arbitrary bytes and must either decode them or refuse them with the
decoder's own error (``ProtocolError`` for codecs, ``HessianError`` for the Hessian reader). Any
other exception, a hang or runaway memory is a bug. The configuration targets (xDS, YAML, policy,
registry API) are in fuzz/config_targets.py and join ``TARGETS`` here.

The first input byte chooses where the rest is split into two reads (a codec must give the same
answer however its bytes arrive); the end of the input is the peer closing.
"""

from __future__ import annotations

from collections.abc import Callable

from sofamesh.core.codec import Codec, CodecLimits, Role
from sofamesh.core.errors import ProtocolError
from sofamesh.core.events import NEED_DATA
from sofamesh.core.hessian import HessianError, HessianReader
from sofamesh.plugins.protocols.bolt.codec import BoltCodec
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from sofamesh.plugins.protocols.http1.codec import Http1Codec
from sofamesh.plugins.protocols.http2.codec import Http2Codec

# small limits reach the limit checks with small inputs
LIMITS = CodecLimits(max_frame_bytes=64 * 1024, max_header_bytes=8 * 1024, max_headers=64, max_body_bytes=32 * 1024)
MAX_EVENTS = 10_000


def _feed(codec: Codec, data: bytes) -> None:
    if not data:
        return
    cut = data[0] * len(data) // 256
    body = data[1:]
    try:
        for part in (body[:cut], body[cut:], b""):
            codec.receive_data(part)
            for _ in range(MAX_EVENTS):
                if codec.next_event() is NEED_DATA:
                    break
            codec.data_to_send()
    except ProtocolError:
        pass


def _codec(make: Callable[[Role], Codec], role: Role) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        _feed(make(role), data)

    return target


def hessian(data: bytes) -> None:
    r = HessianReader(data)
    try:
        for _ in range(MAX_EVENTS):
            if r.at_end():
                return
            r.read()
    except HessianError:
        pass


try:  # the contrib Thrift codec, a separately installed plugin (contrib/sofamesh-thrift)
    from sofamesh_thrift.codec import ThriftCodec
except ImportError:  # pragma: no cover - not installed
    ThriftCodec = None  # type: ignore[assignment,misc]

TARGETS: dict[str, Callable[[bytes], None]] = {
    "http1_server": _codec(lambda role: Http1Codec(role, LIMITS), Role.SERVER),
    "http1_client": _codec(lambda role: Http1Codec(role, LIMITS), Role.CLIENT),
    "http2_server": _codec(lambda role: Http2Codec(role, LIMITS), Role.SERVER),
    "bolt_server": _codec(lambda role: BoltCodec(role, LIMITS), Role.SERVER),
    "bolt_client": _codec(lambda role: BoltCodec(role, LIMITS), Role.CLIENT),
    "dubbo_server": _codec(lambda role: DubboCodec(role, LIMITS), Role.SERVER),
    "dubbo_client": _codec(lambda role: DubboCodec(role, LIMITS), Role.CLIENT),
    "hessian": hessian,
}
if ThriftCodec is not None:
    TARGETS["thrift_server"] = _codec(lambda role: ThriftCodec(role, LIMITS), Role.SERVER)
    TARGETS["thrift_client"] = _codec(lambda role: ThriftCodec(role, LIMITS), Role.CLIENT)

from fuzz.config_targets import TARGETS as _CONFIG_TARGETS  # noqa: E402 - after the decoders, as documented

TARGETS.update(_CONFIG_TARGETS)

__all__ = ["TARGETS"]
