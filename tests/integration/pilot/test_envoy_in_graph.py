"""A real Envoy 1.40 bootstrapped with ADS to Pilot, naming its admin address in its node metadata,
is a caller in Pilot's call graph: request rate, errors and p99 from its ``/stats/prometheus``."""

from __future__ import annotations

from pathlib import Path

import httpx

from sofamesh.testing import UpstreamServer

from .conftest import PilotProcess, wait_until
from .test_envoy import Envoy

DASHBOARD = {"dashboard": {"scrape_interval_s": 0.5, "scrape_timeout_s": 2.0, "rate_window_s": 30.0}}


def test_an_envoy_caller_shows_in_the_call_graph_with_its_p99(tmp_path: Path) -> None:
    pilot = PilotProcess(tmp_path / "data", config=DASHBOARD).start()
    try:
        with UpstreamServer("web-1") as web:
            host, port = web.address.rsplit(":", 1)
            pilot.register("web", "w1", address=host, port=int(port), protocol="http")
            envoy = Envoy(tmp_path, pilot, "GRPC", admin_in_metadata=True)
            try:

                def get(path: str) -> int | None:
                    try:
                        return httpx.get(
                            f"http://127.0.0.1:{envoy.outbound_port}{path}", headers={"Host": "web"}, timeout=5
                        ).status_code
                    except httpx.HTTPError:
                        return None

                wait_until(lambda: get("/") == 200, 30, what=f"Envoy serving web ({envoy.log})")

                def proxy() -> dict[str, object] | None:
                    graph = httpx.get(f"{pilot.api_url}/debug/graph", timeout=5).json()
                    return next((p for p in graph["proxies"] if p["kind"] == "envoy" and p["samples"] >= 2), None)

                p = wait_until(proxy, 20, what="Envoy's admin scraped by Pilot")
                assert p["error"] is None and p["source"] == "edge"
                for _ in range(6):  # the provider answers after 200 ms
                    assert get("/slow?ms=200") == 200
                for _ in range(4):  # the provider closes the connection without answering: Envoy's 503
                    assert get("/reset") == 503

                def edge() -> dict[str, object] | None:
                    graph = httpx.get(f"{pilot.api_url}/debug/graph", timeout=5).json()
                    return next(
                        (
                            e
                            for e in graph["edges"]
                            if e["source"] == "edge"
                            and e["destination"] == "web"
                            and e["errors"] >= 4
                            and e["p99_ms"] is not None
                        ),
                        None,
                    )

                # Envoy merges its histograms into what admin shows at each stats flush (5 s by default)
                e = wait_until(edge, 30, what="Envoy's calls to web in the call graph")
                assert e["requests"] >= 10 and e["rps"] > 0 and 0 < e["error_rate"] < 1
                assert 200 <= e["p99_ms"] < 2000, e  # type: ignore[operator]
            finally:
                envoy.stop()
    finally:
        pilot.stop()
