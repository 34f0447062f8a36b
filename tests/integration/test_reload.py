"""Reload without restart: SIGHUP and POST /reload re-read the config file; connections stay open."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import yaml

from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config


def _wait_version(proxy: ProxyProcess, version: int) -> None:
    deadline = time.monotonic() + 10
    while proxy.stats()["server"]["config_version"] != version:
        assert time.monotonic() < deadline, proxy.log()
        time.sleep(0.05)


def test_sighup_rereads_the_file_and_a_keep_alive_connection_gets_the_new_routes(upstream: UpstreamServer, upstream_b: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        assert c.get("/one").text.startswith("up-a ")
        cfg["clusters"] = [{"name": "web", "endpoints": [upstream_b.address]}]
        proxy.config_path.write_text(yaml.safe_dump(cfg))
        proxy.signal(signal.SIGHUP)
        _wait_version(proxy, 2)
        assert c.get("/two").text.startswith("up-b ")
    assert proxy.stats()["listeners"]["web"]["downstream_cx_total"] == 1  # the same connection, rebound
    assert "SIGHUP: config version 2 is serving" in proxy.log()


def test_post_reload_with_no_body_rereads_the_file_and_refuses_a_broken_one(upstream: UpstreamServer, upstream_b: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg)
    proxy.config_path.write_text("clusters: [{name: web, endpoints: [nowhere]}]\n")
    r = httpx.post(proxy.admin_url + "/reload", timeout=5)
    assert r.status_code == 400 and "refused, the old config keeps serving" in r.text
    assert "clusters[0].endpoints[0]" in r.text
    assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=5).text.startswith("up-a ")
    cfg["clusters"] = [{"name": "web", "endpoints": [upstream_b.address]}]
    proxy.config_path.write_text(yaml.safe_dump(cfg))
    r = httpx.post(proxy.admin_url + "/reload", timeout=5)
    assert r.status_code == 200 and r.json() == {"version": 2, "reimported": []}
    assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=5).text.startswith("up-b ")


def test_sighup_to_the_supervisor_reloads_every_worker(upstream: UpstreamServer, upstream_b: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg, args=("--workers", "2"))
    cfg["clusters"] = [{"name": "web", "endpoints": [upstream_b.address]}]
    proxy.config_path.write_text(yaml.safe_dump(cfg))
    proxy.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        workers = proxy.stats()["workers"]
        if all(w["server"]["config_version"] == 2 for w in workers):
            break
        assert time.monotonic() < deadline, workers
        time.sleep(0.05)
    assert len(workers) == 2
    answers = {httpx.get(f"http://127.0.0.1:{port}/w", timeout=5).text.split()[0] for _ in range(10)}
    assert answers == {"up-b"}
