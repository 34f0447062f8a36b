"""The field rules Istio's validating webhook shares across resources: hosts, labels, selectors,
regexes (RE2), header names and values, percentages, durations, exportTo, gateway names.

Each function takes a value and its path and adds issues to a :class:`Report`; none raises.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sofamesh.pilot.policy.duration import check_duration
from sofamesh.pilot.policy.schema import Report, child, entry, is_dns1123_label

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# sofamesh extension: an RPC service name (a Java interface, ``com.example.EchoService:1.0``) is a host.
_RPC_NAME = re.compile(r"[A-Za-z0-9][\w$\-]*(\.[\w$\-]+)*(:[\w.\-]+)?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9]+")
_STRICT_HEADER_NAME = re.compile(r"[-A-Za-z0-9]+")
_HEADER_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
# Constructs Python's re accepts and RE2 (Envoy's and Istio's regex engine) does not.
_NOT_RE2 = re.compile(r"\(\?[=!]|\(\?<[=!]|\(\?>|\(\?P=|\\[1-9]|[*+?}][+]")
MAX_REGEX_LEN = 1024


def dns_domain_problem(host: str, wildcard: bool = True) -> str | None:
    """Istio's ``ValidateWildcardDomain``: a lowercase DNS name, ``*`` or ``*.suffix`` when
    ``wildcard``; ``None`` when fine."""
    if not host:
        return "domain name cannot be empty"
    if len(host) > 255:
        return f"domain name {host!r} too long (max 255)"
    labels = host.split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
        if not labels:
            return None
    elif wildcard and labels[0].startswith("*"):
        return f"wildcard in {host!r} must be a whole leading label (*.example.com)"
    for label in labels:
        if len(label) > 63 or not _DNS_LABEL.fullmatch(label):
            return f"domain name {host!r} invalid (label {label!r} is not a lowercase DNS-1123 label)"
    return None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_rpc_name(value: str) -> bool:
    return bool(_RPC_NAME.fullmatch(value)) and len(value) <= 253


def check_host(host: Any, path: str, report: Report, *, allow_star: bool = True, allow_ip: bool = True) -> None:
    """A host in a resource: a DNS name (``reviews``, ``*.example.com``), an IP when ``allow_ip``,
    or (sofamesh) an RPC service name such as ``com.example.EchoService:1.0``."""
    if not isinstance(host, str):
        return
    if host == "*" and not allow_star:
        report.error(path, f"invalid host {host}")
        return
    problem = dns_domain_problem(host)
    if problem is None or (allow_ip and is_ip(host)) or (not host.startswith("*") and is_rpc_name(host)):
        return
    report.error(path, problem)


def check_labels(labels: Any, path: str, report: Report) -> None:
    """Kubernetes label syntax (``[prefix/]name`` keys, values of at most 63 characters)."""
    if not isinstance(labels, Mapping):
        return
    for k, v in labels.items():
        p = entry(path, str(k))
        name = str(k).rpartition("/")[2]
        prefix = str(k).rpartition("/")[0]
        if len(name) > 63 or not _LABEL_NAME.fullmatch(name) or (prefix and dns_domain_problem(prefix, False)):
            report.error(p, f"invalid label key {k!r}")
        if isinstance(v, str) and (len(v) > 63 or (v and not _LABEL_NAME.fullmatch(v))):
            report.error(p, f"invalid label value {v!r}")


def check_selector(labels: Any, path: str, report: Report, what: str = "workload selector") -> None:
    """A workload selector's labels: no empty key, no wildcard; an empty one is a warning."""
    if labels is None:
        return
    if isinstance(labels, Mapping):
        if not labels:
            report.warn(path, f"{what} specified without labels")
        for k, v in labels.items():
            if k == "":
                report.error(entry(path, ""), f"empty key is not supported in selector: {k}={v}")
            if "*" in str(k) or "*" in str(v):
                report.error(entry(path, str(k)), f"wildcard is not supported in selector: {k}={v}")
        check_labels(labels, path, report)


def check_regex(pattern: Any, path: str, report: Report) -> None:
    """An RE2 regex as Envoy compiles it: at most 1024 characters, no look-around or backreference."""
    if not isinstance(pattern, str):
        return
    if pattern == "":
        report.error(path, "regex string match should not be empty")
        return
    if len(pattern) > MAX_REGEX_LEN:
        report.error(path, f"regex is too large, max length allowed is {MAX_REGEX_LEN}")
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        report.error(path, f"invalid regex {pattern!r}: {exc}; Istio uses RE2 syntax")
        return
    if _NOT_RE2.search(pattern):
        report.error(path, f"invalid regex {pattern!r}: look-around, backreferences and possessive "
                           "quantifiers are not RE2 syntax")


def check_string_match(sm: Any, path: str, report: Report) -> None:
    """A StringMatch (``exact`` / ``prefix`` / ``regex``): a prefix is non-empty, a regex compiles."""
    if not isinstance(sm, Mapping):
        return
    if "prefix" in sm and sm["prefix"] == "":
        report.error(child(path, "prefix"), "prefix string match should not be empty")
    if "regex" in sm:
        check_regex(sm["regex"], child(path, "regex"), report)


def check_duration_value(value: Any, path: str, report: Report, minimum: float = 0.001) -> None:
    if isinstance(value, str):
        problem = check_duration(value, minimum)
        if problem and "invalid duration" not in problem:  # the schema already named a malformed one
            report.error(path, problem)


def check_percentage(value: Any, path: str, report: Report) -> None:
    """A ``Percent`` message: 0, or 0.0001..100."""
    if isinstance(value, Mapping):
        v = value.get("value", 0)
        if isinstance(v, int | float) and not isinstance(v, bool) and (v < 0 or v > 100 or 0 < v < 0.0001):
            report.error(child(path, "value"), f"percentage {v} is neither 0.0, nor in range [0.0001, 100.0]")


def check_header_name(name: str, path: str, report: Report, *, match: bool = False, strict: bool = False) -> None:
    if name == "":
        report.error(path, "header name cannot be empty")
    elif match and name in _PSEUDO_HEADERS:
        return
    elif not (_STRICT_HEADER_NAME if strict else _HEADER_NAME).fullmatch(name):
        report.error(path, f"header name {name} is not a valid header name")


def check_header_operations(ops: Any, path: str, report: Report, *, request: bool) -> None:
    """``headers.request`` / ``headers.response``: set, add, remove."""
    if not isinstance(ops, Mapping):
        return
    for verb in ("set", "add", "remove"):
        items = ops.get(verb)
        if not items:
            continue
        names = items if verb == "remove" else list(items)
        for i, name in enumerate(names):
            if not isinstance(name, str):
                continue
            p = child(child(path, verb), i) if verb == "remove" else entry(child(path, verb), name)
            if name == "":
                report.error(p, "header name cannot be empty")
            elif request and verb != "remove" and name.lower() == ":authority":
                pass
            elif name.startswith(":"):
                report.error(p, f"invalid header {name!r}: header cannot have \":\" prefix")
            elif name.lower() == "host" and (verb == "remove" or not request):
                report.error(p, f"invalid header {name!r}: cannot set Host header")
            if verb != "remove":
                value = items[name]
                if isinstance(value, str) and not _HEADER_VALUE.fullmatch(value):
                    report.error(p, "header value contains control characters")
                elif isinstance(value, str) and _bad_percent(value):
                    report.error(p, f"header value configuration {value!r}: unbalanced '%' (write %% for a "
                                    "literal percent sign)")


def _bad_percent(value: str) -> bool:
    """Envoy's header value formatting: ``%VAR%`` pairs, ``%%`` for a literal ``%``."""
    i = 0
    while i < len(value):
        if value[i] == "%":
            if value[i + 1:i + 2] == "%":
                i += 2
                continue
            end = value.find("%", i + 1)
            if end < 0:
                return True
            i = end + 1
            continue
        i += 1
    return False


def check_headers(headers: Any, path: str, report: Report) -> None:
    """A ``Headers`` message: ``request`` and ``response`` operations."""
    if isinstance(headers, Mapping):
        check_header_operations(headers.get("request"), child(path, "request"), report, request=True)
        check_header_operations(headers.get("response"), child(path, "response"), report, request=False)


def check_export_to(namespace: str, export_to: Any, path: str, report: Report, *, service_entry: bool = False,
                    dr_with_selector: bool = False) -> None:
    """``exportTo``: ``.``, ``*``, namespaces (``~`` for a ServiceEntry), without duplicates or mixes."""
    if not isinstance(export_to, list) or not export_to:
        return
    seen: set[str] = set()
    for i, e in enumerate(export_to):
        if not isinstance(e, str):
            continue
        key = namespace if e == "." else e
        p = child(path, i)
        if key in seen:
            report.error(p, f"duplicate entries in exportTo: . and current namespace {namespace}" if key != e
                         else f"duplicate entries in exportTo for entry {e}")
            continue
        if e == "~" and not service_entry:
            report.error(p, "only . or * or a valid DNS 1123 label is allowed as exportTo entry")
            continue
        if e not in ("*", "~") and not is_dns1123_label(key):
            report.error(p, "only . or * or a valid DNS 1123 label is allowed as exportTo entry")
            continue
        seen.add(key)
    if dr_with_selector and seen:
        if namespace in seen and len(seen) > 1:
            report.error(path, "destination rule with workload selector cannot have multiple entries in exportTo")
        elif namespace not in seen:
            report.error(path, "destination rule with workload selector cannot have exportTo beyond current namespace")
    if "*" in seen and len(export_to) > 1:
        report.error(path, "cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(export_to) > 1:
        report.error(path, "cannot export service entry to no one (~) and someone")


def check_gateway_names(names: Any, path: str, report: Report) -> None:
    """``gateways``: ``mesh``, ``<namespace>/<name>``, or a legacy name (warned)."""
    if not isinstance(names, list):
        return
    for i, name in enumerate(names):
        if not isinstance(name, str):
            continue
        p = child(path, i)
        ns, sep, gw = name.partition("/")
        if not sep:
            if "." in name:
                parts = name.split(".")
                report.warn(p, f"using legacy gatewayName format {name!r}; prefer the <namespace>/<name> format: "
                               f"'{parts[1]}/{parts[0]}'")
            problem = dns_domain_problem(name, wildcard=False)
            if problem:
                report.error(p, problem)
            continue
        if not ns or not gw:
            report.error(p, "config namespace and gateway name cannot be empty")
        elif not is_dns1123_label(ns):
            report.error(p, f"invalid value for namespace: {ns!r}")
        elif not is_dns1123_label(gw):
            report.error(p, f"invalid value for gateway name: {gw!r}")


def check_ip_or_cidr(value: Any, path: str, report: Report) -> None:
    if not isinstance(value, str):
        return
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        report.error(path, f"{value!r} is not a valid IP address or CIDR range")


def check_weighted(routes: Any, path: str, report: Report) -> None:
    """Istio's weight rules: each weight >= 0; with more than one destination the total is > 0
    (a destination gets weight / total of the traffic; the total need not be 100)."""
    if not isinstance(routes, list):
        return
    total = 0
    for i, r in enumerate(routes):
        if not isinstance(r, Mapping):
            continue
        w = r.get("weight", 0)
        if isinstance(w, int) and not isinstance(w, bool):
            if w < 0:
                report.error(child(child(path, i), "weight"), f"weight {w} < 0")
            total += max(w, 0)
    if len(routes) > 1 and total == 0:
        report.error(path, "total destination weight = 0")


def check_subset_name(name: Any, path: str, report: Report) -> None:
    if not isinstance(name, str):
        return
    if name == "":
        report.error(path, "subset name cannot be empty")
    elif not is_dns1123_label(name):
        report.error(path, f"subset name is invalid: {name}")


def check_destination(dest: Any, path: str, report: Report) -> None:
    """A Destination: a host (not ``*``), a DNS-1123 subset name, a port 1..65535."""
    if not isinstance(dest, Mapping):
        return
    host = dest.get("host")
    if host == "*":
        report.error(child(path, "host"), f"invalid destination host {host}")
    else:
        check_host(host, child(path, "host"), report, allow_ip=False)
    if "subset" in dest:
        check_subset_name(dest["subset"], child(path, "subset"), report)


def non_empty(values: Sequence[Any], path: str, report: Report, what: str) -> None:
    for i, v in enumerate(values):
        if v == "":
            report.error(child(path, i), f"empty value not allowed, found in {what}")


__all__ = [
    "check_destination",
    "check_duration_value",
    "check_export_to",
    "check_gateway_names",
    "check_header_name",
    "check_headers",
    "check_host",
    "check_ip_or_cidr",
    "check_labels",
    "check_percentage",
    "check_regex",
    "check_selector",
    "check_string_match",
    "check_subset_name",
    "check_weighted",
    "dns_domain_problem",
    "is_ip",
    "is_rpc_name",
    "non_empty",
]
