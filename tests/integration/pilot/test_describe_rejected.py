"""``sofamesh describe service`` against a real Pilot process whose files store holds a document it
rejects: the document is listed under the service it names, with its error, in the table and in
``-o json`` / ``-o yaml``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from tests.integration.pilot.test_policy import Pilot

REJECTED = Path(__file__).parents[2] / "data/rejected/policy.yaml"


def test_describe_service_lists_the_rejected_documents_naming_it(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "broken.yaml").write_text(REJECTED.read_text())
    p = Pilot(tmp_path, {"type": "files", "options": {"path": str(conf), "interval_s": 0.1}}).start()
    try:
        for svc in ("reviews", "ratings"):
            r = httpx.put(
                f"{p.url}/v1/services/{svc}/instances/{svc}-1",
                json={"address": "127.0.0.1", "port": 9080, "protocol": "http"},
                timeout=5,
            )
            assert r.status_code in (200, 201), r.text
        assert len(p.get("/debug/policy").json()["rejected"]) == 3
        out = p.cli("describe", "service", "reviews")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split("Rejected policy (1), naming this service:")[1].splitlines()
        assert lines[1].startswith("  VirtualService default/reviews-broken at ") and "broken.yaml" in lines[1]
        assert "weight" in lines[1] and "ratings-broken" not in out.stdout and "reviews-other" not in out.stdout
        as_json = json.loads(p.cli("describe", "service", "reviews", "-o", "json").stdout)
        as_yaml = yaml.safe_load(p.cli("describe", "service", "reviews", "-o", "yaml").stdout)
        assert as_yaml["rejected"] == as_json["rejected"] and len(as_json["rejected"]) == 1
        (ratings,) = json.loads(p.cli("describe", "service", "ratings", "-o", "json").stdout)["rejected"]
        assert ratings["ref"] == "DestinationRule default/ratings-broken"
    finally:
        p.stop()
