"""ReceiveBuffer: the byte accumulator every codec parses from. No copies until a frame is taken."""

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


__all__ = ["ReceiveBuffer"]
