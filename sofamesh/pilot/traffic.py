"""The live call graph of the dashboard: who calls whom, at what request rate, error rate and p99.

Pilot scrapes; sidecars report nothing. A sofamesh sidecar with an admin server names it in its xDS
node metadata (``sofamesh.admin``). Every ``interval_s`` one round takes at most ``max_proxies`` of
the connected proxies that did (in turn, when more are connected), GETs their ``/stats?usedonly``
concurrently with ``timeout_s`` each, and keeps each proxy's samples of the last ``window_s``. An
edge is (the proxy's xDS cluster, the service of an ``outbound|...`` cluster); its rates are the
differences of the cumulative counters between the oldest and the newest sample over the time
between them (``rate()`` over the window, as a Prometheus query would have it):

- requests: ``upstream_rq_total``; errors: ``upstream_rq_5xx`` (each finished request counts its
  final status there: upstream 5xx, and the proxy's own 503 / 504 for resets, overflows, timeouts);
- p99: from the difference of the clusters' ``upstream_rq_time`` histograms (Envoy's: request
  start to the end of the upstream's response, every protocol); a sidecar without it (an older
  version) has the per-RPC latency histograms of that service on its outbound listeners used instead.

An Envoy (its xDS node's ``user_agent_name`` is ``envoy``) whose bootstrap sets the same node
metadata is scraped at Envoy's ``/stats/prometheus?usedonly&filter=upstream_rq_``: the same counters
under Envoy's tag-extracted names (``envoy_cluster_upstream_rq_total``, ``envoy_cluster_upstream_rq_xx``
with ``envoy_response_code_class="5"``, both labelled ``envoy_cluster_name``), and the cumulative
buckets of its ``upstream_rq_time`` histogram (Envoy's bounds; each bucket counts in the first of
``LATENCY_BUCKETS_MS`` at or above its bound, so the p99 stays an upper bound).

The rounds run as one task on Pilot's loop. They await sockets, hold the loop only to parse one
proxy's ``/stats`` at a time, and the ADS server never waits for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from sofamesh.core.net.loop import cancel
from sofamesh.core.stats import LATENCY_BUCKETS_MS
from sofamesh.pilot.xds.status import admin_address

if TYPE_CHECKING:
    from sofamesh.pilot.xds.server import AdsServer

log = logging.getLogger("sofamesh.pilot.traffic")
# A /stats?usedonly body larger than this is refused, not parsed: ~800 clusters in use, ~40 ms of
# Pilot's loop (benchmarks/stats_scrape.py; docs/dashboard.md).
MAX_STATS_BYTES = 512 * 1024


@dataclass(slots=True)
class Sample:
    at: float
    calls: dict[str, tuple[int, int]]  # service -> (requests, errors), cumulative
    latency: dict[str, list[int]]  # service -> histogram buckets, cumulative


ENVOY_STATS = "/stats/prometheus?usedonly&filter=upstream_rq_"
_PROM_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_PROM_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(slots=True)
class ProxyTraffic:
    proxy: str
    source: str
    admin: str
    kind: str = "sofamesh"  # or "envoy": which admin API it answers
    samples: list[Sample] = field(default_factory=list)
    last_error: str = ""
    last_scrape: float = 0.0
    scrape_ms: float = 0.0


def outbound_service(cluster: str) -> str | None:
    """``outbound|8080|hello`` / ``outbound|8080|v1|hello`` -> ``hello``; ``None`` for other clusters."""
    parts = cluster.split("|")
    if parts[0] != "outbound" or len(parts) < 3:
        return None
    return parts[-1]


def sample_of(stats: dict[str, Any], at: float) -> Sample:
    """The counters an edge needs, out of one proxy's ``/stats``."""
    calls: dict[str, tuple[int, int]] = {}
    latency: dict[str, list[int]] = {}
    timed = False  # a sidecar that has upstream_rq_time at all
    for name, c in (stats.get("clusters") or {}).items():
        svc = outbound_service(name)
        if svc is None or not isinstance(c, dict):
            continue
        rq, err = calls.get(svc, (0, 0))
        calls[svc] = (
            rq + int(c.get("upstream_rq_total", 0)),
            err + int(c.get("upstream_rq_5xx", 0)),
        )
        rq_time = c.get("upstream_rq_time")
        if isinstance(rq_time, dict):
            timed = True
            _add_buckets(latency, svc, rq_time.get("buckets") or [])
    if timed:
        return Sample(at, calls, latency)
    for key, r in (stats.get("rpc") or {}).items():
        parts = key.rsplit("|", 3)  # listener|protocol|service|method; listener names hold "|" too
        if len(parts) != 4 or not parts[0].startswith("outbound") or parts[2] not in calls or not isinstance(r, dict):
            continue
        _add_buckets(latency, parts[2], (r.get("latency") or {}).get("buckets") or [])
    return Sample(at, calls, latency)


def _add_buckets(latency: dict[str, list[int]], svc: str, buckets: list[Any]) -> None:
    have = latency.setdefault(svc, [0] * (len(LATENCY_BUCKETS_MS) + 1))
    for i, n in enumerate(buckets[: len(have)]):
        have[i] += int(n)


def envoy_sample_of(text: str, at: float) -> Sample:
    """The counters an edge needs, out of Envoy's ``/stats/prometheus`` text."""
    totals: dict[str, int] = {}
    errors: dict[str, int] = {}
    cumulative: dict[str, list[tuple[float, int]]] = {}
    for line in text.splitlines():
        m = _PROM_LINE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), dict(_PROM_LABEL.findall(m.group(2) or "")), m.group(3)
        if name not in (
            "envoy_cluster_upstream_rq_total",
            "envoy_cluster_upstream_rq_xx",
            "envoy_cluster_upstream_rq_time_bucket",
        ):
            continue
        cluster = labels.get("envoy_cluster_name", "")
        if outbound_service(cluster) is None:
            continue
        n = int(float(value))
        if name == "envoy_cluster_upstream_rq_total":
            totals[cluster] = n
        elif name == "envoy_cluster_upstream_rq_xx":
            if labels.get("envoy_response_code_class") == "5":
                errors[cluster] = n
        else:
            le = labels.get("le", "+Inf")
            cumulative.setdefault(cluster, []).append((float("inf") if le == "+Inf" else float(le), n))
    calls: dict[str, tuple[int, int]] = {}
    for cluster, rq in totals.items():
        svc = outbound_service(cluster)
        assert svc is not None
        sum_rq, sum_err = calls.get(svc, (0, 0))
        calls[svc] = (sum_rq + rq, sum_err + errors.get(cluster, 0))
    latency: dict[str, list[int]] = {}
    for cluster, pairs in cumulative.items():
        svc = outbound_service(cluster)
        assert svc is not None
        buckets = latency.setdefault(svc, [0] * (len(LATENCY_BUCKETS_MS) + 1))
        before = 0
        for bound, n in sorted(pairs):
            buckets[bisect_left(LATENCY_BUCKETS_MS, bound)] += max(0, n - before)
            before = max(before, n)
    return Sample(at, calls, latency)


def p99_ms(buckets: list[int]) -> float | None:
    """Upper bound of the bucket holding the 99th percentile (as the sidecar's own ``p99_ms``)."""
    total = sum(buckets)
    if total <= 0:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if n and seen >= 0.99 * total:
            return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else None
    return None


class TrafficGraph:
    """Scrapes connected sidecars in bounded rounds; :meth:`describe` is the graph."""

    def __init__(
        self,
        ads: AdsServer,
        interval_s: float = 5.0,
        timeout_s: float = 1.0,
        max_proxies: int = 100,
        window_s: float = 30.0,
    ) -> None:
        self.ads = ads
        self.interval_s = interval_s
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.max_proxies = max_proxies
        self.proxies: dict[str, ProxyTraffic] = {}  # by admin address
        self.rounds = 0
        self._offset = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.scrape_round()
            except Exception:  # a bug here must not end the graph: log it, try again next round
                log.exception("traffic scrape round failed")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _targets(self) -> list[tuple[str, str, str, str]]:
        """(admin address, proxy id, source name, kind) of at most ``max_proxies`` proxies, in turn."""
        seen: dict[str, tuple[str, str, str, str]] = {}
        for st in list(self.ads.streams.values()):
            admin = admin_address(st)
            if admin is not None and st.node is not None:
                kind = "envoy" if st.node.user_agent.split("/")[0] == "envoy" else "sofamesh"
                seen[admin] = (admin, st.node.id, st.node.cluster or st.node.id, kind)
        targets = sorted(seen.values())
        for gone in set(self.proxies) - set(seen):
            del self.proxies[gone]
        if len(targets) <= self.max_proxies:
            return targets
        start = self._offset % len(targets)
        self._offset = start + self.max_proxies
        return (targets[start:] + targets[:start])[: self.max_proxies]

    async def scrape_round(self) -> None:
        """One round: every target's ``/stats``, concurrently, each within ``timeout_s``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        targets = self._targets()
        await asyncio.gather(*(self._scrape(*t) for t in targets))
        self.rounds += 1

    async def _scrape(self, admin: str, proxy: str, source: str, kind: str = "sofamesh") -> None:
        assert self._session is not None
        pt = self.proxies.get(admin)
        if pt is None or pt.proxy != proxy:
            pt = self.proxies[admin] = ProxyTraffic(proxy, source, admin, kind)
        t0 = time.monotonic()
        path = ENVOY_STATS if kind == "envoy" else "/stats?usedonly"
        try:
            async with self._session.get(f"http://{admin}{path}") as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                body = await resp.content.read(MAX_STATS_BYTES + 1)
            if len(body) > MAX_STATS_BYTES:
                raise ValueError(f"{path} larger than {MAX_STATS_BYTES} bytes")
            if kind == "envoy":
                sample = envoy_sample_of(body.decode("utf-8", "replace"), time.monotonic())
            else:
                sample = sample_of(json.loads(body), time.monotonic())
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            pt.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            pt.last_scrape = time.time()
            return
        pt.samples.append(sample)
        while len(pt.samples) > 2 and sample.at - pt.samples[1].at >= self.window_s:
            del pt.samples[0]  # the oldest kept is the last one at least window_s old
        pt.last_error = ""
        pt.last_scrape = time.time()
        pt.scrape_ms = round((time.monotonic() - t0) * 1000, 2)

    def edges(self) -> list[dict[str, Any]]:
        """One edge per (source, destination) with calls since the proxy was first scraped."""
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for pt in self.proxies.values():
            if not pt.samples:
                continue
            new = pt.samples[-1]
            old = pt.samples[0] if len(pt.samples) > 1 else None
            dt = new.at - old.at if old is not None else 0.0
            for svc, (rq, err) in new.calls.items():
                if rq == 0:
                    continue
                e = merged.setdefault(
                    (pt.source, svc),
                    {
                        "source": pt.source,
                        "destination": svc,
                        "requests_total": 0,
                        "errors_total": 0,
                        "requests": 0,
                        "errors": 0,
                        "seconds": 0.0,
                        "buckets": [0] * (len(LATENCY_BUCKETS_MS) + 1),
                        "proxies": [],
                    },
                )
                e["requests_total"] += rq
                e["errors_total"] += err
                e["proxies"].append(pt.proxy)
                if old is None or dt <= 0:
                    continue
                orq, oerr = old.calls.get(svc, (0, 0))
                e["requests"] += max(0, rq - orq)
                e["errors"] += max(0, err - oerr)
                e["seconds"] = max(e["seconds"], dt)
                ob = old.latency.get(svc)
                for i, n in enumerate(new.latency.get(svc, [])):
                    e["buckets"][i] += max(0, n - (ob[i] if ob is not None else 0))
        out = []
        for e in merged.values():
            secs = e.pop("seconds")
            buckets = e.pop("buckets")
            e["rps"] = round(e["requests"] / secs, 3) if secs else 0.0
            e["error_rate"] = round(e["errors"] / e["requests"], 4) if e["requests"] else 0.0
            e["p99_ms"] = p99_ms(buckets)
            e["window_s"] = round(secs, 3)
            out.append(e)
        out.sort(key=lambda e: (e["source"], e["destination"]))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "max_proxies": self.max_proxies,
            "window_s": self.window_s,
            "rounds": self.rounds,
            "edges": self.edges(),
            "proxies": [
                {
                    "proxy": p.proxy,
                    "source": p.source,
                    "admin": p.admin,
                    "kind": p.kind,
                    "samples": len(p.samples),
                    "last_scrape": p.last_scrape or None,
                    "scrape_ms": p.scrape_ms,
                    "error": p.last_error or None,
                }
                for p in sorted(self.proxies.values(), key=lambda p: (p.proxy, p.admin))
            ],
        }


__all__ = ["ENVOY_STATS", "TrafficGraph", "envoy_sample_of", "outbound_service", "p99_ms", "sample_of"]
