"""pytest fixtures for plugin authors, loaded by pytest through the ``pytest11`` entry point.

``sofamesh_proxy(config, **kw)`` starts a ``ProxyProcess`` (see ``sofamesh.testing``) and stops it
at the end of the test; ``free_port`` is re-exported there for building configs.

    def test_my_filter(sofamesh_proxy):
        port = free_port()
        proxy = sofamesh_proxy({"listeners": [...], "clusters": [...]})
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess


@pytest.fixture
def sofamesh_proxy() -> Iterator[Callable[..., ProxyProcess]]:
    """A factory: ``sofamesh_proxy(config, args=(), env=None)`` -> a started, ready ``ProxyProcess``."""
    started: list[ProxyProcess] = []

    def start(config: dict[str, Any] | str, **kw: Any) -> ProxyProcess:
        proxy = ProxyProcess(config, **kw).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


__all__ = ["sofamesh_proxy"]
