"""Every Eureka read answers JSON or XML by the request's ``Accept`` as Eureka does, over a real
socket: JSON when the header says ``json``; XML without one, for ``*/*``, ``application/*`` and
``application/xml``; 406 for a header that takes neither (Eureka's resources produce only those two).
The same holds for the instance document a replicating peer gets with a 409."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import httpx
import pytest

from sofamesh.plugins.registries.eureka.api import EurekaRegistry
from tests.integration.registries.servers import serve_api

READS = {  # path -> the root element / JSON key of its answer
    "/eureka/apps": "applications",
    "/eureka/apps/": "applications",
    "/eureka/apps/delta": "applications",
    "/eureka/apps/WEB": "application",
    "/eureka/apps/WEB/w1": "instance",
    "/eureka/instances/w1": "instance",
    "/eureka/vips/web": "applications",
    "/eureka/svips/web-secure": "applications",
}
JSON_ACCEPTS = ["application/json", "application/json;q=0.9, application/xml", "application/*, text/json"]
XML_ACCEPTS = [None, "*/*", "application/*", "application/xml", "application/xml, text/html;q=0.5"]
REFUSED_ACCEPTS = ["text/html", "text/plain, image/png", "application/xml;q=0", "text/json"]

INSTANCE = {
    "instance": {
        "instanceId": "w1",
        "hostName": "127.0.0.1",
        "app": "WEB",
        "ipAddr": "127.0.0.1",
        "port": {"$": 8080, "@enabled": "true"},
        "status": "UP",
        "vipAddress": "web",
        "secureVipAddress": "web-secure",
        "metadata": {"version": "v1"},
        "dataCenterInfo": {"name": "MyOwn"},
        "lastDirtyTimestamp": "2000",
    }
}


def _instance_ids(root: str, parsed: object) -> set[str]:
    """The instance ids in an answer (JSON already loaded, or an XML element)."""
    if isinstance(parsed, ET.Element):
        return {e.text or "" for e in parsed.iter("instanceId")}
    assert isinstance(parsed, dict)
    return {m for m in json.dumps(parsed[root]).split('"') if m == "w1"}


@pytest.mark.parametrize("path", sorted(READS))
def test_each_read_answers_json_or_xml_by_accept_as_eureka(path: str) -> None:
    root = READS[path]

    async def body(http: httpx.AsyncClient) -> None:
        assert (await http.post("/eureka/apps/WEB", json=INSTANCE)).status_code == 204
        for accept in JSON_ACCEPTS:
            resp = await http.get(path, headers={"Accept": accept})
            assert resp.status_code == 200, accept
            assert resp.headers["content-type"].startswith("application/json"), accept
            assert _instance_ids(root, resp.json()) == {"w1"}, (accept, resp.text)
        for accept in XML_ACCEPTS:
            headers = {"Accept": accept} if accept is not None else {}
            resp = await http.get(path, headers=headers)
            assert resp.status_code == 200, accept
            assert resp.headers["content-type"].startswith("application/xml"), accept
            doc = ET.fromstring(resp.content)
            assert doc.tag == root and _instance_ids(root, doc) == {"w1"}, (accept, resp.text)
        for accept in REFUSED_ACCEPTS:
            resp = await http.get(path, headers={"Accept": accept})
            assert resp.status_code == 406, (accept, resp.status_code, resp.text)

    serve_api(EurekaRegistry("eureka", None, prefix="/eureka", address="127.0.0.1:0"), body, 30)


def test_the_document_a_replicating_peer_gets_with_409_follows_accept_too() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        assert (await http.post("/eureka/apps/WEB", json=INSTANCE)).status_code == 204
        params = {"status": "UP", "lastDirtyTimestamp": "1000"}  # older than Pilot's 2000
        peer = {"x-netflix-discovery-replication": "true"}
        resp = await http.put("/eureka/apps/WEB/w1", params=params, headers=peer)
        assert resp.status_code == 409
        assert ET.fromstring(resp.content).findtext("instanceId") == "w1"
        resp = await http.put("/eureka/apps/WEB/w1", params=params, headers={**peer, "Accept": "application/json"})
        assert (resp.status_code, resp.json()["instance"]["instanceId"]) == (409, "w1")

    serve_api(EurekaRegistry("eureka", None, prefix="/eureka", address="127.0.0.1:0"), body, 30)
