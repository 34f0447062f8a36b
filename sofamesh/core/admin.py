"""Admin server: /ready, /stats (?usedonly), /stats/prometheus, /config_dump, /clusters, /plugins, /certs, /hot_upgrade,
POST /reload.

Runs on its own port in the data plane's loop. Reads the plain-integer counters; never locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from sofamesh import __version__
from sofamesh.core.config.model import parse_address
from sofamesh.core.pressure import PROCESS

if TYPE_CHECKING:
    from sofamesh.core.proxy.filter_chain import Filter
    from sofamesh.core.proxy.runtime import ListenerRuntime
    from sofamesh.core.server_view import ServerView

log = logging.getLogger("sofamesh.admin")

Handler = Callable[[str, dict[str, list[str]], bytes], Awaitable[tuple[int, str, bytes]]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            500: "Internal Server Error",
            503: "Service Unavailable"}


class HttpMini:
    """A small HTTP/1.1 server for control endpoints (admin, app APIs). Not on the data path."""

    def __init__(self, address: str, handler: Handler) -> None:
        self.address = address
        self.handler = handler
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on the address, or serve ``sock`` (already listening there: a hot upgrade's)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock)
            return
        host, port = parse_address(self.address)
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    @property
    def socket(self) -> socket.socket | None:
        """The listening socket (what a hot upgrade hands over)."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    writer.write(_response(400, "text/plain", b"malformed request line\n", False))
                    return
                method, target, version = parts
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = headers.get("content-length", "0") or "0"
                if not length.isdigit():
                    writer.write(_response(400, "text/plain", b"malformed content-length\n", False))
                    return
                n = int(length)
                body = await reader.readexactly(n) if n else b""
                url = urlsplit(target)
                query = parse_qs(url.query, keep_blank_values=True)  # Envoy's bare flags: /stats?usedonly
                query["__method__"] = [method]
                try:
                    status, ctype, payload = await self.handler(url.path, query, body)
                except Exception as exc:
                    log.exception("admin handler failed for %s %s", method, target)
                    status, ctype, payload = 500, "text/plain", f"internal error: {exc}\n".encode()
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                if writer.is_closing():  # the peer reset while the handler ran (uvloop raises on a write)
                    return
                writer.write(_response(status, ctype, payload, keep))
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # a peer that went away, or the server stopping: nothing to answer
        finally:
            writer.close()


def _response(status: int, ctype: str, payload: bytes, keep: bool) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(payload)}\r\nconnection: {'keep-alive' if keep else 'close'}\r\n\r\n")
    return head.encode() + payload


def _json(obj: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def stats_snapshot(server: ServerView) -> dict[str, Any]:
    listeners = {}
    rpc = {}
    filters: dict[str, dict[str, int]] = {}
    for name, h in server.listeners.items():
        listeners[name] = h.rt.stats.snapshot()
        for where, f in _filters_of(h.rt):
            counters = f.stats()
            if counters:
                filters[f"{name}|{where}"] = counters
        for (proto, svc, method), st in h.rt.rpc_stats.items():
            rpc[f"{name}|{proto}|{svc}|{method}"] = st.snapshot()
    return {
        "server": {"version": __version__, "worker": server.worker, "ready": server.ready,
                   "config_version": server.config_version, "uptime_s": round(time.monotonic() - _START, 3)},
        "listeners": listeners,
        "clusters": {name: c.stats.snapshot() for name, c in server.clusters.items()},
        "rpc": rpc,
        "filters": filters,
        "overload": PROCESS.snapshot(),
    }


def used_only(snap: dict[str, Any]) -> dict[str, Any]:
    """``/stats?usedonly`` (Envoy's flag): zero counters left out, and the listeners, clusters, RPC
    keys and filters with nothing left. A sidecar of a large mesh holds a cluster per service and
    calls few of them: this is what a scraper (Pilot's call graph) wants, a fraction of the size."""

    def nonzero(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v and not isinstance(v, dict)}

    listeners = {}
    for name, st in snap["listeners"].items():
        kept = nonzero(st)
        if st["latency"]["count"]:
            kept["latency"] = st["latency"]
        if kept:
            listeners[name] = kept
    clusters = {}
    for name, st in snap["clusters"].items():
        kept = nonzero(st)
        rq_time = st.get("upstream_rq_time")
        if rq_time and rq_time["count"]:
            kept["upstream_rq_time"] = rq_time
        if kept:
            clusters[name] = kept
    return {"server": snap["server"], "listeners": listeners, "clusters": clusters,
            "rpc": {k: st for k, st in snap["rpc"].items() if st["requests"] or st["timeouts"]},
            "filters": {k: c for k, st in snap["filters"].items() if (c := nonzero(st))},
            "overload": {k: v for k, v in snap.get("overload", {}).items() if v}}


def _filters_of(rt: ListenerRuntime) -> list[tuple[str, Filter]]:
    """Each filter serving a listener, named ``<type>`` or ``<route>/<type>``, with an index on repeats."""
    out: list[tuple[str, Filter]] = []
    seen: dict[str, int] = {}

    def add(where: str, f: Filter) -> None:
        n = seen.get(where, 0)
        seen[where] = n + 1
        out.append((f"{where}#{n}" if n else where, f))

    for f in rt.filters.filters:
        add(f.name or type(f).__name__, f)
    for r in rt.router.routes:
        for f in r.filters.filters:
            add(f"{r.name}/{f.name or type(f).__name__}", f)
    return out


def filter_expositions(server: ServerView) -> str:
    """The distinct Prometheus texts of every serving filter (``Filter.exposition``)."""
    texts: dict[str, None] = {}
    for h in server.listeners.values():
        for _, f in _filters_of(h.rt):
            t = f.exposition()
            if t:
                texts[t] = None
    return "".join(t if t.endswith("\n") else t + "\n" for t in texts)


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# names read as levels, not totals: active counts, the overload manager's pressures, sizes and limits
_GAUGE_SUFFIXES = ("_active", "_pressure", "_bytes", "max_active_downstream_connections")


def prometheus_text(snapshots: list[dict[str, Any]]) -> str:
    """Prometheus text exposition of one or more workers' ``stats_snapshot``."""
    series: dict[str, list[str]] = {}

    def add(name: str, labels: dict[str, object], value: object) -> None:
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        series.setdefault(name, []).append(f"{name}{{{lab}}} {value}")

    for snap in snapshots:
        w = snap["server"].get("worker")
        base: dict[str, object] = {} if w is None else {"worker": w}
        for lname, st in snap["listeners"].items():
            lab = {**base, "listener": lname}
            for k, v in st.items():
                if k == "latency":
                    continue
                if k.startswith("downstream_rq_") and k[-2:] == "xx":
                    add("sofamesh_downstream_rq_xx", {**lab, "response_code_class": k[-3]}, v)
                else:
                    add(f"sofamesh_{k}", lab, v)
            _hist(add, "sofamesh_downstream_rq_time_ms", lab, st["latency"])
        for cname, st in snap["clusters"].items():
            lab = {**base, "cluster": cname}
            for k, v in st.items():
                if k == "upstream_rq_time":
                    _hist(add, "sofamesh_upstream_rq_time_ms", lab, v)
                elif k.startswith("upstream_rq_") and k[-2:] == "xx":
                    add("sofamesh_upstream_rq_xx", {**lab, "response_code_class": k[-3]}, v)
                else:
                    add(f"sofamesh_{k}", lab, v)
        for key, st in snap["rpc"].items():
            lname, proto, svc, method = key.split("|", 3)
            lab = {**base, "listener": lname, "protocol": proto, "service": svc, "method": method}
            add("sofamesh_rpc_requests_total", lab, st["requests"])
            add("sofamesh_rpc_timeouts_total", lab, st["timeouts"])
            for status, n in st["statuses"].items():
                add("sofamesh_rpc_responses_total", {**lab, "status": status}, n)
            _hist(add, "sofamesh_rpc_duration_ms", lab, st["latency"])
        for k, v in snap.get("overload", {}).items():
            add("sofamesh_overload_" + k.replace(".", "_"), base, v)
        for key, st in snap.get("filters", {}).items():
            lname, where = key.split("|", 1)
            for k, v in st.items():
                add(f"sofamesh_filter_{k}", {**base, "listener": lname, "filter": where}, v)
    out = []
    for name in sorted(series):
        kind = "histogram" if name.endswith("_ms_bucket") or name.endswith(("_ms_sum", "_ms_count")) else (
            "gauge" if name.endswith(_GAUGE_SUFFIXES) else "counter")
        if kind != "histogram":
            out.append(f"# TYPE {name} {kind}")
        out.extend(series[name])
    return "\n".join(out) + "\n"


def _hist(add: Callable[[str, dict[str, object], object], None], name: str, lab: dict[str, object],
          h: dict[str, Any]) -> None:
    from sofamesh.core.stats import LATENCY_BUCKETS_MS

    acc = 0
    for bound, n in zip((*LATENCY_BUCKETS_MS, "+Inf"), h["buckets"], strict=True):
        acc += n
        add(f"{name}_bucket", {**lab, "le": bound}, acc)
    if "sum_ms" in h:  # the cluster's upstream_rq_time keeps bucket counts only
        add(f"{name}_sum", lab, h["sum_ms"])
    add(f"{name}_count", lab, h["count"])


def certs_snapshot() -> dict[str, Any]:
    """The process's TLS secrets as Envoy's ``/certs`` shows them: per certificate its SANs,
    serial and validity (never the key)."""
    from cryptography import x509

    from sofamesh.core.net.secrets import PROCESS_SECRETS, CertificateSecret

    out: dict[str, Any] = {}
    for name in PROCESS_SECRETS.names():
        secret = PROCESS_SECRETS.get(name)
        pem = secret.chain_pem if isinstance(secret, CertificateSecret) else getattr(secret, "roots_pem", b"")
        certs = []
        for c in x509.load_pem_x509_certificates(pem):
            try:
                sans = [str(v.value) for v in c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
            except x509.ExtensionNotFound:
                sans = []
            certs.append({"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
                          "serial": f"{c.serial_number:x}", "sans": sans,
                          "not_before": c.not_valid_before_utc.isoformat(),
                          "not_after": c.not_valid_after_utc.isoformat()})
        out[name] = certs
    return out


_START = time.monotonic()


class AdminServer:
    def __init__(self, server: ServerView, address: str) -> None:
        self.server = server
        self.http = HttpMini(address, self.handle)

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self, sock: socket.socket | None = None) -> None:
        await self.http.start(sock)

    async def stop(self) -> None:
        await self.http.stop()

    async def handle(self, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        s = self.server
        method = query.get("__method__", ["GET"])[0]
        if path == "/ready":
            return (200, "text/plain", b"LIVE\n") if s.ready else (503, "text/plain", b"NOT READY\n")
        if path == "/stats":
            return _json(used_only(stats_snapshot(s)) if "usedonly" in query else stats_snapshot(s))
        if path == "/stats/prometheus":
            text = prometheus_text([stats_snapshot(s)]) + filter_expositions(s)
            return 200, "text/plain; version=0.0.4", text.encode()
        if path == "/config_dump":
            dump: dict[str, Any] = {"version": s.config_version, "config": s.config.model_dump(mode="json")}
            if s.xds is not None:
                dump["xds"] = s.xds.describe()  # applied versions per type, the last NACK
            return _json(dump)
        if path == "/clusters":
            return _json({name: c.snapshot() for name, c in s.clusters.items()})
        if path == "/plugins":
            return _json(s.plugin_rows())
        if path == "/certs":
            return _json(certs_snapshot())
        if path == "/hot_upgrade":
            return self._hot_upgrade(method)
        if path == "/reload":
            if method != "POST":
                return 405, "text/plain", b"use POST\n"
            if s.xds is not None:
                return 400, "text/plain", b"refused: this proxy's config comes from xDS (see /config_dump)\n"
            return await self._reload(body)
        return 404, "text/plain", (f"unknown admin path {path!r}; try /ready /stats /stats/prometheus "
                                   "/config_dump /clusters /plugins /certs /hot_upgrade\n").encode()

    def _hot_upgrade(self, method: str) -> tuple[int, str, bytes]:
        """GET: this process's upgrade phase and counts. POST: start a new process that takes over."""
        from sofamesh.core.errors import MeshError

        up = self.server.hot_upgrade
        if up is None:
            if method == "POST":
                return 400, "text/plain", b"refused: no upgrade socket (--upgrade-socket / upgrade_socket:)\n"
            return _json({"phase": "off", "pid": os.getpid()})
        if method == "POST":
            try:
                pid = up.spawn()
            except (MeshError, OSError) as exc:
                return 409, "text/plain", f"refused: {exc}\n".encode()
            return _json({"started": pid, **up.describe()})
        return _json(up.describe())

    async def _reload(self, body: bytes) -> tuple[int, str, bytes]:
        """POST /reload: the YAML in the body, or (empty body) the config file re-read; changed
        third-party plugin packages are re-imported either way (see ``Server.reload``)."""
        from sofamesh.core.errors import ConfigErrors, MeshError

        s = self.server
        try:
            version, packages = s.reload(body.decode())
        except ConfigErrors as exc:
            return 400, "text/plain", ("refused, the old config keeps serving:\n" + str(exc) + "\n").encode()
        except MeshError as exc:
            return 400, "text/plain", f"refused, the old config keeps serving: {exc}\n".encode()
        return _json({"version": version, "reimported": packages})


__all__ = ["AdminServer", "HttpMini", "certs_snapshot", "filter_expositions", "prometheus_text", "stats_snapshot",
           "used_only"]
