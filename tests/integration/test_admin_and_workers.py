"""Admin endpoints, quick mode, --workers, and the demo, each through real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from sofamesh.testing import ProxyProcess, UpstreamServer, crash_reports, free_port, log_problems, wait_port
from tests.conftest import http_proxy_config


@contextmanager
def cli_proxy(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``sofamesh proxy ARGS`` (quick mode: no config file, so no ``ProxyProcess``), held to the same
    rule: stopped by SIGTERM to its process group (workers too), it must exit 0 with no traceback."""
    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "sofamesh", "proxy", *args], stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield p
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    log_text = log_path.read_text(errors="replace")
    problems = log_problems(log_text, p.returncode)
    assert not problems, "\n".join([*problems, "--- its log ---", log_text])


def test_admin_serves_stats_prometheus_clusters_config_and_plugins(upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg)
    with httpx.Client(timeout=5) as c:
        for _ in range(3):
            assert c.get(f"http://127.0.0.1:{port}/x").status_code == 200
        assert c.get(f"http://127.0.0.1:{port}/reset").status_code == 503
    prom = proxy.get("/stats/prometheus").decode()
    assert 'sofamesh_downstream_rq_total{listener="web"} 4' in prom
    assert 'sofamesh_downstream_rq_xx{listener="web",response_code_class="2"} 3' in prom
    assert 'sofamesh_downstream_rq_xx{listener="web",response_code_class="5"} 1' in prom
    assert 'sofamesh_upstream_rq_total{cluster="web"} 4' in prom
    assert "# TYPE sofamesh_upstream_cx_connect_fail counter" in prom
    clusters = json.loads(proxy.get("/clusters"))
    (ep,) = clusters["web"]["endpoints"]
    assert ep["address"] == upstream.address and ep["rq_total"] == 4
    dump = json.loads(proxy.get("/config_dump"))
    assert dump["config"]["clusters"][0]["name"] == "web"
    plugins = json.loads(proxy.get("/plugins"))
    assert {"name": "http1", "kind": "protocol", "distribution": "sofamesh", "version": "0.1.0"} in plugins
    assert proxy.get("/ready") == b"LIVE\n"


def test_reload_swaps_routes_and_refuses_a_broken_config(upstream: UpstreamServer, upstream_b: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address])
    proxy = proxy_factory(cfg)
    assert httpx.get(f"http://127.0.0.1:{port}/r", timeout=5).text.startswith("up-a")
    new = dict(cfg)
    new["clusters"] = [{"name": "web", "endpoints": [upstream_b.address]}]
    import yaml

    r = httpx.post(proxy.admin_url + "/reload", content=yaml.safe_dump(new), timeout=5)
    assert r.status_code == 200, r.text
    assert httpx.get(f"http://127.0.0.1:{port}/r", timeout=5).text.startswith("up-b")
    bad = dict(new)
    bad["clusters"] = [{"name": "web", "lb": "nope", "endpoints": [upstream.address]}]
    r = httpx.post(proxy.admin_url + "/reload", content=yaml.safe_dump(bad), timeout=5)
    assert r.status_code == 400 and "clusters[0].lb: unknown load balancer 'nope'" in r.text
    assert httpx.get(f"http://127.0.0.1:{port}/r", timeout=5).text.startswith("up-b")


def test_quick_mode_proxies_to_the_given_upstreams(upstream: UpstreamServer, upstream_b: UpstreamServer,
                                                    tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    with cli_proxy(tmp_path, "--listen", f"127.0.0.1:{port}", "--upstream", f"{upstream.address},{upstream_b.address}",
                   "--protocol", "http1", "--admin", f"127.0.0.1:{admin}"):
        wait_port("127.0.0.1", port)
        with httpx.Client(timeout=5) as c:
            names = {c.get(f"http://127.0.0.1:{port}/q").text.split()[0] for _ in range(4)}
        assert names == {"up-a", "up-b"}


def test_two_workers_share_the_port_and_the_admin_aggregates(upstream: UpstreamServer, tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    with cli_proxy(tmp_path, "--listen", f"127.0.0.1:{port}", "--upstream", upstream.address, "--protocol", "http1",
                   "--admin", f"127.0.0.1:{admin}", "--workers", "2"):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        wait_port("127.0.0.1", port)
        for _ in range(40):
            with httpx.Client(timeout=5) as c:  # a new connection each time: the kernel spreads them
                assert c.get(f"http://127.0.0.1:{port}/w").status_code == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5) as r:
            st = json.loads(r.read())
        assert st["total"]["listeners"]["quick"]["downstream_rq_total"] == 40
        per = [w["listeners"]["quick"]["downstream_rq_total"] for w in st["workers"]]
        assert len(per) == 2 and sum(per) == 40
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=5) as r:
            prom = r.read().decode()
        assert 'sofamesh_downstream_rq_total{worker="0",listener="quick"}' in prom
        assert 'sofamesh_downstream_rq_total{worker="1",listener="quick"}' in prom


def test_the_demo_runs_and_reports_ok() -> None:
    out = subprocess.run([sys.executable, "-m", "sofamesh", "demo"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert crash_reports(out.stdout + out.stderr) == [], out.stdout + out.stderr
    assert "verdict: OK" in out.stdout
    # the dev extras bring the demo's third-party Bolt client: the demo shows interop, not only our codecs
    assert "consumers: PyPI anthunder 0.8.1 AioClient (a third-party SOFA Bolt client)" in out.stdout
    for proto in ("BOLT", "DUBBO", "HTTP", "GRPC"):
        assert f"{proto} " in out.stdout
    for line in out.stdout.splitlines():  # the instance that joined took traffic after the change
        if "(joined)" in line:
            assert int(line.split()[-2]) > 0, line
        if "(left)" in line:
            assert int(line.split()[-2]) == 0, line
    assert out.stdout.count("(joined)") == 4
    assert re.findall(r"errors (\d+)", out.stdout) == ["0"] * 4
