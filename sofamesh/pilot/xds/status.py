"""What each connected proxy was sent and what it answered, as ``sofamesh proxy-status`` and
``sofamesh proxy-config`` show it (istioctl's words: SYNCED, STALE, NOT SENT; and NACKED).

Reads the ADS server's streams and the snapshot cache's last snapshots. Changes neither and builds
no snapshot: asking costs the ADS path nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT, LISTENER, ROUTE, short_type

if TYPE_CHECKING:
    from sofamesh.pilot.xds.cache import Entry, TypeSnapshot
    from sofamesh.pilot.xds.server import AdsServer, Stream, TypeState

SYNCED = "SYNCED"
STALE = "STALE"
NOT_SENT = "NOT SENT"
NACKED = "NACKED"
MAIN_TYPES = ("cds", "lds", "eds", "rds")
TYPE_WORDS = {
    "cluster": CLUSTER,
    "listener": LISTENER,
    "route": ROUTE,
    "endpoint": ENDPOINT,
    "cds": CLUSTER,
    "lds": LISTENER,
    "rds": ROUTE,
    "eds": ENDPOINT,
}
ADMIN_METADATA = "sofamesh.admin"  # the sidecar's xDS client sends it (core/xds/client.py ADMIN_METADATA)


def sync_state(ts: TypeState | None, latest: TypeSnapshot | None) -> str:
    """NOT SENT: nothing of the type went out; NACKED: the proxy rejected the last response; SYNCED:
    it ACKed the last response and Pilot holds nothing newer for it; STALE otherwise (a response
    awaits its answer, or a newer snapshot is not sent yet)."""
    if ts is None or not ts.sent_nonce:
        return NOT_SENT
    if ts.status == "NACKED":
        return NACKED
    if ts.status == "ACKED" and (latest is None or latest.version == ts.snapshot_version):
        return SYNCED
    return STALE


def _type_row(ads: AdsServer, st: Stream, url: str) -> dict[str, Any]:
    ts = st.types.get(url)
    latest = ads.cache.latest(url, st.node) if st.node is not None else None
    row: dict[str, Any] = {"state": sync_state(ts, latest)}
    if ts is not None:
        row.update(
            sent_version=ts.sent_version,
            sent_nonce=ts.sent_nonce,
            acked_version=ts.acked_version,
            resources=ts.sent_count,
        )
        if ts.status == "NACKED" and ts.last_nack is not None:
            row["error"] = ts.last_nack.get("error", "")
            row["rejected_version"] = ts.last_nack.get("rejected_version", "")
    return row


def admin_address(st: Stream) -> str | None:
    """Where the proxy's admin server answers: its node metadata, with a wildcard host replaced by
    the address the stream came from."""
    if st.node is None:
        return None
    value = st.node.metadata.get(ADMIN_METADATA)
    if not isinstance(value, str) or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = _peer_host(st.peer)
    return f"{host}:{port}"


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``; ``ipv6:[::1]:5000`` -> ``[::1]``."""
    _, _, rest = peer.partition(":")
    return rest.rpartition(":")[0] or "127.0.0.1"


def proxy_status(ads: AdsServer) -> list[dict[str, Any]]:
    """One row per connected proxy (stream), sorted by proxy id."""
    rows = []
    for st in ads.streams.values():
        if st.node is None:
            continue
        types = {short_type(url): _type_row(ads, st, url) for url in st.types}
        for short, url in (("cds", CLUSTER), ("lds", LISTENER), ("eds", ENDPOINT), ("rds", ROUTE)):
            if short not in types:
                types[short] = _type_row(ads, st, url)
        rows.append(
            {
                "proxy": st.node.id,
                "cluster": st.node.cluster,
                "stream": st.id,
                "mode": st.mode,
                "peer": st.peer,
                "user_agent": st.node.user_agent,
                "connected_at": st.connected_at,
                "admin": admin_address(st),
                "types": dict(sorted(types.items())),
            }
        )
    rows.sort(key=lambda r: (r["proxy"], r["stream"]))
    return rows


def find_stream(ads: AdsServer, proxy: str) -> Stream | None:
    """The newest stream of the proxy with node id ``proxy``."""
    found = [st for st in ads.streams.values() if st.node is not None and st.node.id == proxy]
    return max(found, key=lambda st: st.id) if found else None


def _render(entry: Entry) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json_format.MessageToDict(entry.any, preserving_proto_field_name=True)
    except (TypeError, KeyError, json_format.Error):  # a type URL of a plugin whose message is not imported here
        doc = {"@type": entry.any.type_url, "bytes": len(entry.any.value)}
    return doc


def proxy_config(ads: AdsServer, proxy: str, word: str) -> dict[str, Any] | None:
    """The resources of one type Pilot last sent ``proxy`` (``None``: no such proxy connected).

    ``exact`` is true when Pilot still holds the snapshot that response was cut from (the usual
    case); when a newer one is built and not sent yet, the newer one is shown with ``exact: false``.
    """
    st = find_stream(ads, proxy)
    if st is None or st.node is None:
        return None
    url = TYPE_WORDS[word]
    ts = st.types.get(url)
    latest = ads.cache.latest(url, st.node)
    doc: dict[str, Any] = {
        "proxy": proxy,
        "type": short_type(url),
        "type_url": url,
        "state": sync_state(ts, latest),
        "resources": [],
    }
    if ts is None or not ts.sent_nonce or latest is None:
        return doc
    if ts.known:  # delta: exactly the names the proxy holds
        entries = [latest.entries[n] for n in sorted(ts.known) if n in latest.entries]
    else:
        entries = latest.select(None) if ts.wildcard else []
        entries += [e for e in latest.select(ts.names) if not (ts.wildcard and e.wildcard)]
    doc.update(
        version=ts.sent_version,
        acked_version=ts.acked_version,
        exact=latest.version == ts.snapshot_version,
        resources=[
            {"name": e.name, "version": e.version, "resource": _render(e)}
            for e in sorted(entries, key=lambda e: e.name)
        ],
    )
    return doc


__all__ = [
    "MAIN_TYPES",
    "NACKED",
    "NOT_SENT",
    "STALE",
    "SYNCED",
    "TYPE_WORDS",
    "admin_address",
    "find_stream",
    "proxy_config",
    "proxy_status",
    "sync_state",
]
