"""Nacos naming instances <-> the mesh model (``mapping.py``): names, namespaces, groups, clusters,
Dubbo's provider names, metadata, weight, health, and the error each bad parameter gets."""

from __future__ import annotations

from typing import Any

import pytest

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.nacos import mapping
from sofamesh.plugins.registries.nacos.mapping import NacosName


@pytest.mark.parametrize(
    ("args", "where", "service"),
    [
        (("hello",), ("public", "DEFAULT_GROUP", "hello"), "hello"),
        (("ORDERS@@hello",), ("public", "ORDERS", "hello"), "ORDERS:hello"),
        (("hello", "ORDERS"), ("public", "ORDERS", "hello"), "ORDERS:hello"),
        (("hello", "", "dev"), ("dev", "DEFAULT_GROUP", "hello"), "dev:DEFAULT_GROUP:hello"),
        (("hello", "", "default"), ("public", "DEFAULT_GROUP", "hello"), "hello"),
        (
            ("providers:com.acme.Greeter:1.0.0:blue",),
            ("public", "DEFAULT_GROUP", "providers:com.acme.Greeter:1.0.0:blue"),
            "com.acme.Greeter",
        ),
        # a Dubbo name keeps its interface as the service whatever the namespace
        (
            ("providers:com.acme.Greeter::", "G", "dev"),
            ("dev", "G", "providers:com.acme.Greeter::"),
            "com.acme.Greeter",
        ),
    ],
)
def test_names_namespaces_and_groups(args: tuple[str, ...], where: tuple[str, str, str], service: str) -> None:
    name = mapping.nacos_name(*args)
    assert (name.namespace, name.group, name.name) == where
    assert name.service == service
    assert name.grouped == f"{where[1]}@@{where[2]}"


def test_dubbo_provider_names_split_into_interface_version_and_group() -> None:
    assert NacosName("public", "DEFAULT_GROUP", "providers:com.acme.Greeter:1.0.0:blue:x").dubbo == (
        "com.acme.Greeter",
        "1.0.0",
        "blue:x",
    )
    assert NacosName("public", "DEFAULT_GROUP", "providers:com.acme.Greeter").dubbo == ("com.acme.Greeter", "", "")
    assert NacosName("public", "DEFAULT_GROUP", "providers:").dubbo is None
    assert NacosName("public", "DEFAULT_GROUP", "consumers:com.acme.Greeter:1.0.0:").dubbo is None


def test_a_missing_service_name_is_refused_with_nacos_words() -> None:
    with pytest.raises(ConfigError) as err:
        mapping.nacos_name("", "G")
    assert err.value.path == "serviceName" and err.value.message == "Param 'serviceName' is required."


@pytest.mark.parametrize(
    ("raw", "out"),
    [
        (None, {}),
        ("", {}),
        ('{"version": "v1", "n": 2, "gone": null}', {"version": "v1", "n": "2"}),
        ("version=v1,zone=z1,bare", {"version": "v1", "zone": "z1"}),
        ({"a": 1}, {"a": "1"}),
    ],
)
def test_metadata_as_json_as_key_value_pairs_or_an_object(raw: object, out: dict[str, str]) -> None:
    assert mapping.metadata_of(raw) == out


@pytest.mark.parametrize("raw", [["a"], "[1, 2]", 7])
def test_metadata_that_is_not_an_object_is_refused(raw: object) -> None:
    with pytest.raises(ConfigError) as err:
        mapping.metadata_of(raw)
    assert err.value.path == "metadata" and "JSON object" in err.value.message


def test_every_parameter_of_a_registration_maps_into_the_model() -> None:
    where = mapping.nacos_name("hello", "ORDERS", "dev")
    params = {
        "ip": "10.0.0.7",
        "port": "8080",
        "weight": "2.6",
        "clusterName": "SH",
        "metadata": '{"version": "v2", "group": "blue", "protocol": "grpc"}',
    }
    svc, inst = mapping.from_nacos(where, params, "nacos")
    assert svc == Service("dev:ORDERS:hello", "grpc", (8080,))
    assert (inst.id, inst.address, inst.port, inst.weight, inst.version, inst.group, inst.health, inst.origin) == (
        "10.0.0.7:8080@SH",
        "10.0.0.7",
        8080,
        3,
        "v2",
        "blue",
        Health.HEALTHY,
        "nacos",
    )
    assert dict(inst.labels) == {
        "version": "v2",
        "group": "blue",
        "protocol": "grpc",
        "nacos.cluster": "SH",
        "nacos.group": "ORDERS",
        "nacos.namespace": "dev",
    }


def test_defaults_and_a_beat_document() -> None:
    where = mapping.nacos_name("hello")
    svc, inst = mapping.from_nacos(
        where, {"ip": "10.0.0.7", "port": 8080, "cluster": "DEFAULT", "metadata": {"protocol": "smtp"}}, "nacos"
    )
    assert svc.protocol == "http" and inst.id == "10.0.0.7:8080" and inst.weight == 1
    assert dict(inst.labels) == {"protocol": "smtp"} and (inst.version, inst.group) == ("", "")


@pytest.mark.parametrize(
    ("params", "health", "weight"),
    [
        ({"healthy": "false"}, Health.UNHEALTHY, 1),
        ({"enabled": "false"}, Health.UNHEALTHY, 1),
        ({"enable": "false"}, Health.UNHEALTHY, 1),
        ({"healthy": True, "enabled": True}, Health.HEALTHY, 1),
        ({"weight": "0"}, Health.UNHEALTHY, 1),
        ({"weight": "1000"}, Health.HEALTHY, 128),
        ({"weight": "0.2"}, Health.HEALTHY, 1),
    ],
)
def test_health_enabled_and_weight_become_eds_health_and_weight(
    params: dict[str, Any], health: Health, weight: int
) -> None:
    _svc, inst = mapping.from_nacos(mapping.nacos_name("hello"), {"ip": "10.0.0.7", "port": 80, **params}, "n")
    assert (inst.health, inst.weight) == (health, weight)


def test_a_dubbo_provider_is_the_dubbo_service_with_version_and_group_from_its_name() -> None:
    where = mapping.nacos_name("providers:com.acme.Greeter:1.0.0:blue")
    svc, inst = mapping.from_nacos(
        where, {"ip": "10.0.0.7", "port": 20880, "metadata": "version=9,group=red,side=provider"}, "nacos"
    )
    assert svc == Service("com.acme.Greeter", "dubbo", (20880,))
    assert (inst.id, inst.version, inst.group, inst.labels["side"]) == (
        "10.0.0.7:20880:1.0.0:blue",
        "1.0.0",
        "blue",
        "provider",
    )
    # an empty version / group in the name falls back to the metadata's
    _svc, inst = mapping.from_nacos(
        mapping.nacos_name("providers:com.acme.Greeter::"),
        {"ip": "10.0.0.7", "port": 20880, "metadata": {"version": "2.0.0"}},
        "n",
    )
    assert (inst.version, inst.group, inst.id) == ("2.0.0", "", "10.0.0.7:20880:2.0.0:")


@pytest.mark.parametrize(
    ("params", "path", "words"),
    [
        ({"port": "80"}, "ip", "Param 'ip' is required."),
        ({"ip": "10.0.0.7", "port": "http"}, "port", "not a number"),
        ({"ip": "10.0.0.7", "port": 80, "weight": "heavy"}, "weight", "not a number"),
        ({"ip": "10.0.0.7", "port": 80, "metadata": "[1]"}, "metadata", "JSON object"),
    ],
)
def test_a_bad_parameter_is_named(params: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        mapping.from_nacos(mapping.nacos_name("hello"), params, "nacos")
    assert err.value.path == path and words in err.value.message


def test_a_mesh_instance_as_a_host_and_as_a_registered_one() -> None:
    inst = ServiceInstance(
        service="hello",
        id="m-1",
        address="127.0.0.1",
        port=8080,
        weight=4,
        labels={"zone": "z1", "nacos.cluster": "SH"},
        version="v3",
        group="g",
        health=Health.UNHEALTHY,
    )
    where = mapping.nacos_name("hello")
    host = mapping.to_host(inst, where)
    assert host["instanceId"] == "127.0.0.1#8080#SH#DEFAULT_GROUP@@hello"
    assert (host["ip"], host["port"], host["weight"], host["healthy"], host["enabled"], host["ephemeral"]) == (
        "127.0.0.1",
        8080,
        4.0,
        False,
        True,
        True,
    )
    assert (host["clusterName"], host["serviceName"]) == ("SH", "DEFAULT_GROUP@@hello")
    assert host["metadata"] == {"zone": "z1", "version": "v3", "group": "g"}
    # a Nacos-registered one answers what it registered
    wire = {"clusterName": "BJ", "weight": "0.5", "enabled": "false", "metadata": '{"k": "v"}'}
    host = mapping.to_host(inst, where, wire, ephemeral=False)
    assert (host["clusterName"], host["weight"], host["enabled"], host["ephemeral"], host["metadata"]) == (
        "BJ",
        0.5,
        False,
        False,
        {"k": "v"},
    )


def test_dubbo_names_match_only_their_version_and_group() -> None:
    inst = ServiceInstance(
        service="com.acme.Greeter", id="i", address="127.0.0.1", port=1, version="1.0.0", group="blue"
    )
    assert mapping.matches(inst, mapping.nacos_name("providers:com.acme.Greeter:1.0.0:blue"))
    assert not mapping.matches(inst, mapping.nacos_name("providers:com.acme.Greeter:2.0.0:blue"))
    assert not mapping.matches(inst, mapping.nacos_name("providers:com.acme.Greeter:1.0.0:"))
    assert mapping.matches(inst, mapping.nacos_name("com.acme.Greeter"))
