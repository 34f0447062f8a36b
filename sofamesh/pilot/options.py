"""The one check every Pilot plugin context makes of its ``options``: no key the plugin does not know."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sofamesh.core.errors import ConfigError


def check_options(options: Mapping[str, Any], known: Sequence[str], path: str, what: str) -> dict[str, Any]:
    """A copy of ``options``; ``ConfigError(path, ...)`` naming ``what`` and the known keys on an unknown one."""
    opts = dict(options)
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ConfigError(path, f"unknown option(s) {', '.join(unknown)} for {what} "
                                f"(known: {', '.join(known) or 'none'})")
    return opts


__all__ = ["check_options"]
