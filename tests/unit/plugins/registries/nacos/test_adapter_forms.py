"""The nacos-cluster adapter's forms: what it registers and beats, and how a host it reads back maps."""

from __future__ import annotations

import json

import pytest

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.nacos.adapter import ID_KEY, beat_of, instance_of, registration_of
from sofamesh.plugins.registries.nacos.mapping import NacosName

WHERE = NacosName("dev", "ORDERS", "")


def _host(form: dict[str, str]) -> dict[str, object]:
    """What ``instance/list`` answers for an instance registered with ``form``."""
    return {
        "ip": form["ip"],
        "port": int(form["port"]),
        "weight": float(form["weight"]),
        "healthy": form["healthy"] == "true",
        "enabled": True,
        "clusterName": form["clusterName"],
        "metadata": json.loads(form["metadata"]),
    }


def test_an_http_instance_round_trips_with_its_id_labels_weight_and_health() -> None:
    svc = Service(name="hello", protocol="http", ports=(8080,))
    inst = ServiceInstance(
        service="hello",
        id="m-1",
        address="127.0.0.1",
        port=8080,
        weight=3,
        labels={"version": "v2", "sofamesh.source": "embedded"},
        version="v2",
        health=Health.UNHEALTHY,
    )
    form = registration_of(svc, inst, WHERE)
    assert form["serviceName"] == "ORDERS@@hello" and form["namespaceId"] == "dev"
    assert form["ephemeral"] == "true" and form["healthy"] == "false"
    assert json.loads(form["metadata"]) == {"version": "v2", "sofamesh.source": "embedded", ID_KEY: "m-1"}
    back_svc, back = instance_of(NacosName("dev", "ORDERS", "hello"), _host(form), "corp")
    # the adapter's namespace and group are its defaults: the model name is the bare Nacos name
    assert back_svc.name == "hello" and back_svc.protocol == "http"
    assert (back.id, back.address, back.port, back.weight, back.version, back.health, back.origin) == (
        "m-1",
        "127.0.0.1",
        8080,
        3,
        "v2",
        Health.UNHEALTHY,
        "corp",
    )
    assert back.labels == {"version": "v2", "sofamesh.source": "embedded"}


def test_an_id_nacos_would_derive_itself_is_not_carried() -> None:
    svc = Service(name="hello", protocol="http", ports=(8080,))
    inst = ServiceInstance(service="hello", id="127.0.0.1:8080", address="127.0.0.1", port=8080)
    assert ID_KEY not in json.loads(registration_of(svc, inst, WHERE)["metadata"])


def test_a_dubbo_service_is_written_with_dubbos_provider_name_and_reads_back_as_the_same_service() -> None:
    svc = Service(name="com.acme.Greeter", protocol="dubbo", ports=(20880,))
    inst = ServiceInstance(
        service="com.acme.Greeter", id="g-1", address="127.0.0.1", port=20880, version="1.0.0", group="blue"
    )
    form = registration_of(svc, inst, WHERE)
    assert form["serviceName"] == "ORDERS@@providers:com.acme.Greeter:1.0.0:blue"
    meta = json.loads(form["metadata"])
    assert (meta["protocol"], meta["version"], meta["group"]) == ("dubbo", "1.0.0", "blue")
    name = form["serviceName"].split("@@", 1)[1]
    back_svc, back = instance_of(NacosName("dev", "ORDERS", name), _host(form), "corp")
    assert (back_svc.name, back_svc.protocol, back.id, back.version, back.group) == (
        "com.acme.Greeter",
        "dubbo",
        "g-1",
        "1.0.0",
        "blue",
    )


def test_the_beat_carries_what_was_registered() -> None:
    svc = Service(name="hello", protocol="http", ports=(8080,))
    inst = ServiceInstance(service="hello", id="m-1", address="127.0.0.1", port=8080, labels={"version": "v1"})
    beat = beat_of(registration_of(svc, inst, WHERE))
    assert (beat["serviceName"], beat["groupName"], beat["namespaceId"]) == ("ORDERS@@hello", "ORDERS", "dev")
    body = json.loads(beat["beat"])
    assert (body["ip"], body["port"], body["cluster"], body["metadata"]["version"]) == (
        "127.0.0.1",
        8080,
        "DEFAULT",
        "v1",
    )


@pytest.mark.parametrize(
    ("host", "field"),
    [
        ({"port": 80}, "ip"),
        ({"ip": "127.0.0.1", "port": "eighty"}, "port"),
        ({"ip": "127.0.0.1", "port": 80, "metadata": [1]}, "metadata"),
    ],
)
def test_an_unusable_host_is_refused_by_name(host: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        instance_of(NacosName("public", "DEFAULT_GROUP", "hello"), host, "corp")
    assert err.value.path == field
