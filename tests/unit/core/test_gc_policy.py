"""The serving process hides its start-up heap from the collector and collects young objects less often."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sofamesh.core.gc_policy import YOUNG_THRESHOLD

_PROBE = """
import gc, json
from sofamesh.core.gc_policy import settle_after_start
kept = [[i] for i in range(1000)]
before = gc.get_freeze_count()
settle_after_start()
print(json.dumps({"before": before, "after": gc.get_freeze_count(), "threshold": gc.get_threshold()[0]}))
"""


def test_settling_after_start_freezes_what_exists_and_raises_the_young_threshold() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    r = json.loads(out.stdout)
    assert r["before"] == 0
    assert r["after"] > 1000  # the 1000 lists and everything imported so far
    assert r["threshold"] == YOUNG_THRESHOLD


_HEAP_PROBE = """
import json
from sofamesh.core.gc_policy import settle_after_start
def rss_kb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
blocks = [bytes(4000) for _ in range(20000)]  # ~80 MB from the C heap, then 15 of every 16 freed
kept = blocks[::16]
del blocks
before = rss_kb()
settle_after_start()
print(json.dumps({"before_kb": before, "after_kb": rss_kb(), "kept": len(kept)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_settling_after_start_gives_the_heap_start_up_freed_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, timeout=60, check=True)
    r = json.loads(out.stdout)
    freed_kb = 20000 * 4000 * 15 // 16 // 1024
    assert r["before_kb"] - r["after_kb"] > freed_kb // 2, r
