"""pytest fixtures for plugin authors, loaded by pytest through the ``pytest11`` entry point.

``sofamesh_proxy(config, **kw)`` starts a ``ProxyProcess`` (see ``sofamesh.testing``) and stops it
at the end of the test; ``free_port`` is re-exported there for building configs. The test fails
(an error in its teardown) if a proxy it started logged an unhandled exception or did not exit 0;
a test that provokes one declares it: ``sofamesh_proxy(config, expect_tracebacks=["boom"])``.

    def test_my_filter(sofamesh_proxy):
        port = free_port()
        proxy = sofamesh_proxy({"listeners": [...], "clusters": [...]})
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sofamesh.testing import ProxyFailed, ProxyProcess


@pytest.fixture
def sofamesh_proxy() -> Iterator[Callable[..., ProxyProcess]]:
    """A factory: ``sofamesh_proxy(config, args=(), env=None, expect_tracebacks=(), expect_exit=0)``
    -> a started, ready ``ProxyProcess``. At teardown every proxy is stopped, then checked."""
    started: list[ProxyProcess] = []

    def start(config: dict[str, Any] | str, **kw: Any) -> ProxyProcess:
        proxy = ProxyProcess(config, **kw)
        started.append(proxy)  # before start(): one that dies while starting is stopped and checked too
        return proxy.start()

    yield start
    failures: list[str] = []
    for proxy in started:
        try:
            proxy.stop()
        except ProxyFailed as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


__all__ = ["sofamesh_proxy"]
