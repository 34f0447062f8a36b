"""Retries, as Envoy's route ``retry_policy``: which failures a route retries, the back-off between
tries, and the state of one retried request (its attempt number, the request kept for replay, its
timers).

A request carries a ``RetryState`` (``Stream.retry``) only once it needs one: its route has a
policy and the request has a body to keep for a replay, a per-try timeout, or a failed try to
retry. A request whose whole frame is one bytes object (Bolt, Dubbo, a bodiless HTTP request) and
that succeeds at the first try allocates nothing here and arms no timer; its answer is looked at
no further than one status comparison (``RetryPolicy.floor``).
What counts as a failure of each protocol comes from its codec (``Codec.classify``): Envoy's HTTP
conditions apply to Bolt, Dubbo and third-party protocols through it. Oneway requests never retry.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final

from sofamesh.core.codec import Failure
from sofamesh.core.config.model import RETRY_ON
from sofamesh.core.events import RequestHead
from sofamesh.core.headers import Headers

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.codec import Codec
    from sofamesh.core.config.model import RetryPolicyConfig
    from sofamesh.core.events import ResponseHead

_BIT: Final = {name: 1 << i for i, name in enumerate(RETRY_ON)}
ON_5XX: Final = _BIT["5xx"]
ON_GATEWAY_ERROR: Final = _BIT["gateway-error"]
ON_RESET: Final = _BIT["reset"]
ON_CONNECT_FAILURE: Final = _BIT["connect-failure"]
ON_RETRIABLE_4XX: Final = _BIT["retriable-4xx"]
ON_REFUSED_STREAM: Final = _BIT["refused-stream"]
ON_STATUS_CODES: Final = _BIT["retriable-status-codes"]
ON_RETRIABLE: Final = _BIT["retriable"]
_GRPC: Final = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13, "unavailable": 14}
_ANY_RESET: Final = ON_5XX | ON_GATEWAY_ERROR | ON_RESET
ATTEMPT_HEADER: Final = "x-envoy-attempt-count"


class RetryPolicy:
    """A route's compiled ``retry_policy``: immutable, shared by the route's requests."""

    __slots__ = ("attempt_header", "base", "buffer_limit", "floor", "grpc_codes", "max_interval", "num_retries",
                 "on", "per_try_timeout", "previous_hosts", "status_codes", "success_floor")

    def __init__(self, config: RetryPolicyConfig) -> None:
        on = 0
        for name in config.retry_on:
            on |= _BIT[name]
        self.on = on
        self.grpc_codes = frozenset(code for name, code in _GRPC.items() if on & _BIT[name])
        self.status_codes = frozenset(config.retriable_status_codes) if on & ON_STATUS_CODES else frozenset()
        self.num_retries = config.num_retries
        self.per_try_timeout = config.per_try_timeout_ms / 1000.0
        bo = config.retry_back_off
        self.base = bo.base_interval_ms / 1000.0
        self.max_interval = (bo.max_interval_ms or 10 * bo.base_interval_ms) / 1000.0
        self.previous_hosts = config.previous_hosts
        self.attempt_header = config.include_attempt_count
        self.buffer_limit = config.per_request_buffer_limit_bytes
        # Below ``floor`` no response is retried: the answer to nearly every request is decided by
        # one comparison, without asking the codec. A codec with ``retriable_success`` (HTTP/2) may
        # mark a 200 retriable (gRPC's trailers-only UNAVAILABLE), and the gRPC conditions read a
        # trailers-only 200's grpc-status: below ``floor`` its responses are asked about from
        # ``success_floor`` up.
        self.floor = min((400, *self.status_codes))
        self.success_floor = 0 if self.grpc_codes or on & ON_RETRIABLE else self.floor

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first): Envoy's fully jittered
        exponential back-off, uniform in [0, base x 2^(retry-1)), capped at ``max_interval``."""
        ceiling = min(self.base * (1 << min(retry - 1, 30)), self.max_interval)
        return random.random() * ceiling

    def on_reset(self, refused: bool) -> bool:
        """The upstream reset (or closed) before answering; ``refused``: HTTP/2 REFUSED_STREAM."""
        return bool(self.on & _ANY_RESET) or (refused and bool(self.on & ON_REFUSED_STREAM))

    def on_connect_failure(self) -> bool:
        return bool(self.on & (_ANY_RESET | ON_CONNECT_FAILURE))

    def on_timeout(self) -> bool:
        """A per-try timeout: retried as a reset, as Envoy does."""
        return bool(self.on & _ANY_RESET)

    def on_response(self, head: ResponseHead, codec: Codec) -> bool:
        """Whether the response ``head`` (decoded by ``codec``) is one to retry."""
        s = head.http_status
        if s < self.floor and (s < self.success_floor or not codec.retriable_success):
            return False
        on = self.on
        if self.grpc_codes and head.end_stream:
            g = head.headers.get("grpc-status")  # trailers-only: the status is in the head
            if g is not None and g.isdigit() and int(g) in self.grpc_codes:
                return True
        if s in self.status_codes or (s == 409 and on & ON_RETRIABLE_4XX):
            return not codec.classify(head) & Failure.OVERLOADED
        if s < 500 and not on & ON_RETRIABLE:
            return False
        f = codec.classify(head)
        if not f or f & Failure.OVERLOADED:
            return False
        return bool((on & ON_5XX and f & Failure.SERVER_ERROR) or (on & ON_GATEWAY_ERROR and f & Failure.GATEWAY_ERROR)
                    or (on & ON_RETRIABLE and f & Failure.RETRIABLE))


class RetryState:
    """One request's retries: attempt number, the request body kept for replay (bounded by the
    policy's buffer limit), the back-off or per-try timer, and whether it holds a retry of the
    cluster's circuit breaker."""

    __slots__ = ("acked", "attempt", "body", "body_bytes", "holding", "overflowed", "policy", "sent", "timer")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempt = 1
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.overflowed = False  # the body passed the buffer limit: no more retries
        self.timer: asyncio.TimerHandle | None = None
        self.holding = False
        self.sent = 0  # body bytes sent upstream by this attempt
        self.acked = 0  # body bytes given back to a streaming downstream's window, over all attempts

    @property
    def retries(self) -> int:
        return self.attempt - 1

    def keep(self, data: bytes) -> None:
        """Keep a request body chunk for replay while under the buffer limit."""
        if self.overflowed:
            return
        n = self.body_bytes + len(data)
        if n > self.policy.buffer_limit:
            self.overflowed = True
            self.body = []
            return
        self.body.append(data)
        self.body_bytes = n

    def to_acknowledge(self, sent: int) -> int:
        """Of ``sent`` body bytes just sent upstream, how many the downstream has not been given
        back yet (a replayed body was acknowledged on its first way through)."""
        self.sent += sent
        new = self.sent - self.acked
        if new <= 0:
            return 0
        self.acked += new
        return new

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def with_attempt_count(head: RequestHead, attempt: int) -> RequestHead:
    """``head`` with ``x-envoy-attempt-count: attempt`` (any earlier value replaced); HTTP heads
    only. Every field spelled out, as in ``stream._forwarded``."""
    value = str(attempt)
    out = [item for item in head.headers if item[0].lower() != ATTEMPT_HEADER]
    out.append((ATTEMPT_HEADER, value))
    return RequestHead(head.protocol, head.request_id, head.service, head.method, head.path, head.version,
                       head.group, Headers(out), head.oneway, head.end_stream, head.raw, head.timeout_ms,
                       head.resolve, head.meta)


__all__ = ["ATTEMPT_HEADER", "RetryPolicy", "RetryState", "with_attempt_count"]
