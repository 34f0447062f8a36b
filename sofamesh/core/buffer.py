"""ReceiveBuffer: the byte accumulator every codec parses from. No copies until a frame is taken.

FrameBuffer: the same for framed RPC codecs (Bolt, Dubbo) that parse fixed headers in place.
"""

from __future__ import annotations


class ReceiveBuffer:
    """Append-only bytes with a read offset; compacts lazily so parsing a stream of frames is O(n)."""

    __slots__ = ("_data", "_pos")

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0

    def append(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._data):
            self._data.clear()
            self._pos = 0
        self._data += data

    def __len__(self) -> int:
        return len(self._data) - self._pos

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes from the read position, not consumed."""
        return bytes(self._data[self._pos : self._pos + n])

    def view(self) -> memoryview:
        """A view of the unread bytes. Release it before the next ``append``."""
        return memoryview(self._data)[self._pos :]

    def take(self, n: int) -> bytes:
        """Consume exactly ``n`` bytes (the caller checked ``len(self) >= n``)."""
        start = self._pos
        self._pos = start + n
        out = bytes(self._data[start : self._pos])
        if self._pos > 65536 and self._pos * 2 > len(self._data):
            del self._data[: self._pos]
            self._pos = 0
        return out

    def take_all(self) -> bytes:
        return self.take(len(self))


class FrameBuffer:
    """Unparsed bytes as ``data[pos:]``, for codecs that read fixed headers in place
    (``struct.unpack_from(data, pos)``) and take whole frames.

    A read that ends on a frame boundary (the usual case for request/response RPC) leaves nothing
    behind, so the next read's ``bytes`` object becomes ``data`` as it is, and a frame that is a
    whole read is taken as that very object: no copy in or out. Only a frame split across reads is
    accumulated in a ``bytearray``.
    """

    __slots__ = ("data", "pos")

    def __init__(self) -> None:
        self.data: bytes | bytearray = b""
        self.pos = 0

    def __len__(self) -> int:
        return len(self.data) - self.pos

    def append(self, chunk: bytes) -> None:
        data = self.data
        pos = self.pos
        if pos >= len(data):
            self.data = chunk
            self.pos = 0
        elif type(data) is bytearray:
            if pos > 65536 and pos * 2 > len(data):
                del data[:pos]
                self.pos = 0
            data += chunk
        else:  # a partial frame left in an immutable read: start accumulating
            acc = bytearray(memoryview(data)[pos:])
            acc += chunk
            self.data = acc
            self.pos = 0

    def take(self, end: int) -> bytes:
        """Consume ``data[pos:end]`` (the caller checked it is there) and return it as ``bytes``."""
        data = self.data
        pos = self.pos
        self.pos = end
        if type(data) is bytes:
            # Spelled out: CPython returns a whole-object slice as the object itself, compiled
            # (mypyc) code copies it.
            return data if pos == 0 and end == len(data) else data[pos:end]
        return bytes(memoryview(data)[pos:end])


__all__ = ["FrameBuffer", "ReceiveBuffer"]
