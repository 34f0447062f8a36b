"""sofamesh's annotations that hold a YAML or JSON document (``sofamesh.io/transcoders`` on a
VirtualService, ``sofamesh.io/local-rate-limit`` on a Gateway): reading one, and the admission
error for text that does not parse. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from sofamesh.core.config.yaml_text import safe_load
from sofamesh.pilot.policy.schema import Report

__all__ = ["annotation_document", "parse_annotation"]


def parse_annotation(annotations: Mapping[str, Any], key: str) -> Any:
    """The document ``key`` holds, ``None`` without it or when it does not parse."""
    text = annotations.get(key)
    if text is None:
        return None
    try:
        return safe_load(str(text))
    except yaml.YAMLError:
        return None


def annotation_document(annotations: Mapping[str, Any], key: str, report: Report) -> tuple[str, Any] | None:
    """``(its path, the document)`` of annotation ``key``; ``None`` without it, or when it does not
    parse (reported at ``metadata.annotations[KEY]``)."""
    text = annotations.get(key)
    if text is None:
        return None
    where = f"metadata.annotations[{key}]"
    try:
        return where, safe_load(str(text))
    except yaml.YAMLError as exc:
        report.error(where, f"not YAML or JSON: {str(exc).replace(chr(10), ' ')}")
        return None
