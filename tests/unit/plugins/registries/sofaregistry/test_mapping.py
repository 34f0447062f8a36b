"""How SOFARegistry publications become services and instances of the mesh model."""

from __future__ import annotations

from typing import Any

from sofamesh.plugins.registries.sofaregistry.plugin import instances_of, service_name
from sofamesh.plugins.registries.sofaregistry.session import Publication


def pub(data: list[str], regist_id: str = "r1", data_id: str = "com.x.Echo:1.0@DEFAULT") -> Publication:
    return Publication(regist_id, data_id, "DEFAULT_GROUP", data, "Z1", "app1", 1, session=None)  # type: ignore[arg-type]


def test_sofarpcs_data_id_suffix_is_not_part_of_the_service_name() -> None:
    assert service_name("com.x.Echo:1.0@DEFAULT") == "com.x.Echo:1.0"
    assert service_name("plain") == "plain"


def test_each_provider_url_is_an_instance_with_its_weight_version_and_labels() -> None:
    service, insts = instances_of("sr", [pub(["bolt://10.0.0.1:12200?version=1.0&weight=5", "bolt://10.0.0.2:12201"])])
    assert service is not None and service.name == "com.x.Echo:1.0" and service.protocol == "bolt"
    got: list[Any] = [(i.id, i.address, i.port, i.weight, i.version, i.origin) for i in insts]
    assert got == [("r1-0", "10.0.0.1", 12200, 5, "1.0", "sr"), ("r1-1", "10.0.0.2", 12201, 1, "", "sr")]
    assert insts[0].labels["zone"] == "Z1" and insts[0].labels["app"] == "app1"


def test_data_that_is_not_a_url_is_not_an_instance() -> None:
    service, insts = instances_of("sr", [pub(["hello", "bolt://nohost", "bolt://h:0"])])
    assert service is None and insts == []


def test_an_unknown_scheme_is_taken_as_bolt() -> None:
    service, insts = instances_of("sr", [pub(["tr://10.0.0.1:12200"])])
    assert service is not None and service.protocol == "bolt" and len(insts) == 1
