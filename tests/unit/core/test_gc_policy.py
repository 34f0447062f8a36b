"""The serving process hides its start-up heap from the collector and collects young objects less often."""

from __future__ import annotations

import json
import subprocess
import sys

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
