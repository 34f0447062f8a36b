"""Pilot's hook contract: the seven hooks, each argument described in its docstring.

(tests/unit/test_hook_docs.py checks that docs/plugins.md documents every hook and argument.)
"""

from __future__ import annotations

import inspect

import pytest

import sofamesh.pilot.hookspecs as specs
from sofamesh.pilot.app import pilot_host

HOOKS = sorted(n for n, f in inspect.getmembers(specs, inspect.isfunction) if n.startswith("pilot_"))


def test_pilot_declares_the_seven_hooks_of_its_contract() -> None:
    assert HOOKS == ["pilot_instances_changed", "pilot_register_cas", "pilot_register_config_stores",
                     "pilot_register_registries", "pilot_register_xds_generators", "pilot_register_xds_transports",
                     "pilot_shutdown", "pilot_startup"]
    assert sorted(h for h in dir(pilot_host().pm.hook) if h.startswith("pilot_")) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_docstring_describes_every_argument_and_the_return_value(hook: str) -> None:
    func = getattr(specs, hook)
    doc = inspect.getdoc(func) or ""
    assert ".. versionadded:: 0.1" in doc and ":return:" in doc
    for arg in inspect.signature(func).parameters:
        assert f":param {arg}:" in doc, f"{hook}: docstring does not describe {arg}"
