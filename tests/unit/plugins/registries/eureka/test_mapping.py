"""Eureka instance documents <-> the mesh model (``mapping.py``): every row of the table, the JSON and
XML shapes, and the error each bad field gets."""

from __future__ import annotations

from typing import Any

import pytest

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.eureka import mapping


def doc(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instanceId": "hello-1",
        "hostName": "host-a",
        "ipAddr": "10.0.0.7",
        "app": "HELLO-SVC",
        "status": "UP",
        "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": mapping.DATA_CENTER_CLASS, "name": "MyOwn"},
    }
    return {**base, **extra}


def test_names_are_lower_cased_for_the_mesh_and_upper_cased_for_eureka() -> None:
    assert mapping.service_name(" HELLO-SVC ") == "hello-svc"
    assert mapping.app_name("hello-svc") == "HELLO-SVC"


@pytest.mark.parametrize(
    ("raw", "iid"),
    [("host-a:hello:8080", "host-a:hello:8080"), ("a b/c", "a-b-c"), ("--x", "x"), ("///", "instance")],
)
def test_instance_ids_keep_what_the_model_takes_and_replace_the_rest(raw: str, iid: str) -> None:
    assert mapping.instance_id(raw) == iid


@pytest.mark.parametrize(
    ("status", "health"),
    [
        ("UP", Health.HEALTHY),
        ("OUT_OF_SERVICE", Health.DRAINING),
        ("DOWN", Health.UNHEALTHY),
        ("STARTING", Health.UNHEALTHY),
        ("UNKNOWN", Health.UNHEALTHY),
    ],
)
def test_status_becomes_eds_health(status: str, health: Health) -> None:
    assert mapping.health_of(status) is health


def test_health_becomes_a_status_and_an_override_wins_over_the_reported_status() -> None:
    assert [mapping.status_of(h) for h in (Health.HEALTHY, Health.DRAINING, Health.UNHEALTHY)] == [
        "UP",
        "OUT_OF_SERVICE",
        "DOWN",
    ]
    assert mapping.effective_status({"status": "UP", "overriddenstatus": "OUT_OF_SERVICE"}) == "OUT_OF_SERVICE"
    assert mapping.effective_status({"status": "DOWN", "overriddenstatus": "UNKNOWN"}) == "DOWN"
    assert mapping.effective_status({}) == "UP"


def test_leases_come_from_lease_info_with_eurekas_90_s_default() -> None:
    assert mapping.lease_of({"leaseInfo": {"durationInSecs": 30}}) == 30.0
    assert mapping.lease_of({"leaseInfo": {"durationInSecs": "7"}}) == 7.0
    for bad in (
        {},
        {"leaseInfo": {"durationInSecs": "soon"}},
        {"leaseInfo": {"durationInSecs": 0}},
        {"leaseInfo": "90"},
    ):
        assert mapping.lease_of(bad) == 90.0


def test_every_field_of_a_registration_maps_into_the_model() -> None:
    meta = {
        "version": "v2",
        "group": "blue",
        "weight": "7",
        "protocol": "grpc",
        "management.port": "9090",
        "zone": "z1",
    }
    svc, inst = mapping.from_eureka("hello-svc", doc(metadata=meta), "eureka")
    assert svc == Service("hello-svc", "grpc", (8080,))
    assert (inst.service, inst.id, inst.address, inst.port, inst.weight, inst.version, inst.group) == (
        "hello-svc",
        "hello-1",
        "10.0.0.7",
        8080,
        7,
        "v2",
        "blue",
    )
    assert inst.health is Health.HEALTHY and inst.origin == "eureka"
    # metadata are labels, but for Spring Boot's management port
    assert dict(inst.labels) == {"version": "v2", "group": "blue", "weight": "7", "protocol": "grpc", "zone": "z1"}


def test_defaults_secure_port_and_id_from_the_host_name() -> None:
    body = doc(
        port={"$": 8080, "@enabled": "false"},
        securePort={"$": 8443, "@enabled": "true"},
        metadata={"protocol": "carrier-pigeon", "weight": "500"},
        status="DOWN",
    )
    del body["instanceId"]
    svc, inst = mapping.from_eureka("HELLO-SVC", body, "eureka")
    assert (svc.protocol, inst.port, inst.id, inst.weight, inst.health) == ("http", 8443, "host-a", 1, Health.UNHEALTHY)
    # a bare number is a port too
    assert mapping.from_eureka("hello-svc", doc(port=9000), "eureka")[1].port == 9000


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"hostName": ""}, "instance.hostName", "is required"),
        ({"ipAddr": None}, "instance.ipAddr", "is required"),
        ({"app": ""}, "instance.app", "is required"),
        ({"dataCenterInfo": None}, "instance.dataCenterInfo", "is required"),
        ({"app": "OTHER"}, "instance.app", "is not the application"),
        ({"port": {"$": "http", "@enabled": "true"}}, "instance.port", "no enabled port"),
        ({"port": {"$": 70000, "@enabled": "true"}}, "instance.port", "no enabled port"),
        ({"port": {"$": 8080, "@enabled": "false"}}, "instance.port", "no enabled port"),
        ({"metadata": ["version", "v1"]}, "instance.metadata", "must be an object"),
    ],
)
def test_a_bad_field_is_named(change: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        mapping.from_eureka("HELLO-SVC", doc(**change), "eureka")
    assert err.value.path == path and words in err.value.message


def test_a_mesh_instance_written_as_eureka_reads_back_the_same() -> None:
    inst = ServiceInstance(
        service="hello-svc",
        id="m-1",
        address="127.0.0.1",
        port=8080,
        weight=5,
        labels={"zone": "z1"},
        version="v3",
        group="g",
        health=Health.DRAINING,
    )
    out = mapping.to_eureka(inst, now_ms=1_700_000_000_000)
    assert (out["app"], out["vipAddress"], out["instanceId"], out["status"]) == (
        "HELLO-SVC",
        "hello-svc",
        "m-1",
        "OUT_OF_SERVICE",
    )
    assert out["metadata"] == {"zone": "z1", "version": "v3", "group": "g", "weight": "5"}
    assert out["port"] == {"$": 8080, "@enabled": "true"} and out["securePort"]["@enabled"] == "false"
    assert out["lastDirtyTimestamp"] == "1700000000000"
    assert out["leaseInfo"]["durationInSecs"] == 90 and out["leaseInfo"]["registrationTimestamp"] == 1_700_000_000_000
    # OUT_OF_SERVICE is a status, not an override: reading it back drains
    _svc, back = mapping.from_eureka("HELLO-SVC", out, "e")
    assert (back.id, back.port, back.weight, back.version, back.group, back.health) == (
        "m-1",
        8080,
        5,
        "v3",
        "g",
        Health.DRAINING,
    )
    # no labels: Eureka's empty-map marker, which reads back as no labels
    bare = mapping.to_eureka(ServiceInstance(service="s", id="i", address="127.0.0.1", port=1))
    assert bare["metadata"] == {"@class": "java.util.Collections$EmptyMap"}
    assert dict(mapping.from_eureka("S", bare, "e")[1].labels) == {}


def test_apps_hashcode_counts_each_status_sorted_and_applications_sort_by_name() -> None:
    assert mapping.apps_hashcode(["UP", "DOWN", "UP", "OUT_OF_SERVICE"]) == "DOWN_1_OUT_OF_SERVICE_1_UP_2_"
    assert mapping.apps_hashcode([]) == ""
    apps = mapping.applications({"B": [{"instanceId": "b"}], "A": []}, 4, "UP_1_")
    assert apps == {
        "applications": {
            "versions__delta": "4",
            "apps__hashcode": "UP_1_",
            "application": [{"name": "A", "instance": []}, {"name": "B", "instance": [{"instanceId": "b"}]}],
        }
    }


def test_xml_attributes_text_lists_booleans_and_escaping() -> None:
    assert mapping.to_xml("port", {"$": 8080, "@enabled": "true"}) == '<port enabled="true">8080</port>'
    assert mapping.to_xml("x", [1, 2]) == "<x>1</x><x>2</x>"
    assert mapping.to_xml("flag", True) == "<flag>true</flag>"
    assert mapping.to_xml("m", {"a": "<&>"}) == "<m><a>&lt;&amp;&gt;</a></m>"
    assert mapping.to_xml("d", {"@class": 'q"x', "name": "MyOwn"}) == "<d class='q\"x'><name>MyOwn</name></d>"


def test_an_xml_registration_parses_to_the_json_shape_and_maps_alike() -> None:
    body = doc(metadata={"version": "v1"})
    parsed = mapping.parse_xml_instance(mapping.to_xml("instance", body))
    assert parsed["port"] == {"@enabled": "true", "$": "8080"}
    assert parsed["dataCenterInfo"] == {"@class": mapping.DATA_CENTER_CLASS, "name": "MyOwn"}
    assert mapping.from_eureka("HELLO-SVC", parsed, "e") == mapping.from_eureka("HELLO-SVC", body, "e")


def test_xml_that_does_not_parse_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        mapping.parse_xml_instance("<instance><app>HELLO</instance>")
    assert err.value.path == "instance" and "not valid XML" in err.value.message
