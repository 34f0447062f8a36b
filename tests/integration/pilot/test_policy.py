"""Policy through a real Pilot process: ``sofamesh apply/get/delete/analyze`` against its REST API,
the embedded store across a restart, the files store following its directory, and the etcd store
shared by two Pilots (a real etcd), and the ZooKeeper store likewise."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kazoo.client import KazooClient

from sofamesh.testing import free_port
from tests.integration.pilot.conftest import REPO, stop_process, wait_until
from tests.integration.registries.servers import EtcdServer, ZooKeeperServer, etcd, zookeeper

DATA = REPO / "tests" / "data"
BOOKINFO = DATA / "bookinfo"
VS_PATH = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"

__all__ = ["etcd", "zookeeper"]


class Pilot:
    """``sofamesh pilot -c`` with a config_store section; stopped by pid."""

    def __init__(self, workdir: Path, config_store: dict[str, Any] | None = None, name: str = "pilot") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.log = workdir / f"{name}.log"
        cfg: dict[str, Any] = {"xds": {"address": "127.0.0.1:0"}, "api": {"address": f"127.0.0.1:{self.api_port}"},
                               "data_dir": str(workdir / f"{name}-data"), "grace_s": 0.5}
        if config_store is not None:
            cfg["config_store"] = config_store
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(json.dumps(cfg))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Pilot:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sofamesh", "pilot", "-c", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pilot exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"pilot not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sofamesh", *args, "--pilot", self.url], input=stdin,
                              capture_output=True, text=True, timeout=60, cwd=REPO)

    def vs(self, name: str) -> dict[str, Any] | None:
        r = self.get(f"{VS_PATH}/{name}")
        return dict(r.json()) if r.status_code == 200 else None


@pytest.fixture
def pilot(tmp_path: Path) -> Iterator[Pilot]:
    p = Pilot(tmp_path).start()
    try:
        yield p
    finally:
        p.stop()


SAMPLE_ORDER = ["destination-rule-all.yaml", "virtual-service-all-v1.yaml", "virtual-service-reviews-80-20.yaml",
                "virtual-service-reviews-jason-v2-v3.yaml", "virtual-service-ratings-test-abort.yaml",
                "virtual-service-ratings-test-delay.yaml"]


def test_bookinfo_samples_applied_unchanged_are_accepted_and_served(pilot: Pilot) -> None:
    for name in SAMPLE_ORDER:
        done = pilot.cli("apply", "-f", str(BOOKINFO / name))
        assert done.returncode == 0, done.stderr
        assert "error" not in done.stderr
    assert "virtualservice.networking.istio.io/reviews configured" in pilot.cli(
        "apply", "-f", str(BOOKINFO / "virtual-service-reviews-80-20.yaml")).stdout
    assert "unchanged" in pilot.cli("apply", "-f", str(BOOKINFO / "virtual-service-reviews-80-20.yaml")).stdout
    reviews = pilot.vs("reviews")
    assert reviews is not None
    assert [d["weight"] for d in reviews["spec"]["http"][0]["route"]] == [80, 20]
    ratings = pilot.vs("ratings")
    assert ratings is not None and ratings["spec"]["http"][0]["fault"]["delay"]["fixedDelay"] == "7s"
    listed = pilot.cli("get", "vs", "-A")
    assert listed.returncode == 0
    assert [line.split()[1] for line in listed.stdout.splitlines()[1:]] == ["details", "productpage", "ratings",
                                                                            "reviews"]
    as_yaml = pilot.cli("get", "destinationrule", "reviews", "-o", "yaml")
    assert "name: v3" in as_yaml.stdout
    dr = pilot.get("/apis/networking.istio.io/v1alpha3/destinationrules").json()
    assert dr["kind"] == "DestinationRuleList" and len(dr["items"]) == 4
    assert {i["apiVersion"] for i in dr["items"]} == {"networking.istio.io/v1alpha3"}
    # a directory and stdin apply too
    assert pilot.cli("apply", "-f", str(BOOKINFO)).returncode == 0
    assert pilot.cli("apply", "-f", "-", stdin=(BOOKINFO / SAMPLE_ORDER[1]).read_text()).returncode == 0


def test_a_rejected_document_prints_its_error_and_leaves_the_previous_version_serving(
        pilot: Pilot, tmp_path: Path) -> None:
    good = (BOOKINFO / "virtual-service-reviews-80-20.yaml").read_text()
    assert pilot.cli("apply", "-f", str(BOOKINFO / "virtual-service-reviews-80-20.yaml")).returncode == 0
    bad = tmp_path / "canary.yaml"
    bad.write_text((BOOKINFO / "destination-rule-all.yaml").read_text().split("---")[0] + "---\n"
                   + good.replace("weight: 20", "weight: -20").replace("subset: v1", "subset: v1\n        port: {}"))
    done = pilot.cli("apply", "-f", str(bad))
    assert done.returncode == 1
    assert "destinationrule.networking.istio.io/productpage created" in done.stdout  # the good one applied
    lines = done.stderr.strip().splitlines()
    assert f"error: {bad}:29 (document 2) VirtualService default/reviews: spec.http[0].route[1].weight: " \
           "weight -20 < 0" in lines
    served = pilot.vs("reviews")
    assert served is not None and [d["weight"] for d in served["spec"]["http"][0]["route"]] == [80, 20]
    # the API answers 422 with every issue, and stores nothing
    body = json.loads(json.dumps({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                  "metadata": {"name": "reviews"},
                                  "spec": {"hosts": ["reviews"], "http": [{"timeout": "soon", "route": [
                                      {"destination": {"host": "reviews"}}]}]}}))
    r = httpx.put(f"{pilot.url}{VS_PATH}/reviews", json=body, timeout=5)
    assert r.status_code == 422
    assert r.json()["issues"] == [{"path": "spec.http[0].timeout", "severity": "error",
                                   "message": "invalid duration 'soon' (use a number and a unit: 1.5s, 100ms, 1m, 1h)"}]
    assert "VirtualService default/reviews is invalid" in r.json()["error"]
    served_again = pilot.vs("reviews")
    assert served_again is not None and served_again["metadata"]["resourceVersion"] == served["metadata"][
        "resourceVersion"]


def test_delete_by_file_and_by_name(pilot: Pilot) -> None:
    all_v1 = str(BOOKINFO / "virtual-service-all-v1.yaml")
    assert pilot.cli("apply", "-f", all_v1).returncode == 0
    done = pilot.cli("delete", "vs", "reviews")
    assert done.returncode == 0 and 'virtualservice.networking.istio.io "reviews" deleted' in done.stdout
    assert pilot.vs("reviews") is None
    assert pilot.cli("delete", "vs", "reviews").returncode == 1
    assert pilot.cli("delete", "-f", all_v1).returncode == 1  # reviews was already gone
    assert pilot.get(VS_PATH).json()["items"] == []


def test_rest_api_paths_errors_and_openapi(pilot: Pilot) -> None:
    assert pilot.get("/apis/networking.istio.io/v1/namespaces/default/virtualservicez").status_code == 404
    assert pilot.get(f"{VS_PATH}/nothing").json()["reason"] == "NotFound"
    r = httpx.post(pilot.url + "/apis/security.istio.io/v1/namespaces/prod/authorizationpolicies",
                   content="apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\n"
                           "spec: {action: DENY, rules: [{}]}\n", headers={"Content-Type": "application/yaml"},
                   timeout=5)
    assert r.status_code == 201 and r.headers["X-Sofamesh-Result"] == "created"
    assert r.json()["metadata"]["namespace"] == "prod"
    across = pilot.get("/apis/security.istio.io/v1beta1/authorizationpolicies").json()
    assert [(i["metadata"]["namespace"], i["apiVersion"]) for i in across["items"]] == [
        ("prod", "security.istio.io/v1beta1")]
    mismatch = httpx.put(f"{pilot.url}{VS_PATH}/other", json={
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
        "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}]}]}}, timeout=5)
    assert mismatch.status_code == 400
    paths = pilot.get("/openapi.json").json()["paths"]
    assert "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}" in paths
    assert "/apis/{group}/{version}/{plural}" in paths


def test_analyze_reports_what_will_not_work(pilot: Pilot) -> None:
    for version in ("v1", "v2", "v3"):
        pilot_register = httpx.put(f"{pilot.url}/v1/services/reviews/instances/reviews-{version}", json={
            "address": "127.0.0.1", "port": 9080, "labels": {"version": version}}, timeout=5)
        assert pilot_register.status_code == 200
    assert pilot.cli("apply", "-f", str(BOOKINFO / "destination-rule-all.yaml")).returncode == 0
    assert pilot.cli("apply", "-f", str(BOOKINFO / "virtual-service-reviews-jason-v2-v3.yaml")).returncode == 0
    assert pilot.cli("apply", "-f", "-", stdin="""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-canary}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews, subset: v4}
    retries: {attempts: 2, retryRemoteLocalities: true}
""").returncode == 0
    done = pilot.cli("analyze")
    assert done.returncode == 1  # two VirtualServices for one host is an error
    out = done.stdout
    assert "Error [IST0109] (VirtualService default/reviews) The VirtualServices default/reviews, " \
           "default/reviews-canary associated with mesh define the same host or wildcard host reviews." in out
    assert 'Referenced host+subset in destinationrule not found: "reviews+v4"' in out
    assert "Referenced host not found: 'ratings'" in out  # no registry knows ratings
    assert "Referenced host not found: 'reviews'" not in out
    assert "Warning [SOFA0001] (DestinationRule default/reviews)" not in out  # v1..v3 all have an instance
    assert "(VirtualService default/reviews) accepted and stored" not in out  # bookinfo's is enforced
    assert "Info [SOFA0002] (VirtualService default/reviews-canary) accepted and stored, but no connected proxy " \
           "enforces these fields yet: http.retries.retryRemoteLocalities" in out


def test_embedded_store_keeps_policy_across_a_restart(tmp_path: Path) -> None:
    first = Pilot(tmp_path).start()
    try:
        assert first.cli("apply", "-f", str(BOOKINFO / "virtual-service-reviews-80-20.yaml")).returncode == 0
    finally:
        first.stop()
    again = Pilot(tmp_path).start()
    try:
        reviews = again.vs("reviews")
        assert reviews is not None and reviews["apiVersion"] == "networking.istio.io/v1"
        assert [d["weight"] for d in reviews["spec"]["http"][0]["route"]] == [80, 20]
    finally:
        again.stop()


def test_files_store_follows_its_directory_and_keeps_the_last_good_version(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "reviews.yaml").write_text((BOOKINFO / "virtual-service-reviews-80-20.yaml").read_text())
    p = Pilot(tmp_path, {"type": "files", "options": {"path": str(conf), "interval_s": 0.1}}).start()
    try:
        def weights() -> list[int] | None:
            vs = p.vs("reviews")
            return [d.get("weight", 0) for d in vs["spec"]["http"][-1]["route"]] if vs else None

        assert weights() == [80, 20]
        (conf / "reviews.yaml").write_text((BOOKINFO / "virtual-service-reviews-80-20.yaml").read_text()
                                           .replace("80", "50").replace("20", "50"))
        wait_until(lambda: weights() == [50, 50], 10, what="the edited file")
        (conf / "reviews.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\n  bad: [")
        wait_until(lambda: p.get("/debug/policy").json()["rejected"], 10, what="the parse error reported")
        assert weights() == [50, 50]
        (conf / "reviews.yaml").write_text((BOOKINFO / "virtual-service-reviews-80-20.yaml").read_text()
                                           .replace("weight: 80", "weight: eighty"))
        wait_until(lambda: "eighty" in json.dumps(p.get("/debug/policy").json()["rejected"]), 10,
                   what="the schema error reported")
        assert weights() == [50, 50]
        (conf / "ratings.yaml").write_text((BOOKINFO / "virtual-service-ratings-test-abort.yaml").read_text())
        wait_until(lambda: p.vs("ratings") is not None, 10, what="a new file")
        assert p.cli("apply", "-f", str(BOOKINFO / "virtual-service-all-v1.yaml")).returncode == 1  # read-only
        (conf / "reviews.yaml").unlink()
        wait_until(lambda: p.vs("reviews") is None, 10, what="the removed file")
    finally:
        p.stop()


def _shared_by_two_pilots(a: Pilot, b: Pilot, write_garbage: Callable[[], None]) -> None:
    assert a.cli("apply", "-f", str(BOOKINFO / "virtual-service-reviews-80-20.yaml")).returncode == 0
    wait_until(lambda: b.vs("reviews") is not None, 10, what="pilot b seeing a's write")
    assert b.cli("apply", "-f", str(BOOKINFO / "virtual-service-reviews-jason-v2-v3.yaml")).returncode == 0
    wait_until(lambda: (a.vs("reviews") or {}).get("spec", {}).get("http", [{}])[0].get("match"), 10,
               what="pilot a seeing b's replacement")
    write_garbage()  # someone writes garbage straight into the store: both keep the last accepted version
    for p in (a, b):
        wait_until(lambda p=p: p.get("/debug/policy").json()["rejected"], 10, what="the broken value reported")
        served = p.vs("reviews")
        assert served is not None and served["spec"]["http"][0]["match"]
    assert a.cli("delete", "vs", "reviews").returncode == 0
    wait_until(lambda: b.vs("reviews") is None, 10, what="pilot b seeing the delete")


def test_etcd_store_is_shared_by_two_pilots(tmp_path: Path, etcd: EtcdServer) -> None:
    store = {"type": "etcd", "options": {"endpoint": etcd.endpoint, "prefix": "/test/policy/"}}
    a = Pilot(tmp_path, store, "a").start()
    b = Pilot(tmp_path, store, "b").start()

    def garbage() -> None:
        key = base64.b64encode(b"/test/policy/networking.istio.io/VirtualService/default/reviews").decode()
        httpx.post(etcd.endpoint + "/v3/kv/put", json={"key": key, "value": base64.b64encode(b"{not json").decode()},
                   timeout=5).raise_for_status()

    try:
        _shared_by_two_pilots(a, b, garbage)
    finally:
        a.stop()
        b.stop()


def test_zookeeper_store_is_shared_by_two_pilots(tmp_path: Path, zookeeper: ZooKeeperServer) -> None:
    store = {"type": "zookeeper", "options": {"hosts": zookeeper.hosts, "root": "/test/policy"}}
    a = Pilot(tmp_path, store, "a").start()
    b = Pilot(tmp_path, store, "b").start()

    def garbage() -> None:
        zk = KazooClient(hosts=zookeeper.hosts)
        zk.start(timeout=10)
        try:
            zk.set("/test/policy/networking.istio.io/VirtualService/default/reviews", b"{not json")
        finally:
            zk.stop()
            zk.close()

    try:
        _shared_by_two_pilots(a, b, garbage)
        # a restarted replica reads the whole tree back
        b.stop()
        assert a.cli("apply", "-f", str(BOOKINFO / "virtual-service-reviews-80-20.yaml")).returncode == 0
        b.start()
        assert b.vs("reviews") is not None
    finally:
        a.stop()
        b.stop()
