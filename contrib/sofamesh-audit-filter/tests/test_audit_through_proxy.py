"""acme.audit in a running ``sofamesh proxy``: budgets, audit records, and reload without restart
(the filter's code and the config change under a steady stream of calls, SIGHUP three times)."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port

PACKAGE = Path(__file__).parents[1] / "acme_audit"


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("up") as up:
        yield up


def audit_config(upstream: UpstreamServer, audit: dict[str, Any]) -> tuple[dict[str, Any], int]:
    port = free_port()
    return {"listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                           "filters": [{"type": "acme.audit", "config": audit}],
                           "routes": [{"name": "all", "cluster": "web"}]}],
            "clusters": [{"name": "web", "endpoints": [upstream.address]}]}, port


def records(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_each_tenant_gets_its_own_budget_and_every_call_is_audited(upstream: UpstreamServer, sofamesh_proxy: Callable[..., ProxyProcess], tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    cfg, port = audit_config(upstream, {"budget": {"calls": 3, "window_s": 60}, "tenants": {"vip": {"calls": 10}},
                                        "log": str(log), "flush_records": 1})
    sofamesh_proxy(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        a = [c.get("/a", headers={"x-tenant": "a"}) for _ in range(5)]
        vip = [c.get("/v", headers={"x-tenant": "vip"}) for _ in range(5)]
        anon = c.get("/n")
    assert [r.status_code for r in a] == [200, 200, 200, 429, 429]
    assert a[0].text == "up GET /a\n"
    assert "acme.audit: tenant 'a' is over its budget of 3 calls per 60 s" in a[3].text
    assert [r.status_code for r in vip] == [200] * 5
    assert anon.status_code == 200
    wait_for(lambda: len(records(log)) == 11, what="11 audit records")
    recs = records(log)
    assert [(r["tenant"], r["outcome"], r["http_status"]) for r in recs[:5]] == [
        ("a", "allowed", 200)] * 3 + [("a", "over_budget", 429)] * 2
    assert recs[-1]["tenant"] == "-" and recs[-1]["path"] == "/n" and recs[-1]["protocol"] == "http1"
    assert {r["route"] for r in recs if r["outcome"] == "allowed"} == {"all"}


def test_a_required_tenant_header_missing_is_answered_401_by_the_proxy(upstream: UpstreamServer, sofamesh_proxy: Callable[..., ProxyProcess]) -> None:
    cfg, port = audit_config(upstream, {"require_tenant": True, "tenant_header": "x-team"})
    proxy = sofamesh_proxy(cfg)
    r = httpx.get(f"http://127.0.0.1:{port}/x", timeout=5)
    assert r.status_code == 401 and "acme.audit: header 'x-team' is required" in r.text
    assert httpx.get(f"http://127.0.0.1:{port}/x", headers={"X-Team": "t"}, timeout=5).status_code == 200
    assert proxy.stats()["clusters"]["web"]["upstream_rq_total"] == 1


class Steady:
    """Sequential keep-alive calls from a few threads until stopped; every outcome is kept."""

    def __init__(self, port: int, threads: int = 3) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, i: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as c:
            deadline = time.monotonic() + 120
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    r = c.get(f"/steady/{i}", headers={"x-tenant": "steady"})
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{r.status_code} {r.text.strip()}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Steady:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def _reload_and_wait(proxy: ProxyProcess, version: int) -> None:
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: proxy.stats()["server"]["config_version"] == version, what=f"config version {version}")


def test_sighup_reloads_the_filter_code_and_config_under_load_with_zero_failed_calls(upstream: UpstreamServer, sofamesh_proxy: Callable[..., ProxyProcess], tmp_path: Path) -> None:
    code = tmp_path / "code"
    shutil.copytree(PACKAGE, code / "acme_audit", ignore=shutil.ignore_patterns("__pycache__"))
    source = code / "acme_audit" / "filter.py"
    log = tmp_path / "audit.jsonl"
    cfg, port = audit_config(upstream, {"log": str(log), "flush_records": 1})
    # The proxy imports acme_audit from the copy (PYTHONPATH comes before the installed distribution).
    proxy = sofamesh_proxy(cfg, env={"PYTHONPATH": str(code)})

    def write_config(audit: dict[str, Any]) -> None:
        cfg["listeners"][0]["filters"][0]["config"] = audit
        proxy.config_path.write_text(yaml.safe_dump(cfg))

    def formats() -> set[int]:
        return {r["format"] for r in records(log)}

    slow: dict[str, Any] = {}

    def slow_call() -> None:
        slow["r"] = httpx.get(f"http://127.0.0.1:{port}/slow?ms=1500", headers={"x-tenant": "slow"}, timeout=10)

    with Steady(port) as steady:
        wait_for(lambda: steady.ok >= 20, what="steady traffic")
        assert formats() == {1}
        t = threading.Thread(target=slow_call)
        t.start()
        wait_for(lambda: upstream.paths.get("/slow", 0) == 1, what="the slow call to reach the upstream")

        # 1: new filter code (the audit record format changes)
        source.write_text(source.read_text().replace("RECORD_FORMAT = 1", "RECORD_FORMAT = 2"))
        _reload_and_wait(proxy, 2)
        wait_for(lambda: 2 in formats(), what="records written by the new code")
        t.join(10)
        assert slow["r"].status_code == 200
        slow_rec = [r for r in records(log) if r["tenant"] == "slow"]
        assert [r["format"] for r in slow_rec] == [1]  # the in-flight call finished on the old chain

        # 2: new config (a tenant with a budget of 0)
        write_config({"log": str(log), "flush_records": 1, "tenants": {"probe": {"calls": 0}}})
        _reload_and_wait(proxy, 3)
        probe = httpx.get(f"http://127.0.0.1:{port}/p", headers={"x-tenant": "probe"}, timeout=5)
        assert probe.status_code == 429 and "tenant 'probe' is over its budget of 0 calls" in probe.text

        # a broken plugin and a broken config are refused; the old ones keep serving
        good = source.read_text()
        source.write_text(good + "\ndef broken(:\n")
        r = httpx.post(proxy.admin_url + "/reload", timeout=10)
        assert r.status_code == 400
        assert "plugin 'acme.audit' from sofamesh-audit-filter 1.0.0 (acme_audit.plugin) failed to re-import" in r.text
        assert "SyntaxError" in r.text
        source.write_text(good)
        proxy.config_path.write_text("listeners: [\n")
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused, the old config keeps serving" in proxy.log(), what="the refusal in the log")
        assert "not valid YAML" in proxy.log()
        assert proxy.stats()["server"]["config_version"] == 3

        # 3: code and config together (format 3; probe's budget lifted)
        source.write_text(good.replace("RECORD_FORMAT = 2", "RECORD_FORMAT = 3"))
        write_config({"log": str(log), "flush_records": 1})
        _reload_and_wait(proxy, 4)
        assert httpx.get(f"http://127.0.0.1:{port}/p", headers={"x-tenant": "probe"}, timeout=5).status_code == 200
        wait_for(lambda: 3 in formats(), what="records written by the third code version")
        before = steady.ok
        wait_for(lambda: steady.ok >= before + 20, what="steady traffic after the last reload")
    assert steady.failures == []
    assert steady.ok > 60
    assert proxy.stats()["listeners"]["web"]["downstream_cx_total"] <= 6  # keep-alive connections survived
    assert "plugin packages re-imported: acme_audit" in proxy.log()
