"""crash.raise: a filter that fails on purpose, to prove that a proxy which logs an unhandled
exception or exits non-zero fails the test that ran it (tests/integration/test_proxy_failure_checks.py).

``{"type": "crash.raise", "config": {"on_request": true, "exit_on_shutdown": 3}}``: every request
head raises ``RuntimeError("crash.raise: boom")``; the process ends with ``os._exit(3)`` in the
shutdown hook, after a clean drain. Loaded through the dist-info that ``crash_plugin_env`` writes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sofamesh.core.catalog import Catalog
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, Verdict
from sofamesh.core.proxy.stream import Stream
from sofamesh.core.server_view import ServerView

_exit_on_shutdown: int | None = None


class RaiseOnRequest(Filter):
    def __init__(self, on_request: bool) -> None:
        self.on_request = on_request

    def on_request_head(self, stream: Stream) -> FilterResult:
        if self.on_request:
            raise RuntimeError("crash.raise: boom")
        return Verdict.CONTINUE


class RaiseOnRequestFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> RaiseOnRequest:
        global _exit_on_shutdown
        _exit_on_shutdown = config.get("exit_on_shutdown")
        return RaiseOnRequest(bool(config.get("on_request", False)))


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("crash.raise", RaiseOnRequestFactory())


@hookimpl
def sofamesh_shutdown(server: ServerView) -> None:
    if _exit_on_shutdown is not None:
        os._exit(_exit_on_shutdown)


def crash_plugin_env(root: Path) -> dict[str, str]:
    """Write a dist-info declaring this module as the plugin ``crash.raise`` under ``root``; the
    environment a proxy needs to find it (what ``pip install`` of such a distribution leaves)."""
    info = root / "sofamesh_crash_plugin-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sofamesh-crash-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[sofamesh.plugins]\ncrash.raise = {__name__}\n")
    checkout = Path(__file__).parents[2]
    return {"PYTHONPATH": os.pathsep.join([str(root), str(checkout)])}
