"""quota.global against a real `sofamesh ratelimit-server` backed by a real redis-server: two
sidecar processes share one quota; fail-open and fail-closed when the service is down; two real
Envoys (their `envoy.filters.http.ratelimit` filter, gRPC to the service) and a sidecar share one."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port, wait_port
from tests.conftest import http_proxy_config
from tests.integration.resilience.peers import H2_UPSTREAM, StaticEnvoy, http_listener, static_cluster
from tests.integration.servers import RedisServer

RLS_CONFIG = {"domain": "shop", "descriptors": [
    {"key": "destination", "value": "web", "rate_limit": {"unit": "day", "requests_per_unit": 10}},
    {"key": "destination", "value": "free", "rate_limit": {"unlimited": True}},
    {"key": "user", "rate_limit": {"unit": "day", "requests_per_unit": 2}},
]}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture
def rls(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "rls.yaml"
        cfg.write_text(yaml.safe_dump(RLS_CONFIG))
        log = open(Path(d) / "rls.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "sofamesh", "ratelimit-server", "-c", str(cfg),
                                 "--listen", f"127.0.0.1:{port}", "--redis", redis_server.address],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            wait_port("127.0.0.1", port, 15)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _sidecar(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess], service: str,
             **extra: object) -> int:
    quota = {"domain": "shop", "service": service, "timeout_ms": 500,
             "descriptors": [[{"key": "destination", "value": "web"}], [{"key": "user", "from": "x-user"}]], **extra}
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "quota.global", "config": quota}])
    proxy_factory(cfg)
    return port


def test_two_sidecars_share_one_global_quota_counted_in_redis(
        rls: str, redis_server: RedisServer, upstream: UpstreamServer,
        proxy_factory: Callable[..., ProxyProcess]) -> None:
    a = _sidecar(upstream, proxy_factory, rls)
    b = _sidecar(upstream, proxy_factory, rls)
    codes = []
    with httpx.Client(timeout=5) as c:
        for i in range(8):
            codes.append(c.get(f"http://127.0.0.1:{a}/a/{i}").status_code)
            codes.append(c.get(f"http://127.0.0.1:{b}/b/{i}").status_code)
    assert codes.count(200) == 10 and codes.count(429) == 6
    assert codes[:10] == [200] * 10
    keys = [k.decode() for k in redis.Redis(port=redis_server.port).keys("shop_destination_web_*")]
    assert len(keys) == 1


def test_a_per_user_descriptor_limits_each_user_apart(
        rls: str, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    port = _sidecar(upstream, proxy_factory, rls, descriptors=[[{"key": "user", "from": "x-user"}]])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        ann = [c.get("/", headers={"x-user": "ann"}).status_code for _ in range(3)]
        bob = [c.get("/", headers={"x-user": "bob"}).status_code for _ in range(2)]
        nobody = [c.get("/").status_code for _ in range(4)]  # no x-user: no descriptor, no limit
    assert ann == [200, 200, 429] and bob == [200, 200] and nobody == [200] * 4


def test_unreachable_service_fails_open_by_default_and_closed_when_asked(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    open_port = _sidecar(upstream, proxy_factory, dead)
    closed_port = _sidecar(upstream, proxy_factory, dead, failure_mode_deny=True)
    assert httpx.get(f"http://127.0.0.1:{open_port}/x", timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{closed_port}/x", timeout=5).status_code == 500


def _envoy_with_ratelimit(upstream: UpstreamServer, rls: str) -> tuple[StaticEnvoy, int]:
    """An Envoy whose ratelimit filter asks ``rls`` (domain shop, descriptor destination=web) about
    every request, and refuses requests when it cannot ask (failure_mode_deny: a broken call shows)."""
    port = free_port()
    vhost = {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {
        "cluster": "web", "rate_limits": [{"actions": [
            {"generic_key": {"descriptor_key": "destination", "descriptor_value": "web"}}]}]}}]}
    ratelimit = {"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "shop", "failure_mode_deny": True, "timeout": "2s",
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "rls"}},
                               "transport_api_version": "V3"}}}
    envoy = StaticEnvoy([http_listener("web", port, vhost, http_filters=[ratelimit])],
                        [static_cluster("web", [upstream.address]),
                         static_cluster("rls", [rls], typed_extension_protocol_options=H2_UPSTREAM)])
    return envoy, port


def test_two_real_envoys_and_a_sidecar_share_one_quota_through_the_ratelimit_server(
        rls: str, redis_server: RedisServer, upstream: UpstreamServer,
        proxy_factory: Callable[..., ProxyProcess]) -> None:
    sidecar = _sidecar(upstream, proxy_factory, rls)
    (envoy_a, a), (envoy_b, b) = _envoy_with_ratelimit(upstream, rls), _envoy_with_ratelimit(upstream, rls)
    with envoy_a, envoy_b, httpx.Client(timeout=5) as c:
        codes = [(who, c.get(f"http://127.0.0.1:{port}/{who}/{i}").status_code)
                 for i in range(5) for who, port in (("envoy-a", a), ("envoy-b", b), ("sidecar", sidecar))]
        stats = [e.stats() for e in (envoy_a, envoy_b)]
    # destination=web allows 10 a day, counted once for all three proxies
    assert [code for _, code in codes] == [200] * 10 + [429] * 5, codes
    assert upstream.requests == 10
    for s, who in zip(stats, ("envoy-a", "envoy-b"), strict=True):
        mine = [code for w, code in codes if w == who]
        assert s["cluster.web.ratelimit.ok"] == mine.count(200), (who, s)
        assert s["cluster.web.ratelimit.over_limit"] == mine.count(429), (who, s)
        assert s.get("cluster.web.ratelimit.error", 0) == 0 and s.get("cluster.web.ratelimit.failure_mode_allowed", 0) == 0
    assert len(redis.Redis(port=redis_server.port).keys("shop_destination_web_*")) == 1  # one counter for all
