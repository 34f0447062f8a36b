"""``google.api.http`` path templates: parsed once, matched against request paths.

Owns the template grammar of ``google/api/http.proto`` only (no protobuf, no HTTP)::

    Template = "/" Segments [ Verb ] ;   Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;   Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;   Verb = ":" LITERAL ;

``{var}`` is ``{var=*}``: one path segment. A variable spanning segments (``{name=shelves/*}``,
``{path=**}``) keeps ``%2F`` escaped in its value, as RFC 6570 reserved expansion. Values are
percent-decoded by the ``url_unescape_spec`` of Envoy's transcoder (default: every character
except RFC 6570's reserved ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["PathTemplate", "TemplateError", "UnescapeSpec", "parse_template", "unescape"]

UnescapeSpec = Literal["ALL_CHARACTERS_EXCEPT_RESERVED", "ALL_CHARACTERS_EXCEPT_SLASH", "ALL_CHARACTERS"]

_FIELD_PATH: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_RESERVED: Final = frozenset(":/?#[]@!$&'()*+,;=")
_ONE: Final = "[^/]+"
_MANY: Final = "[^/]+(?:/[^/]+)*"


class TemplateError(ValueError):
    """A path template that does not follow the grammar; the message names the template and why."""


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled template: ``variables`` are (field path, spans segments) in template order; ``rank``
    orders templates most specific first (a literal segment before a wildcard, as the transcoder's
    path matcher prefers)."""

    template: str
    regex: re.Pattern[str]
    variables: tuple[tuple[str, bool], ...]
    rank: tuple[int, ...]

    def match(self, path: str, spec: UnescapeSpec = "ALL_CHARACTERS_EXCEPT_RESERVED") -> list[tuple[str, str]] | None:
        """The (field path, decoded value) bindings of ``path`` (no query), or None when it does not match."""
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        return [
            (name, unescape(value, spec, multi))
            for (name, multi), value in zip(self.variables, m.groups(), strict=True)
        ]


def unescape(value: str, spec: UnescapeSpec, multi_segment: bool = False) -> str:
    """``value`` percent-decoded by ``spec``; a multi-segment variable never decodes ``%2F``."""
    if "%" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        if spec == "ALL_CHARACTERS_EXCEPT_RESERVED" and ch in _RESERVED:
            return m.group(0)
        if ch == "/" and (multi_segment or spec == "ALL_CHARACTERS_EXCEPT_SLASH"):
            return m.group(0)
        return ch

    text = _ESCAPE.sub(one, value)
    try:  # escapes of UTF-8 bytes: decode the whole as bytes once more
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _split(text: str, template: str) -> list[str]:
    """``text`` split on ``/`` outside braces."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "{":
            depth += 1
            if depth > 1:
                raise TemplateError(f"path template {template!r}: a variable inside a variable")
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"path template {template!r}: '}}' without '{{'")
        if ch == "/" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise TemplateError(f"path template {template!r}: '{{' without '}}'")
    out.append("".join(cur))
    return out


def _segment(seg: str, template: str, rank: list[int]) -> tuple[str, bool]:
    """The regex of a plain segment and whether it spans segments."""
    if seg == "*":
        rank.append(1)
        return _ONE, False
    if seg == "**":
        rank.append(2)
        return _MANY, True
    if not seg or "*" in seg or "{" in seg or "}" in seg:
        raise TemplateError(f"path template {template!r}: bad segment {seg!r}")
    rank.append(0)
    return re.escape(seg), False


def parse_template(template: str) -> PathTemplate:
    """Compile ``template``; raises ``TemplateError`` naming what is wrong."""
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    body, verb = template[1:], ""
    last = body.rfind("/")
    colon = body.rfind(":")
    if colon > last and "}" not in body[colon:]:
        body, verb = body[:colon], body[colon + 1 :]
        if not verb or any(c in verb for c in "/{}*:"):
            raise TemplateError(f"path template {template!r}: bad verb {verb!r}")
    parts: list[str] = []
    variables: list[tuple[str, bool]] = []
    rank: list[int] = []
    for seg in _split(body, template):
        if seg.startswith("{") and seg.endswith("}"):
            name, eq, sub = seg[1:-1].partition("=")
            name = name.strip()
            if not _FIELD_PATH.fullmatch(name):
                raise TemplateError(f"path template {template!r}: bad variable name {name!r}")
            if any(v == name for v, _ in variables):
                raise TemplateError(f"path template {template!r}: variable {name!r} twice")
            if not eq:
                sub = "*"
            inner = [_segment(s, template, rank) for s in sub.split("/")]
            multi = len(inner) > 1 or any(m for _, m in inner)
            parts.append("(" + "/".join(r for r, _ in inner) + ")")
            variables.append((name, multi))
        else:
            parts.append(_segment(seg, template, rank)[0])
    regex = "/" + "/".join(parts) + (":" + re.escape(verb) if verb else "")
    rank.append(0 if verb else 1)
    return PathTemplate(template, re.compile(regex), tuple(variables), tuple(rank))
