"""quota.local through a running proxy: the accepted rate follows the configured rate; buckets per key."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from sofamesh.testing import ProxyProcess
from tests.conftest import http_proxy_config
from tests.integration.upstream import UpstreamServer


def test_fifty_per_second_configured_four_hundred_sent_in_two_seconds_accepts_the_rate(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rate, burst, sent = 50, 5, 400  # a small burst absorbs the client's send jitter
    cfg, port = http_proxy_config([upstream.address],
                                  filters=[{"type": "quota.local", "config": {"rate": rate, "burst": burst}}])
    proxy = proxy_factory(cfg)
    codes: list[int] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        start = time.monotonic()
        for i in range(sent):
            target = start + i * 2.0 / sent
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            codes.append(c.get("/q").status_code)
        elapsed = time.monotonic() - start
    accepted = codes.count(200)
    assert set(codes) <= {200, 429}
    assert elapsed < 2.6, f"the client could not send {sent} requests in about 2 s ({elapsed:.2f} s)"
    expected = burst + rate * elapsed
    assert abs(accepted - expected) <= 0.05 * expected, (accepted, expected)
    st = proxy.stats()["filters"]["web|quota.local"]
    assert st["quota_local_accepted"] == accepted and st["quota_local_rate_limited"] == sent - accepted
    assert upstream.requests == accepted


def test_buckets_are_kept_per_header_value_and_overrides_give_their_own_limit(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    quota = {"key": ["x-user"], "limit": {"rate": 1, "burst": 2, "unit": "minute"},
             "overrides": [{"match": {"x-user": {"prefix": "vip-"}}, "limit": {"rate": 5, "burst": 5, "unit": "minute"}}]}
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "quota.local", "config": quota}])
    proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        def codes(user: str, n: int) -> list[int]:
            return [c.get("/q", headers={"x-user": user}).status_code for _ in range(n)]

        alice, bob, vip = codes("alice", 4), codes("bob", 3), codes("vip-carol", 6)
    assert alice == [200, 200, 429, 429]
    assert bob == [200, 200, 429]
    assert vip == [200] * 5 + [429]
