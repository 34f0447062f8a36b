"""FrameBuffer: frames parsed in place; a frame that is a whole read is taken without a copy."""

from __future__ import annotations

from sofamesh.core.buffer import FrameBuffer


def test_a_frame_that_is_a_whole_read_is_taken_as_the_same_object() -> None:
    buf = FrameBuffer()
    chunk = bytes(range(40))
    buf.append(chunk)
    assert buf.take(40) is chunk
    assert len(buf) == 0


def test_frames_split_across_reads_come_out_whole_and_in_order() -> None:
    stream = bytes(range(256)) * 3
    for step in (1, 7, 100, 500):
        buf = FrameBuffer()
        out: list[bytes] = []
        for i in range(0, len(stream), step):
            buf.append(stream[i:i + step])
            while len(buf) >= 64:
                out.append(buf.take(buf.pos + 64))
        assert b"".join(out) == stream[: len(out) * 64]
        assert len(buf) == len(stream) - len(out) * 64
        assert all(type(f) is bytes for f in out)


def test_a_long_accumulation_drops_consumed_bytes() -> None:
    buf = FrameBuffer()
    buf.append(b"x")  # a partial frame: from here on bytes accumulate
    for _ in range(200):
        buf.append(b"y" * 1000)
        buf.take(buf.pos + 1000)
    assert len(buf.data) < 150_000
    assert len(buf) == 1
