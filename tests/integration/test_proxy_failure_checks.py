"""A proxy under test that logs an unhandled exception while it still answers, or exits non-zero
when it is stopped, fails the test that ran it: through ``ProxyProcess``, its ``with`` block and the
``sofamesh_proxy`` fixture. A test that provokes a traceback declares it, and then must see it."""

from __future__ import annotations

import re
import socket
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import ProxyFailed, ProxyProcess, UpstreamServer, free_port
from tests.integration.crash_plugin import crash_plugin_env

pytest_plugins = ["pytester"]


def _config(upstream: str, crash: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """Two listeners to one upstream: ``crashing`` runs crash.raise with ``crash``, ``plain`` does not."""
    crashing, plain = free_port(), free_port()
    route = [{"name": "all", "cluster": "web", "timeout_ms": 5000}]
    return {
        "listeners": [
            {"name": "crashing", "address": f"127.0.0.1:{crashing}", "protocols": ["http1"], "routes": route,
             "filters": [{"type": "crash.raise", "config": crash}]},
            {"name": "plain", "address": f"127.0.0.1:{plain}", "protocols": ["http1"], "routes": route},
        ],
        "clusters": [{"name": "web", "endpoints": [upstream]}],
    }, crashing, plain


def _crash_once_and_still_answer(crashing: int, plain: int) -> None:
    with pytest.raises(httpx.HTTPError):  # the connection that hit the exception is gone
        httpx.get(f"http://127.0.0.1:{crashing}/x", timeout=5)
    assert httpx.get(f"http://127.0.0.1:{plain}/x", timeout=5).text.startswith("up-a GET /x")


def test_a_proxy_that_logs_a_traceback_while_still_answering_fails_when_stopped(
        upstream: UpstreamServer, tmp_path: Path) -> None:
    config, crashing, plain = _config(upstream.address, {"on_request": True})
    proxy = ProxyProcess(config, env=crash_plugin_env(tmp_path)).start()
    _crash_once_and_still_answer(crashing, plain)
    assert proxy.get("/ready") == b"LIVE\n"
    with pytest.raises(ProxyFailed) as failed:
        proxy.stop()
    assert "the proxy logged an unhandled exception" in str(failed.value)
    assert "RuntimeError: crash.raise: boom" in str(failed.value)
    assert "expected exit" not in str(failed.value)  # it did shut down cleanly: only the traceback fails it


def test_a_proxy_that_exits_non_zero_at_shutdown_fails_its_with_block(upstream: UpstreamServer,
                                                                      tmp_path: Path) -> None:
    config, _, plain = _config(upstream.address, {"exit_on_shutdown": 3})
    with pytest.raises(ProxyFailed, match="the proxy exited with 3, expected exit 0"):
        with ProxyProcess(config, env=crash_plugin_env(tmp_path)):
            assert httpx.get(f"http://127.0.0.1:{plain}/x", timeout=5).status_code == 200


def test_a_worker_that_exits_non_zero_makes_the_supervisor_exit_non_zero(upstream: UpstreamServer,
                                                                           tmp_path: Path) -> None:
    config, _, plain = _config(upstream.address, {"exit_on_shutdown": 3})
    proxy = ProxyProcess(config, args=("--workers", "2"), env=crash_plugin_env(tmp_path)).start()
    assert httpx.get(f"http://127.0.0.1:{plain}/x", timeout=5).status_code == 200
    with pytest.raises(ProxyFailed, match="the proxy exited with 1, expected exit 0") as failed:
        proxy.stop()
    assert "error: worker 0 (pid " in str(failed.value) and "error: worker 1 (pid " in str(failed.value)
    assert str(failed.value).count(") exited with 3") == 2


def test_a_declared_traceback_passes_only_if_it_was_logged(upstream: UpstreamServer, tmp_path: Path) -> None:
    config, crashing, plain = _config(upstream.address, {"on_request": True})
    env = crash_plugin_env(tmp_path)
    with ProxyProcess(config, env=env, expect_tracebacks=["RuntimeError: crash.raise: boom"]):
        _crash_once_and_still_answer(crashing, plain)
    with pytest.raises(ProxyFailed, match=re.escape("logged no traceback containing 'RuntimeError: crash.raise: boom'")):
        with ProxyProcess(config, env=env, expect_tracebacks=["RuntimeError: crash.raise: boom"]):
            assert httpx.get(f"http://127.0.0.1:{plain}/x", timeout=5).status_code == 200


def test_a_failing_test_gets_the_proxys_traceback_as_a_note(upstream: UpstreamServer, tmp_path: Path) -> None:
    config, crashing, plain = _config(upstream.address, {"on_request": True})
    with pytest.raises(AssertionError) as failed:
        with ProxyProcess(config, env=crash_plugin_env(tmp_path)):
            _crash_once_and_still_answer(crashing, plain)
            raise AssertionError("the test's own failure")
    assert str(failed.value) == "the test's own failure"  # kept, not replaced
    assert any("RuntimeError: crash.raise: boom" in note for note in failed.value.__notes__)


def test_the_fixture_fails_a_passing_test_whose_proxy_logged_a_traceback_or_exited_non_zero(
        pytester: pytest.Pytester, upstream: UpstreamServer, tmp_path: Path) -> None:
    env = crash_plugin_env(tmp_path / "plugin")
    pytester.makepyfile(textwrap.dedent(f"""
        import httpx
        import pytest

        from sofamesh.testing import free_port

        ENV = {env!r}
        UPSTREAM = {upstream.address!r}

        def config(crash):
            port = free_port()
            return port, {{
                "listeners": [{{"name": "web", "address": f"127.0.0.1:{{port}}", "protocols": ["http1"],
                                "filters": [{{"type": "crash.raise", "config": crash}}],
                                "routes": [{{"name": "all", "cluster": "web"}}]}}],
                "clusters": [{{"name": "web", "endpoints": [UPSTREAM]}}],
            }}

        def test_traceback(sofamesh_proxy):
            port, cfg = config({{"on_request": True}})
            sofamesh_proxy(cfg, env=ENV)
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{{port}}/", timeout=5)

        def test_exit_code(sofamesh_proxy):
            port, cfg = config({{"exit_on_shutdown": 3}})
            sofamesh_proxy(cfg, env=ENV)
            assert httpx.get(f"http://127.0.0.1:{{port}}/", timeout=5).status_code == 200

        def test_declared(sofamesh_proxy):
            port, cfg = config({{"on_request": True}})
            sofamesh_proxy(cfg, env=ENV, expect_tracebacks=["RuntimeError: crash.raise: boom"])
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{{port}}/", timeout=5)
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", timeout=120)
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_traceback*", "*RuntimeError: crash.raise: boom*"])
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_exit_code*", "*the proxy exited with 3, expected exit 0*"])


def test_free_ports_come_from_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(21000 <= p < low for p in ports), ports


def test_an_admin_port_taken_before_the_proxy_binds_it_is_replaced_and_the_first_directory_removed() -> None:
    proxy = ProxyProcess({"listeners": [], "clusters": []})
    taken = proxy.config["admin"]["address"]
    first_dir = Path(proxy.config_path).parent
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(taken.rsplit(":", 1)[1])))
        holder.listen()
        with proxy:
            assert proxy.config["admin"]["address"] != taken
            assert proxy.stats()  # its admin answers on the new port
            assert not first_dir.exists()
