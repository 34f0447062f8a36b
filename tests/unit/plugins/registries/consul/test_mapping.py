"""Consul service definitions <-> the mesh model (``mapping.py``) and the cluster adapter's read and
write forms (``adapter.py``): what a label, a tag, a check and a bad field become."""

from __future__ import annotations

from typing import Any

import pytest

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.consul import mapping
from sofamesh.plugins.registries.consul.adapter import instance_of, registration_of


def test_meta_and_tags_become_labels_and_critical_ttl_checks_unhealthy() -> None:
    body = {
        "name": "web",
        "ID": "w 1",
        "port": 8080,
        "Tags": ["version=v1", "primary"],
        "Meta": {"version": "v2", "zone": "z1"},
        "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "1m"},
        "Weights": {"Passing": 500},
    }
    service, inst, checks = mapping.from_consul(body, "10.0.0.9", "consul")
    assert service == Service("web", "http", (8080,))
    assert inst.id == "w-1" and inst.address == "10.0.0.9" and inst.weight == 128
    # Meta wins over a k=v tag; a bare tag keeps its name
    assert dict(inst.labels) == {"version": "v2", "zone": "z1", "consul.tag.primary": ""}
    assert inst.version == "v2"
    assert [(c["CheckID"], c["Type"], c["Status"], c["ttl_s"], c["deregister_s"]) for c in checks] == [
        ("service:w 1", "ttl", "critical", 10.0, 60.0)
    ]
    assert inst.health is Health.UNHEALTHY


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ({"Port": 80}, "Name", "Missing service name"),
        ({"Name": "web", "Port": "eighty"}, "Port", "not a number"),
        ({"Name": "web", "Port": 0}, "Port", "1..65535"),
        ({"Name": "web", "Port": 80, "Meta": ["x"]}, "Meta", "must be an object"),
        ({"Name": "web", "Port": 80, "Check": {"TTL": "ten seconds"}}, "Check.TTL", "invalid duration"),
        ({"Name": "web", "Port": 80, "Checks": ["x"]}, "Checks", "must be an object"),
    ],
)
def test_a_bad_field_is_a_config_error_naming_it(body: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        mapping.from_consul(body, "127.0.0.1", "consul")
    assert err.value.path == path and words in err.value.message


@pytest.mark.parametrize(
    ("value", "seconds"), [("10s", 10.0), ("250ms", 0.25), ("2m", 120.0), (5, 5.0), (30_000_000_000, 30.0)]
)
def test_durations_as_consul_takes_them(value: object, seconds: float) -> None:
    assert mapping.duration(value, "x") == pytest.approx(seconds)


def _row(status: str = "passing", **svc: Any) -> dict[str, Any]:
    service = {
        "ID": "w1",
        "Service": "web",
        "Address": "",
        "Port": 80,
        "Tags": ["sofamesh.source=zk"],
        "Meta": {"version": "v1"},
        "Weights": {"Passing": 3, "Warning": 1},
        **svc,
    }
    return {
        "Node": {"Node": "n1", "Address": "10.1.1.1"},
        "Service": service,
        "Checks": [{"CheckID": "serfHealth", "Status": "passing"}, {"CheckID": "service:w1", "Status": status}],
    }


def test_a_health_entry_is_an_instance_with_the_node_address_and_tag_labels() -> None:
    service, inst = instance_of(_row(), "corp")
    assert service.name == "web"
    assert (inst.id, inst.address, inst.port, inst.weight, inst.origin) == ("w1", "10.1.1.1", 80, 3, "corp")
    assert dict(inst.labels) == {"sofamesh.source": "zk", "version": "v1"}
    assert inst.health is Health.HEALTHY
    assert instance_of(_row("critical"), "corp")[1].health is Health.UNHEALTHY
    assert instance_of(_row("warning"), "corp")[1].health is Health.HEALTHY


def test_a_health_entry_the_model_cannot_take_is_refused() -> None:
    with pytest.raises(ConfigError):
        instance_of(_row(Port=0), "corp")
    with pytest.raises(ConfigError):
        instance_of({"Node": "n1", "Service": []}, "corp")


def test_what_pilot_registers_reads_back_as_the_same_labels() -> None:
    inst = ServiceInstance(
        service="web",
        id="w1",
        address="127.0.0.1",
        port=9000,
        weight=2,
        version="v2",
        labels={"sofamesh.source": "embedded", "sofamesh.sync": "abc", "zone": "z1", "consul.tag.primary": ""},
        health=Health.HEALTHY,
    )
    body = registration_of(Service("web"), inst, 10, 60)
    assert body["Meta"] == {"zone": "z1", "version": "v2"}
    assert body["Tags"] == ["sofamesh.source=embedded", "sofamesh.sync=abc", "primary"]
    assert body["Check"] == {
        "CheckID": "service:w1",
        "Name": "sofamesh TTL",
        "TTL": "10s",
        "Status": "passing",
        "DeregisterCriticalServiceAfter": "60s",
    }
    row = {
        "Node": {"Address": "10.0.0.1"},
        "Service": {
            "Service": body["Name"],
            **{k: body[k] for k in ("ID", "Address", "Port", "Tags", "Meta", "Weights")},
        },
        "Checks": [],
    }
    _service, back = instance_of(row, "corp")
    assert dict(back.labels) == {**inst.labels, "version": "v2"}
    assert (back.address, back.port, back.weight, back.version) == ("127.0.0.1", 9000, 2, "v2")
    assert "Check" not in registration_of(Service("web"), inst, None, 60)
