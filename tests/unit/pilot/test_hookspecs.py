"""Every Pilot hook is a documented contract."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import sofamesh.pilot.hookspecs as specs
from sofamesh.pilot.app import pilot_host

DOC = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"
HOOKS = sorted(n for n, f in inspect.getmembers(specs, inspect.isfunction) if n.startswith("pilot_"))


def _section(name: str) -> str:
    text = DOC.read_text().split("## Pilot hooks", 1)[1]
    return text.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]


def test_pilot_declares_the_five_hooks_of_its_contract() -> None:
    assert HOOKS == ["pilot_instances_changed", "pilot_register_registries", "pilot_register_xds_generators",
                     "pilot_shutdown", "pilot_startup"]
    assert sorted(h for h in dir(pilot_host().pm.hook) if h.startswith("pilot_")) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_and_argument_is_documented(hook: str) -> None:
    func = getattr(specs, hook)
    doc = inspect.getdoc(func) or ""
    assert ".. versionadded:: 0.1" in doc
    section = _section(hook)
    for arg in inspect.signature(func).parameters:
        assert f":param {arg}:" in doc, f"{hook}: docstring does not describe {arg}"
        assert f"`{arg}`" in section, f"{hook}: docs/plugins.md does not describe {arg}"
