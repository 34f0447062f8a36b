"""fault through a running proxy: every request delayed, a share aborted, on one route only."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config


def test_route_delay_holds_requests_and_abort_answers_a_share_with_the_status(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    routes = [
        {"name": "slow", "match": {"path": {"prefix": "/slow"}}, "cluster": "web",
         "filters": [{"type": "fault", "config": {"delay": {"fixed_delay_ms": 300}}}]},
        {"name": "flaky", "match": {"path": {"prefix": "/flaky"}}, "cluster": "web",
         "filters": [{"type": "fault", "config": {"abort": {"percentage": 50, "status": 503}}}]},
    ]
    cfg, port = http_proxy_config([upstream.address], extra_routes=routes)
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        t = time.monotonic()
        slow = c.get("/slow/1")
        slow_ms = (time.monotonic() - t) * 1000
        fast = c.get("/other")
        flaky = [c.get(f"/flaky/{i}").status_code for i in range(200)]
    assert slow.status_code == 200 and slow_ms >= 300
    assert fast.status_code == 200  # no fault on this route: counted below, not timed (loaded machines)
    assert set(flaky) == {200, 503}
    assert 60 <= flaky.count(503) <= 140  # 50 % of 200, binomial sd ~7
    st = proxy.stats()["filters"]
    assert st["web|flaky/fault"]["fault_aborts_injected"] == flaky.count(503)
    assert st["web|slow/fault"]["fault_delays_injected"] == 1
