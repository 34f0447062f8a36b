"""Latency bucket lookup and the per-(protocol, service, method) counters a listener keeps."""

from __future__ import annotations

import random
from bisect import bisect_left

from sofamesh.core.codec import CodecLimits
from sofamesh.core.proxy.filter_chain import EMPTY_CHAIN
from sofamesh.core.proxy.router import Router
from sofamesh.core.proxy.runtime import ListenerRuntime
from sofamesh.core.stats import LATENCY_BUCKETS_MS, Histogram, bucket_of


def test_the_bucket_of_a_latency_is_the_first_bound_at_or_above_it_as_bisect_finds() -> None:
    rng = random.Random(7)
    edges = [v for b in LATENCY_BUCKETS_MS for v in (b, b - 1e-9, b + 1e-9, b * 0.5)]
    values = [
        0.0,
        -1.0,
        1e12,
        float("inf"),
        *edges,
        *(rng.uniform(0, 40_000) for _ in range(20_000)),
        *(rng.uniform(0, 5) for _ in range(20_000)),
    ]
    assert [bucket_of(v) for v in values] == [bisect_left(LATENCY_BUCKETS_MS, v) for v in values]
    assert (bucket_of(0.5), bucket_of(0.51), bucket_of(30_000), bucket_of(30_001)) == (0, 1, 14, 15)


def test_recording_in_a_known_bucket_counts_as_recording_the_latency() -> None:
    a, b = Histogram(), Histogram()
    for ms in (0.2, 0.7, 3.0, 3.0, 120.0, 45_000.0):
        a.record(ms)
        b.record_in(bucket_of(ms), ms)
    assert a.snapshot() == b.snapshot()
    assert a.buckets[bucket_of(3.0)] == 2 and a.count == 6


def _runtime() -> ListenerRuntime:
    return ListenerRuntime("in", [], Router([]), EMPTY_CHAIN, {}, CodecLimits())


def test_rpc_counters_are_one_entry_per_call_whatever_string_objects_name_it() -> None:
    rt = _runtime()
    svc = "com.acme.Echo:1.0"
    first = rt.rpc_for("bolt", svc, "echo")
    assert rt.rpc_for("bolt", svc, "echo") is first
    # equal strings that are other objects (another connection's decoding) find the same entry
    assert rt.rpc_for("bolt", "".join(["com.acme.", "Echo:1.0"]), "".join(["ec", "ho"])) is first
    other = rt.rpc_for("bolt", svc, "ping")
    assert other is not first and rt.rpc_for("dubbo", svc, "echo") is not first
    assert rt.rpc_for("bolt", svc, "echo") is first
    assert set(rt.rpc_stats) == {("bolt", svc, "echo"), ("bolt", svc, "ping"), ("dubbo", svc, "echo")}


def test_rpc_counters_go_to_the_table_a_reload_carried_over() -> None:
    old, new = _runtime(), _runtime()
    kept = old.rpc_for("dubbo", "com.acme.Echo", "echo")
    new.rpc_for("dubbo", "com.acme.Echo", "echo")  # remembered against its own table first
    new.rpc_stats = old.rpc_stats  # as a reload does (``core/listeners.py``)
    assert new.rpc_for("dubbo", "com.acme.Echo", "echo") is kept
