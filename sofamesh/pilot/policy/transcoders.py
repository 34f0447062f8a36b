"""The VirtualService annotation ``sofamesh.io/transcoders``: HTTP routes answered by a transcoder.

Istio's VirtualService has no field for it, so (as Aeraki's ``interface`` annotation on a
ServiceEntry) sofamesh reads an annotation: a YAML or JSON mapping from an ``http`` route's
``name`` to the route filter that answers it, ``{type: transcoder | grpc_json_transcoder, config:
{...}}``, the ``config`` exactly as the sidecar's YAML takes it (docs/gateway.md)::

    metadata:
      annotations:
        sofamesh.io/transcoders: |
          add: {type: transcoder, config: {protocol: dubbo, interface: com.example.Calc, method: add,
                                           arguments: [{name: a, type: int}, {name: b, type: int}]}}

Admission checks the shape (a mapping, names of the resource's ``http`` routes, a known type, a
mapping config); the sidecar checks the config when it builds the route and NACKs a bad one naming
the field. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import yaml

from sofamesh.core.config.yaml_text import safe_load
from sofamesh.pilot.policy.schema import Report

__all__ = ["ANNOTATION", "TRANSCODER_TYPES", "check_transcoders", "transcoders_of"]

ANNOTATION: Final = "sofamesh.io/transcoders"
TRANSCODER_TYPES: Final = ("transcoder", "grpc_json_transcoder")


def _parse(text: str) -> Any:
    try:
        return safe_load(text)
    except yaml.YAMLError as exc:
        return ValueError(str(exc).replace("\n", " "))


def check_transcoders(annotations: Mapping[str, Any], spec: Mapping[str, Any], report: Report) -> None:
    """Errors of the annotation (when present) at ``metadata.annotations[sofamesh.io/transcoders]``."""
    text = annotations.get(ANNOTATION)
    if text is None:
        return
    where = f"metadata.annotations[{ANNOTATION}]"
    doc = _parse(str(text))
    if isinstance(doc, ValueError):
        report.error(where, f"not YAML or JSON: {doc}")
        return
    if not isinstance(doc, Mapping) or not doc:
        report.error(where, "a mapping from http route names to {type, config}")
        return
    names = {h.get("name") for h in spec.get("http") or [] if isinstance(h, Mapping)}
    for name, entry in doc.items():
        at = f"{where}.{name}"
        if name not in names:
            known = ", ".join(sorted(n for n in names if isinstance(n, str))) or "none has a name"
            report.error(at, f"no http route named {name!r} (named routes: {known})")
            continue
        if not isinstance(entry, Mapping):
            report.error(at, "expected {type, config}")
            continue
        unknown = sorted(str(k) for k in entry if k not in ("type", "config"))
        if unknown:
            report.error(f"{at}.{unknown[0]}", 'unknown field (known: "type", "config")')
        if entry.get("type") not in TRANSCODER_TYPES:
            report.error(f"{at}.type", f"expected one of {', '.join(TRANSCODER_TYPES)}, got {entry.get('type')!r}")
        if not isinstance(entry.get("config"), Mapping):
            report.error(f"{at}.config", "required: the filter's config, a mapping")


def transcoders_of(annotations: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{http route name: {type, config}}`` of an admitted VirtualService (empty without the annotation)."""
    text = annotations.get(ANNOTATION)
    doc = _parse(str(text)) if text is not None else None
    if not isinstance(doc, Mapping):
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, Mapping)}
