"""The ``proxy-status``, ``proxy-config`` and ``describe`` commands of the ``sofamesh`` CLI, as
istioctl's: Pilot's ``/debug`` JSON over HTTP (``pilot/api/dashboard.py``), printed as aligned
tables, or as that JSON with ``-o json`` (YAML with ``-o yaml``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import quote

import yaml

from sofamesh.pilot.policy.client import CommandError, PilotClient

TYPES = ("cds", "lds", "eds", "rds")
CONFIG_KINDS = ("cluster", "listener", "route", "endpoint")


def table(rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """Columns padded to their widest cell, three spaces apart (the first row is the header)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        print("   ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip(), file=out)


def _get(client: PilotClient, path: str) -> Any:
    resp = client.request("GET", path)
    if resp.status_code != 200:
        try:
            message = resp.json().get("error") or resp.text
        except ValueError:
            message = resp.text
        raise CommandError(str(message).strip())
    return resp.json()


def _dump(doc: Any, output: str, out: TextIO) -> None:
    if output == "yaml":
        print(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).rstrip(), file=out)
    else:
        print(json.dumps(doc, indent=2, sort_keys=True), file=out)


# -- proxy-status -----------------------------------------------------------------------------------
def proxy_status(client: PilotClient, proxy: str | None, output: str | None, out: TextIO) -> int:
    """One row per connected proxy; a NACKed type shows NACKED and its error below the table."""
    rows = _get(client, "/debug/proxy_status")["proxies"]
    if proxy is not None:
        rows = [r for r in rows if r["proxy"] == proxy]
        if not rows:
            raise CommandError(f"no connected proxy {proxy!r}")
    if output:
        _dump({"proxies": rows}, output, out)
        return 0
    if not rows:
        print("No proxies are connected to Pilot.", file=out)
        return 0
    table(
        [("NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "MODE", "VERSION")]
        + [
            (
                r["proxy"],
                r["cluster"] or "-",
                *(r["types"][t]["state"] for t in TYPES),
                r["mode"],
                r["user_agent"] or "-",
            )
            for r in rows
        ],
        out,
    )
    for r in rows:
        for t, s in r["types"].items():
            if s["state"] == "NACKED":
                print(
                    f"{r['proxy']} {t.upper()} NACKED version {s.get('rejected_version', '')}: {s.get('error', '')}",
                    file=out,
                )
    return 0


# -- proxy-config -----------------------------------------------------------------------------------
def _address(addr: dict[str, Any]) -> tuple[str, str]:
    sock = addr.get("socket_address") or {}
    return str(sock.get("address", "")), str(sock.get("port_value", ""))


def _cluster_row(name: str, c: dict[str, Any]) -> tuple[str, ...]:
    parts = name.split("|")
    direction = parts[0] if parts[0] in ("outbound", "inbound") else "-"
    port = parts[1] if len(parts) > 2 else "-"
    subset = parts[2] if len(parts) == 4 else "-"
    service = parts[-1] if direction == "outbound" and len(parts) > 2 else "-"
    kind = c.get("type") or ("EDS" if "eds_cluster_config" in c else "STATIC")
    return name, service, port, subset, direction, str(kind)


def _listener_row(name: str, lst: dict[str, Any]) -> tuple[str, ...]:
    host, port = _address(lst.get("address") or {})
    filters = sorted({f.get("name", "") for fc in lst.get("filter_chains") or [] for f in fc.get("filters") or []})
    return name, host or "-", port or "-", ",".join(filters) or "-"


def _route_rows(name: str, rc: dict[str, Any]) -> list[tuple[str, ...]]:
    vhosts = rc.get("virtual_hosts") or []
    if not vhosts:
        return [(name, "-", "-", "0")]
    return [
        (name, v.get("name", ""), ",".join(v.get("domains") or []), str(len(v.get("routes") or []))) for v in vhosts
    ]


def _endpoint_rows(name: str, cla: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for group in cla.get("endpoints") or []:
        for lb in group.get("lb_endpoints") or []:
            host, port = _address((lb.get("endpoint") or {}).get("address") or {})
            rows.append((f"{host}:{port}", str(lb.get("health_status", "HEALTHY")), name))
    return rows or [("-", "-", name)]


def proxy_config(client: PilotClient, kind: str, proxy: str, output: str | None, out: TextIO) -> int:
    doc = _get(client, f"/debug/proxy_config/{quote(proxy, safe='')}/{kind}")
    if output:
        _dump(doc, output, out)
        return 0
    res = [(r["name"], r["resource"]) for r in doc["resources"]]
    if doc["state"] == "NOT SENT":
        print(f"Pilot has sent proxy {proxy} no {kind} configuration.", file=out)
        return 0
    if kind == "cluster":
        table([("NAME", "SERVICE", "PORT", "SUBSET", "DIRECTION", "TYPE")] + [_cluster_row(n, r) for n, r in res], out)
    elif kind == "listener":
        table([("NAME", "ADDRESS", "PORT", "FILTERS")] + [_listener_row(n, r) for n, r in res], out)
    elif kind == "route":
        table([("NAME", "VIRTUAL HOST", "DOMAINS", "ROUTES")] + [row for n, r in res for row in _route_rows(n, r)], out)
    else:
        table([("ENDPOINT", "STATUS", "CLUSTER")] + [row for n, r in res for row in _endpoint_rows(n, r)], out)
    note = "" if doc.get("exact", True) else " (a newer snapshot is not sent yet; shown instead)"
    print(f"\n{len(res)} {kind}(s), version {doc.get('version', '')}, {doc['state']}{note}", file=out)
    return 0


# -- describe service -------------------------------------------------------------------------------
def _ms(v: float | None) -> str:
    return "-" if v is None else f"<={v:g}ms"


def describe_service(client: PilotClient, name: str, output: str | None, out: TextIO) -> int:
    doc = _get(client, f"/debug/services/{quote(name, safe='')}")
    if output:
        _dump(doc, output, out)
        return 0
    svc = doc["service"]
    print(f"Service:   {svc['name']}", file=out)
    print(f"Protocol:  {svc['protocol']}", file=out)
    if svc.get("ports"):
        print(f"Ports:     {', '.join(str(p) for p in svc['ports'])}", file=out)
    print(f"\nInstances ({len(doc['instances'])}):", file=out)
    if doc["instances"]:
        table(
            [("  ID", "ADDRESS", "REGISTRY", "PROTOCOL", "HEALTH", "LABELS")]
            + [
                (
                    "  " + i["id"],
                    f"{i['address']}:{i['port']}",
                    i["registry"],
                    svc["protocol"],
                    i["health"],
                    ",".join(f"{k}={v}" for k, v in sorted((i.get("labels") or {}).items())) or "-",
                )
                for i in doc["instances"]
            ],
            out,
        )
    print(f"\nPolicies ({len(doc['policies'])}):", file=out)
    if doc["policies"]:
        table(
            [("  KIND", "NAMESPACE", "NAME")]
            + [("  " + p["kind"], p["namespace"], p["name"]) for p in doc["policies"]],
            out,
        )
    rejected = doc.get("rejected") or []
    if rejected:
        print(f"\nRejected policy ({len(rejected)}), naming this service:", file=out)
        for r in rejected:
            print(f"  {r['ref']} at {r['source']}: {'; '.join(r['errors'])}", file=out)
    print(f"\nCallers ({len(doc['callers'])}):", file=out)
    if doc["callers"]:
        table(
            [("  SOURCE", "REQ/S", "ERROR RATE", "P99", "REQUESTS")]
            + [
                (
                    "  " + c["source"],
                    f"{c['rps']:.2f}",
                    f"{100 * c['error_rate']:.1f}%",
                    _ms(c["p99_ms"]),
                    c["requests_total"],
                )
                for c in doc["callers"]
            ],
            out,
        )
    return 0


__all__ = ["CONFIG_KINDS", "describe_service", "proxy_config", "proxy_status", "table"]
