"""Eureka's ``lastDirtyTimestamp`` answers on renewal, over a real socket: equal -> 200; the client's
newer -> 404 (it must register again, the registration is kept meanwhile); Pilot's newer -> 200 to a
client, 409 with Pilot's document to a replicating peer; not a number -> 400 naming it. A status
update with a newer timestamp keeps it, as Eureka's does."""

from __future__ import annotations

from typing import Any

import httpx

from sofamesh.plugins.registries.eureka.api import EurekaRegistry
from tests.integration.registries.servers import serve_api

PATH = "/eureka/apps/WEB/w1"


def _instance(dirty: int, version: str) -> dict[str, Any]:
    return {
        "instance": {
            "instanceId": "w1",
            "hostName": "127.0.0.1",
            "app": "WEB",
            "ipAddr": "127.0.0.1",
            "port": {"$": 8080, "@enabled": "true"},
            "status": "UP",
            "metadata": {"version": version},
            "dataCenterInfo": {"name": "MyOwn"},
            "leaseInfo": {"durationInSecs": 30},
            "lastDirtyTimestamp": str(dirty),
        }
    }


def test_renewals_answer_by_last_dirty_timestamp() -> None:
    registry = EurekaRegistry("eureka", None, prefix="/eureka", address="127.0.0.1:0")

    async def renew(http: httpx.AsyncClient, dirty: object, **headers: str) -> httpx.Response:
        params = {"status": "UP", "lastDirtyTimestamp": str(dirty)}
        return await http.put(PATH, params=params, headers=headers)

    def versions() -> list[str]:
        return [i.version for i in registry.instances("web")]

    async def body(http: httpx.AsyncClient) -> None:
        assert (await http.post("/eureka/apps/WEB", json=_instance(1000, "v1"))).status_code == 204
        assert (await renew(http, 1000)).status_code == 200
        assert (await http.put(PATH)).status_code == 200  # no timestamp: a plain renewal
        # the client changed since it registered: 404, and it stays registered until it does again
        assert (await renew(http, 2000)).status_code == 404
        assert versions() == ["v1"]
        assert (await http.post("/eureka/apps/WEB", json=_instance(2000, "v2"))).status_code == 204
        assert (await renew(http, 2000)).status_code == 200 and versions() == ["v2"]
        # Pilot's copy is newer: a client is told all is well, a replicating peer gets 409 and the document
        assert (await renew(http, 1500)).status_code == 200
        conflict = await renew(http, 1500, **{"x-netflix-discovery-replication": "true", "Accept": "application/json"})
        assert conflict.status_code == 409
        doc = conflict.json()["instance"]
        assert (doc["instanceId"], doc["lastDirtyTimestamp"], doc["metadata"]["version"]) == ("w1", "2000", "v2")
        # a bad timestamp is named; the instance is kept
        bad = await renew(http, "yesterday")
        assert bad.status_code == 400 and "lastDirtyTimestamp" in bad.text and "'yesterday'" in bad.text
        assert versions() == ["v2"]
        # an unknown instance is 404 whatever its timestamp
        assert (await http.put("/eureka/apps/WEB/w9", params={"lastDirtyTimestamp": "1"})).status_code == 404
        # a status override with a newer timestamp keeps it; an older one leaves it
        status = {"value": "OUT_OF_SERVICE", "lastDirtyTimestamp": "3000"}
        assert (await http.put(PATH + "/status", params=status)).status_code == 200
        assert (await renew(http, 3000)).status_code == 200
        status = {"value": "UP", "lastDirtyTimestamp": "2500"}
        assert (await http.put(PATH + "/status", params=status)).status_code == 200
        assert (await renew(http, 2500)).status_code == 200  # Pilot's 3000 is newer
        assert (await renew(http, 3001)).status_code == 404

    serve_api(registry, body, 60)
