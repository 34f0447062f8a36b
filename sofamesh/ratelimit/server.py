"""`sofamesh ratelimit-server`: Envoy's rate limit service v3 over gRPC, counting in Redis.

Config is envoyproxy/ratelimit's YAML shape (one document per domain, or ``domains: [...]``)::

    domain: shop
    descriptors:
      - key: service
        value: orders              # optional: without it, any value matches (and is counted apart)
        rate_limit: {unit: second, requests_per_unit: 10}
        shadow_mode: false         # count and report, never say OVER_LIMIT
        descriptors: [...]         # nested: matched against the descriptor's next entry

A request descriptor ``[(k1, v1), (k2, v2)]`` walks the tree entry by entry (an exact value match
beats a key-only node); the limit of the node reached by the last entry applies. Counting is a
fixed window, as envoyproxy/ratelimit does: ``INCRBY <domain>_<k1>_<v1>..._<window start>`` and
``EXPIRE`` in one Redis pipeline per request. The overall code is OVER_LIMIT when any descriptor is.
Keys known to be over the limit are cached locally until their window ends (no Redis round trip).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import yaml

from sofamesh.core.config.yaml_text import safe_load_all
from sofamesh.plugins.filters.quota import rls_proto as pb

log = logging.getLogger("sofamesh.ratelimit")


@dataclass
class Node:
    key: str
    value: str | None
    unit: str | None = None
    requests_per_unit: int = 0
    unlimited: bool = False
    shadow_mode: bool = False
    children: list[Node] = field(default_factory=list)
    name: str = ""


def _nodes(items: list[dict[str, Any]], where: str, parent: str) -> list[Node]:
    out = []
    for i, d in enumerate(items or []):
        p = f"{where}[{i}]"
        if "key" not in d:
            raise ValueError(f"{p}: a descriptor needs a key")
        rl = d.get("rate_limit") or {}
        unit = rl.get("unit")
        if unit is not None and str(unit).lower() not in pb.UNIT_SECONDS:
            raise ValueError(f"{p}.rate_limit.unit: unknown unit {unit!r} (known: {', '.join(pb.UNIT_SECONDS)})")
        name = f"{parent}.{d['key']}" + (f"_{d['value']}" if d.get("value") is not None else "")
        out.append(Node(str(d["key"]), None if d.get("value") is None else str(d["value"]),
                        str(unit).lower() if unit else None, int(rl.get("requests_per_unit", 0)),
                        bool(rl.get("unlimited", False)), bool(d.get("shadow_mode", False)),
                        _nodes(d.get("descriptors") or [], f"{p}.descriptors", name), name))
    return out


def load_config(text: str) -> dict[str, list[Node]]:
    """Domains -> descriptor trees. Raises ValueError naming the bad place."""
    docs = [d for d in safe_load_all(text) if d]
    domains: dict[str, list[Node]] = {}
    for doc in docs:
        for i, dom in enumerate(doc.get("domains", [doc])):
            if not dom.get("domain"):
                raise ValueError(f"domains[{i}]: a domain needs a name")
            domains[dom["domain"]] = _nodes(dom.get("descriptors") or [], f"{dom['domain']}.descriptors",
                                            dom["domain"])
    return domains


def find_limit(tree: list[Node], entries: list[tuple[str, str]]) -> Node | None:
    level = tree
    node: Node | None = None
    for k, v in entries:
        exact = next((n for n in level if n.key == k and n.value == v), None)
        node = exact or next((n for n in level if n.key == k and n.value is None), None)
        if node is None:
            return None
        level = node.children
    return node if node is not None and (node.unit or node.unlimited) else None


class RateLimitService:
    def __init__(self, domains: dict[str, list[Node]], redis_client: Any, clock: Any = time.time) -> None:
        self.domains = domains
        self.redis = redis_client
        self.clock = clock
        self.stats: dict[str, int] = {}
        self._over: dict[str, float] = {}  # cache key -> window end
        self._lock = threading.Lock()

    def _count(self, name: str, what: str, n: int = 1) -> None:
        k = f"ratelimit.service.rate_limit.{name}.{what}"
        with self._lock:
            self.stats[k] = self.stats.get(k, 0) + n

    def should_rate_limit(self, req: Any, context: Any = None) -> Any:
        tree = self.domains.get(req.domain)
        resp = pb.RateLimitResponse(overall_code=pb.OK)
        now = self.clock()
        todo: list[tuple[int, Node, str, int, int]] = []
        for i, d in enumerate(req.descriptors):
            st = resp.statuses.add(code=pb.OK)
            hits = (d.hits_addend.value if d.HasField("hits_addend") else 0) or req.hits_addend or 1
            entries = [(e.key, e.value) for e in d.entries]
            node = find_limit(tree, entries) if tree else None
            if node is None or node.unlimited:
                continue
            per = pb.UNIT_SECONDS[node.unit or "second"]
            window = int(now) - int(now) % per
            key = "_".join([req.domain, *(f"{k}_{v}" for k, v in entries), str(window)])
            st.current_limit.requests_per_unit = node.requests_per_unit
            st.current_limit.unit = pb.UNIT_NUMBER[node.unit or "second"]
            st.current_limit.name = node.name
            st.duration_until_reset.seconds = window + per - int(now)
            todo.append((i, node, key, hits, window + per))
        fresh = [t for t in todo if self._over.get(t[2], 0) <= now]
        counts: dict[str, int] = {}
        if fresh:
            pipe = self.redis.pipeline(transaction=False)
            for _, _, key, hits, end in fresh:
                pipe.incrby(key, hits)
                pipe.expireat(key, end)
            res = pipe.execute()
            counts = {t[2]: int(res[2 * j]) for j, t in enumerate(fresh)}
        for i, node, key, hits, end in todo:
            st = resp.statuses[i]
            self._count(node.name, "total_hits", hits)
            count = counts.get(key)
            over = count is None or count > node.requests_per_unit
            if count is not None:
                st.limit_remaining = max(0, node.requests_per_unit - count)
                if count >= node.requests_per_unit * 0.8:
                    self._count(node.name, "near_limit", hits)
            if over:
                self._count(node.name, "over_limit", hits)
                if node.shadow_mode:
                    self._count(node.name, "shadow_mode", hits)
                    continue
                self._over[key] = end
                st.code = pb.OVER_LIMIT
                resp.overall_code = pb.OVER_LIMIT
        if len(self._over) > 10_000:
            self._over = {k: e for k, e in self._over.items() if e > now}
        return resp


def serve(service: RateLimitService, listen: str, workers: int = 8) -> Any:
    import grpc

    handler = grpc.method_handlers_generic_handler(pb.SERVICE, {
        "ShouldRateLimit": grpc.unary_unary_rpc_method_handler(
            service.should_rate_limit, request_deserializer=pb.RateLimitRequest.FromString,
            response_serializer=pb.RateLimitResponse.SerializeToString)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server


def run(args: argparse.Namespace) -> int:
    import redis

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        with open(args.config, encoding="utf-8") as f:
            domains = load_config(f.read())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    host, _, port = args.redis.rpartition(":")
    client = redis.Redis(host=host, port=int(port), socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"error: redis at {args.redis}: {exc}", file=sys.stderr)
        return 2
    server = serve(RateLimitService(domains, client), args.listen)
    log.info("ratelimit-server on %s (domains: %s; redis %s)", args.listen, ", ".join(domains), args.redis)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(2).wait(3)
    return 0


__all__ = ["RateLimitService", "find_limit", "load_config", "run", "serve"]
