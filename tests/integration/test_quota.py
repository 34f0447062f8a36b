"""quota.local through a running proxy: the accepted rate follows the configured rate; buckets per key."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config


def test_fifty_per_second_configured_four_hundred_sent_in_two_seconds_accepts_the_rate(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    # The burst is the bucket size: it absorbs pauses of up to burst / rate = 1 s in the senders
    # (a loaded machine stalls threads), so the accepted count measures the refill rate.
    rate, burst, sent, senders = 50, 50, 400, 4
    cfg, port = http_proxy_config([upstream.address],
                                  filters=[{"type": "quota.local", "config": {"rate": rate, "burst": burst}}])
    proxy = proxy_factory(cfg)
    codes: list[int] = []
    sent_at: list[float] = []
    lock = threading.Lock()
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) for _ in range(senders)]
    start = time.monotonic() + 0.2

    def send(k: int) -> None:
        c = clients[k]
        for i in range(sent // senders):
            delay = start + (i * senders + k) * 2.0 / sent - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.monotonic()
            code = c.get("/q").status_code
            with lock:
                codes.append(code)
                sent_at.append(t)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in clients:
        c.close()
    span = max(sent_at) - min(sent_at)
    accepted = codes.count(200)
    assert len(codes) == sent and set(codes) <= {200, 429}
    assert span < 4.0, f"the clients could not send {sent} requests in about 2 s ({span:.2f} s)"
    measured_rate = (accepted - burst) / span
    assert abs(measured_rate - rate) <= 0.05 * rate, (accepted, span, measured_rate)
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


def test_check_config_reports_a_bad_route_filter_config_with_its_path(tmp_path: Path) -> None:
    cfg, _ = http_proxy_config(["127.0.0.1:1"], extra_routes=[
        {"name": "r", "cluster": "web", "filters": [{"type": "quota.local", "config": {"rate": -1}}]}])
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(p)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "listeners[0].routes[0].filters[0].config.limit.rate: Input should be greater than 0" in r.stderr
