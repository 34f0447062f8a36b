"""One reading of a Dubbo provider's URL parameters (``dubbo_params.py``) for the ZooKeeper Dubbo layout
and Nacos's ``providers:`` services: the same provider is the same instance through either."""

from __future__ import annotations

from urllib.parse import urlencode

from sofamesh.pilot.model import Health, ServiceInstance
from sofamesh.plugins.registries.dubbo_params import dubbo_fields, parameter, weight_of
from sofamesh.plugins.registries.nacos import mapping
from sofamesh.plugins.registries.zookeeper.urls import from_node, java_encode

IFACE = "com.acme.Greeter"
# the query of a provider URL as @dubbo.ts writes it: the group as default.group, and a category
PARAMS = {
    "anyhost": "true",
    "application": "shop",
    "category": "providers",
    "default.group": "blue",
    "default.timeout": "3000",
    "dubbo": "2.0.2",
    "interface": IFACE,
    "methods": "hi,bye",
    "side": "provider",
    "version": "1.0.0",
}


def test_version_and_group_fall_back_to_their_default_forms_as_url_get_parameter_does() -> None:
    assert parameter(PARAMS, "group") == "blue"
    assert parameter({"group": "red", "default.group": "blue"}, "group") == "red"
    assert parameter({"group": "", "default.group": "blue"}, "group") == "blue"
    assert parameter({}, "version") == ""
    fields = dubbo_fields(PARAMS)
    assert (fields.version, fields.group, fields.weight, fields.enabled) == ("1.0.0", "blue", 100, True)
    assert set(fields.labels) == {"anyhost", "application", "default.timeout", "dubbo", "methods", "side"}


def test_weight_defaults_to_dubbos_100_and_is_clamped_and_scaled() -> None:
    assert [weight_of(None), weight_of(""), weight_of("x"), weight_of("7"), weight_of("500"), weight_of("0")] == [
        100,
        100,
        100,
        7,
        128,
        1,
    ]
    assert weight_of("40", scale=0.5) == 20
    assert dubbo_fields({"disabled": "true"}).enabled is False
    assert dubbo_fields({"enabled": "false"}).enabled is False


def _same(a: ServiceInstance, b: ServiceInstance) -> tuple[object, ...]:
    return (a.service, a.address, a.port, a.version, a.group, a.weight, a.health, a.labels), (
        b.service,
        b.address,
        b.port,
        b.version,
        b.group,
        b.weight,
        b.health,
        b.labels,
    )


def test_one_provider_through_zookeeper_and_through_nacos_is_the_same_instance() -> None:
    url = f"dubbo://10.0.0.7:20880/{IFACE}?{urlencode(PARAMS)}"
    zk = from_node("dubbo", java_encode(url))
    assert zk is not None
    svc_zk, from_zk = zk
    meta = {**PARAMS, "protocol": "dubbo", "path": IFACE}  # what Dubbo's NacosRegistry adds
    svc_nacos, from_nacos = mapping.from_nacos(
        mapping.nacos_name(f"providers:{IFACE}:1.0.0:blue"),
        {"ip": "10.0.0.7", "port": 20880, "metadata": meta},
        "nacos",
    )
    assert (svc_zk.name, svc_zk.protocol) == (svc_nacos.name, svc_nacos.protocol) == (IFACE, "dubbo")
    left, right = _same(from_zk, from_nacos)
    assert left == right
    assert from_zk.labels["protocol"] == "dubbo" and "category" not in from_zk.labels


def test_a_nacos_weight_scales_the_dubbo_weight_and_a_disabled_provider_is_unhealthy() -> None:
    where = mapping.nacos_name(f"providers:{IFACE}:1.0.0:")
    _s, inst = mapping.from_nacos(
        where, {"ip": "10.0.0.7", "port": 1, "weight": "0.5", "metadata": {"weight": "60"}}, "n"
    )
    assert (inst.weight, inst.health) == (30, Health.HEALTHY)
    _s, inst = mapping.from_nacos(where, {"ip": "10.0.0.7", "port": 1, "metadata": {"disabled": "true"}}, "n")
    assert (inst.weight, inst.health) == (100, Health.UNHEALTHY)


def test_a_provider_from_zookeeper_is_listed_in_nacos_as_dubbos_nacos_registry_would_write_it() -> None:
    zk = from_node("dubbo", java_encode(f"dubbo://10.0.0.7:20880/{IFACE}?{urlencode({**PARAMS, 'weight': '60'})}"))
    assert zk is not None
    where = mapping.nacos_name(f"providers:{IFACE}:1.0.0:blue")
    host = mapping.to_host(zk[1], where)
    assert host["weight"] == 1.0
    meta = host["metadata"]
    assert {
        k: meta[k] for k in ("interface", "path", "category", "protocol", "side", "version", "group", "weight")
    } == {
        "interface": IFACE,
        "path": IFACE,
        "category": "providers",
        "protocol": "dubbo",
        "side": "provider",
        "version": "1.0.0",
        "group": "blue",
        "weight": "60",
    }
    # and read back from Nacos, it is the instance it was
    _s, back = mapping.from_nacos(
        where, {"ip": host["ip"], "port": host["port"], "weight": host["weight"], "metadata": meta}, "nacos"
    )
    left, right = _same(zk[1], back)
    assert left == right
