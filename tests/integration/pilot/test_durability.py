"""The embedded registry under a hard kill: every acknowledged registration survives."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx

from .conftest import PilotProcess


def test_every_acknowledged_registration_survives_a_kill_9_in_the_middle_of_writes(tmp_path: Path) -> None:
    pilot = PilotProcess(tmp_path / "data").start()
    acked: list[str] = []
    stop = threading.Event()

    def writer(prefix: str) -> None:
        with httpx.Client(base_url=pilot.api_url, timeout=5) as http:
            for n in range(400):
                if stop.is_set():
                    return
                iid = f"{prefix}{n}"
                try:
                    r = http.put(f"/v1/services/svc/instances/{iid}",
                                 json={"address": "127.0.0.1", "port": 1000 + n, "protocol": "http"})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(iid)

    threads = [threading.Thread(target=writer, args=(p,)) for p in "abc"]
    for t in threads:
        t.start()
    try:
        for _ in range(200):  # kill once a good number of writes were acknowledged
            if len(acked) >= 60:
                break
            threading.Event().wait(0.02)
        assert pilot.proc is not None
        pilot.proc.send_signal(signal.SIGKILL)
        pilot.proc.wait(timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        pilot.stop()
    assert len(acked) >= 60
    store = tmp_path / "data" / "embedded-registry.json"
    assert json.loads(store.read_text())["format"] == 1  # whole and parseable (a temp file may be left)

    pilot.start()
    try:
        ids = {i["id"] for i in pilot.get("/v1/services/svc/instances")["instances"]}
        assert set(acked) <= ids, f"lost after restart: {sorted(set(acked) - ids)}"
    finally:
        pilot.stop()
