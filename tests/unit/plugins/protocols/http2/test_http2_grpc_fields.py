"""gRPC header conventions: grpc-timeout, grpc-message encoding, status mapping."""

from __future__ import annotations

import pytest

from sofamesh.core.codec import ReplyStatus
from sofamesh.plugins.protocols.http2 import grpc


@pytest.mark.parametrize(
    ("value", "ms"),
    [("1500m", 1500), ("2S", 2000), ("1M", 60_000), ("1H", 3_600_000), ("1500u", 2), ("1000u", 1),
     ("1n", 1), ("0m", 0), ("99999999m", 99_999_999)],
)
def test_grpc_timeout_is_read_in_milliseconds_rounded_up(value: str, ms: int) -> None:
    assert grpc.parse_timeout(value) == ms


# The last one is a full-width digit: not ASCII, not a timeout.
@pytest.mark.parametrize("value", [None, "", "m", "15", "1x", "123456789m", "-1m", "1.5S", "\uff11m"])
def test_malformed_grpc_timeout_is_ignored(value: str | None) -> None:
    assert grpc.parse_timeout(value) is None


def test_formatted_timeouts_read_back_as_at_least_the_same_deadline() -> None:
    for ms in (0, 1, 999, 3000, 99_999_999, 100_000_000, 123_456_789_012):
        back = grpc.parse_timeout(grpc.format_timeout(ms))
        assert back is not None and ms <= back < ms + 60_000


def test_grpc_message_percent_encoding_round_trips_unicode_and_percent() -> None:
    text = "deadline 100% exceeded: café ✓\n"
    encoded = grpc.encode_message(text)
    assert encoded == "deadline 100%25 exceeded: caf%C3%A9 %E2%9C%93%0A"
    assert encoded.isascii()
    assert grpc.decode_message(encoded) == text
    assert grpc.decode_message("bad %zz escape %4") == "bad %zz escape %4"


@pytest.mark.parametrize(
    ("status", "grpc_code", "http_back"),
    [
        (ReplyStatus.NO_ROUTE, 12, 501),  # UNIMPLEMENTED reads back as 501, not the 404 it came from
        (ReplyStatus.NO_HEALTHY_UPSTREAM, 14, 503),
        (ReplyStatus.TIMEOUT, 4, 504),
        (ReplyStatus.RATE_LIMITED, 8, 429),
        (ReplyStatus.DENIED, 7, 403),
        (ReplyStatus.UNAUTHENTICATED, 16, 401),
        (ReplyStatus.INTERNAL, 13, 500),
    ],
)
def test_proxy_reply_statuses_carry_grpc_codes_whose_http_meaning_is_kept_for_stats(
    status: ReplyStatus, grpc_code: int, http_back: int
) -> None:
    assert status.grpc_status == grpc_code
    assert grpc.http_status_of(grpc_code) == http_back


def test_unknown_grpc_codes_count_as_server_errors() -> None:
    assert grpc.http_status_of(99) == 500


def test_grpc_content_types_are_recognised_case_insensitively() -> None:
    assert grpc.is_grpc("application/grpc")
    assert grpc.is_grpc("application/grpc+proto")
    assert grpc.is_grpc("Application/GRPC+data")
    assert not grpc.is_grpc("application/json")
    assert not grpc.is_grpc(None)
