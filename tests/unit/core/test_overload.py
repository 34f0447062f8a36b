"""The overload manager's config and its decisions, without sockets: which actions a pressure
turns on, what connections and requests then see (``core/pressure.py``), and turning off again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from sofamesh.core.config.model import OverloadActionConfig, OverloadManagerConfig
from sofamesh.core.overload import OverloadManager, rss_bytes
from sofamesh.core.pressure import PROCESS
from sofamesh.core.proxy.runtime import ListenerRuntime


class _Listeners:
    """What the manager asks of the listener set: pausing, resuming, the runtimes."""

    def __init__(self) -> None:
        self.paused: list[str] = []
        self.resumed: list[list[str]] = []

    def pause_accepting(self) -> list[str]:
        self.paused = ["web"]
        return ["web"]

    def resume_accepting(self, names: list[str]) -> None:
        self.resumed.append(names)

    def runtimes(self) -> Iterator[ListenerRuntime]:
        return iter(())


def test_an_unknown_action_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown overload action 'stop_acepting'.*stop_accepting_requests"):
        OverloadActionConfig(name="stop_acepting", triggers=[{"name": "memory", "threshold": 0.9}])


def test_envoy_prefixed_action_names_are_accepted() -> None:
    a = OverloadActionConfig(
        name="envoy.overload_actions.disable_http_keepalive", triggers=[{"name": "memory", "threshold": 0.9}]
    )
    assert a.name == "disable_http_keepalive"


def test_a_trigger_on_a_monitor_without_its_limit_is_refused() -> None:
    with pytest.raises(
        ValidationError, match=r"actions\[0\] \(shrink_heap\) is triggered by memory, which needs max_rss_bytes"
    ):
        OverloadManagerConfig(actions=[{"name": "shrink_heap", "triggers": [{"name": "memory", "threshold": 0.5}]}])


def test_a_memory_monitor_without_actions_gets_the_ladder_in_order() -> None:
    ladder = [(a.name, a.triggers[0].threshold) for a in OverloadManagerConfig(max_rss_bytes=1).effective_actions()]
    assert ladder == [
        ("shrink_heap", 0.85),
        ("stop_accepting_connections", 0.90),
        ("disable_http_keepalive", 0.92),
        ("stop_accepting_requests", 0.95),
        ("reset_high_memory_stream", 0.98),
    ]


def test_pressure_over_every_threshold_turns_every_action_on_and_stop_turns_them_off() -> None:
    listeners = _Listeners()
    actions = [
        {"name": n, "triggers": [{"name": "memory", "threshold": 0.5}]}
        for n in (
            "stop_accepting_connections",
            "reject_incoming_connections",
            "disable_http_keepalive",
            "stop_accepting_requests",
        )
    ]
    cfg = OverloadManagerConfig(max_rss_bytes=rss_bytes() // 2, max_active_downstream_connections=7, actions=actions)
    manager = OverloadManager(cfg, listeners)  # type: ignore[arg-type]
    try:
        manager.tick()
        assert (PROCESS.reject, PROCESS.shed, PROCESS.no_keepalive, PROCESS.per_request) == (True, True, True, True)
        assert PROCESS.max_cx == 7
        assert listeners.paused == ["web"]
        snap = PROCESS.snapshot()
        assert snap["stop_accepting_requests.active"] == 1 and snap["stop_accepting_requests.activations"] >= 1
        assert snap["memory.pressure"] >= 1.0
        manager.config = OverloadManagerConfig(max_rss_bytes=rss_bytes() * 100, actions=actions)
        manager.tick()  # the pressure fell under every threshold
        assert (PROCESS.reject, PROCESS.shed, PROCESS.per_request) == (False, False, False)
        assert listeners.resumed == [["web"]]
    finally:
        manager.stop()
    assert (PROCESS.reject, PROCESS.shed, PROCESS.max_cx) == (False, False, 0)
