"""A protocol nobody in sofamesh's core knows, served by Pilot with no Pilot change: the separately
installed ``sofamesh-thrift`` distribution registers its xDS generators; a Thrift service registered
through the Open Service Registry API is called by name through a sidecar configured over xDS, with
real thriftpy2 peers on both ends."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sofamesh.testing import free_port, wait_port
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.xds.mesh import Sidecar, wait_for

REPO = Path(__file__).resolve().parents[3]
THRIFT = REPO / "contrib" / "sofamesh-thrift"
PEER = THRIFT / "tests" / "peers" / "thrift_peer.py"
PEER_PY = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache") / "venv-thrift" / "bin" / "python"


def _need_thrift() -> None:
    from sofamesh.core.plugin_host import PILOT_GROUP, PluginHost
    from sofamesh.pilot import hookspecs

    ok = PEER_PY.exists() and "thrift" in PluginHost(PILOT_GROUP, hookspecs).available()
    if not ok:
        msg = "sofamesh-thrift and its thriftpy2 peer must be installed (scripts/test, setup.d/40-thrift-peers.sh)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def test_pilot_serves_thrift_routes_from_an_outside_plugin_and_a_sidecar_calls_by_service_name(tmp_path: Path) -> None:
    _need_thrift()
    servers = []
    pilot = PilotProcess(tmp_path / "data").start()
    try:
        for name in ("thrift-a", "thrift-b"):
            port = free_port()
            servers.append(subprocess.Popen([str(PEER_PY), str(PEER), "server", str(port), name, "--multiplexed"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True))
            wait_port("127.0.0.1", port)
            pilot.register("Echo", name, address="127.0.0.1", port=port, protocol="thrift")
        thrift_port = free_port()
        with Sidecar(pilot.xds_port, "thrift-app", metadata={"sofamesh.thrift_port": thrift_port}) as sc:
            wait_for(lambda: any(c["name"].endswith("Echo") and len(c["endpoints"]) == 2
                                 for c in sc.dump()["config"]["clusters"]), 15, "the Echo cluster with two endpoints")
            wait_port("127.0.0.1", thrift_port)
            program = [["echo", str(i)] for i in range(6)]
            out = subprocess.run([str(PEER_PY), str(PEER), "client", str(thrift_port), json.dumps(program),
                                  "--service", "Echo"], capture_output=True, timeout=60, check=True)
            results = json.loads(out.stdout)
        assert results is not None and all("ok" in r for r in results), results
        served = sorted(r["ok"].split(":")[0] for r in results)
        assert served == ["thrift-a"] * 3 + ["thrift-b"] * 3, results  # round robin over both instances
        assert sorted(r["ok"].split(":")[1] for r in results) == [str(i) for i in range(6)]
    finally:
        pilot.stop()
        for p in servers:
            p.terminate()
            p.wait(10)
