"""A Dubbo provider URL's parameters -> the model's version, group, weight, health and labels (pure).

One reading for every registry that carries Dubbo providers (the ZooKeeper Dubbo layout, Nacos's
``providers:<interface>:<version>:<group>`` services), so a provider is the same instance whichever
registry it came through. As Dubbo's ``URL.getParameter`` does, a missing ``version`` or ``group``
falls back to ``default.version`` / ``default.group`` (what @dubbo.ts and older Dubbo write).
Parameters that say where the provider sits in a registry (``interface``, ``path``, ``category``)
or that become model fields are not labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_WEIGHT = 100  # Dubbo's
MAX_WEIGHT = 128  # the model's limit
FIELDS = frozenset(
    {
        "interface",
        "path",
        "category",
        "version",
        "group",
        "default.version",
        "default.group",
        "weight",
        "enabled",
        "disabled",
    }
)
"""Parameters read into model fields or implied by the registry's layout; never labels."""


@dataclass(frozen=True, slots=True)
class DubboFields:
    version: str
    group: str
    weight: int
    enabled: bool
    labels: dict[str, str]


def parameter(params: Mapping[str, str], key: str) -> str:
    """``URL.getParameter(key)``: the parameter, else its ``default.`` form, else ``""``."""
    return params.get(key) or params.get(f"default.{key}") or ""


def weight_of(value: str | None, scale: float = 1.0) -> int:
    """Dubbo's ``weight`` (default 100; unparsable -> 100) times ``scale``, within the model's 1..128."""
    try:
        w = int(value) if value not in (None, "") else DEFAULT_WEIGHT
    except ValueError:
        w = DEFAULT_WEIGHT
    return max(1, min(MAX_WEIGHT, round(w * scale)))


def dubbo_fields(params: Mapping[str, str], also_not_labels: frozenset[str] = frozenset()) -> DubboFields:
    """Read ``params``; ``enabled`` is false for ``enabled=false`` or ``disabled=true``."""
    labels = {k: v for k, v in params.items() if k not in FIELDS and k not in also_not_labels}
    enabled = params.get("enabled", "true") != "false" and params.get("disabled", "false") != "true"
    return DubboFields(
        parameter(params, "version"), parameter(params, "group"), weight_of(params.get("weight")), enabled, labels
    )


__all__ = ["DEFAULT_WEIGHT", "FIELDS", "MAX_WEIGHT", "DubboFields", "dubbo_fields", "parameter", "weight_of"]
