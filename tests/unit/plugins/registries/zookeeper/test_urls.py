from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.zookeeper.urls import from_node, java_decode, java_encode, parse_url, to_url


def test_java_encode_follows_urlencoder_for_star_tilde_and_space() -> None:
    assert java_encode("a*b~c d:/?=&,") == "a*b%7Ec+d%3A%2F%3F%3D%26%2C"
    assert quote("*~", safe="") == "%2A~"  # what plain quote would have written instead


@given(st.text())
def test_java_decode_inverts_java_encode(text: str) -> None:
    assert java_decode(java_encode(text)) == text


def test_a_dubbo_url_is_parsed_into_scheme_host_port_path_and_params() -> None:
    url = parse_url("dubbo://10.0.0.5:20880/org.x.Demo?interface=org.x.Demo&methods=a,b&version=1.0.0")
    assert url is not None
    assert (url.scheme, url.host, url.port, url.path) == ("dubbo", "10.0.0.5", 20880, "org.x.Demo")
    assert url.params == {"interface": "org.x.Demo", "methods": "a,b", "version": "1.0.0"}
    assert parse_url("empty://0.0.0.0/org.x.Demo?category=providers") is None  # no port


def test_consumer_configurator_and_empty_nodes_are_not_instances() -> None:
    for url in ("consumer://10.0.0.1:0/x.Y?side=consumer&category=consumers",
                "override://0.0.0.0:0/x.Y?category=configurators", "empty://0.0.0.0:1/x.Y",
                "dubbo://10.0.0.1:1/x.Y?category=routers"):
        assert from_node("dubbo", java_encode(url)) is None


def test_an_instance_written_in_the_dubbo_layout_reads_back_equal_with_params_sorted() -> None:
    svc = Service(name="x.Echo", protocol="dubbo")
    inst = ServiceInstance(service="x.Echo", id="e-1", address="127.0.0.1", port=20880, weight=9, version="2",
                           group="g", health=Health.UNHEALTHY, labels={"methods": "a,b", "zone": "z1"})
    url, data = to_url("dubbo", svc, inst, pid=5, now_ms=1)
    assert url.startswith("dubbo://127.0.0.1:20880/x.Echo?anyhost=false&application=sofamesh&deprecated=false")
    names = [kv.split("=")[0] for kv in url.split("?", 1)[1].split("&")]
    assert names == sorted(names)
    assert data == b"127.0.0.1"
    parsed = from_node("dubbo", java_encode(url), data)
    assert parsed is not None
    back = parsed[1]
    assert (back.id, back.address, back.port, back.weight, back.version, back.group, back.health) == (
        "e-1", "127.0.0.1", 20880, 9, "2", "g", Health.UNHEALTHY)
    assert back.labels["methods"] == "a,b" and back.labels["zone"] == "z1"


def test_an_instance_written_in_the_sofa_layout_keeps_unique_id_and_online_flag() -> None:
    svc = Service(name="x.Sofa", protocol="bolt")
    inst = ServiceInstance(service="x.Sofa", id="s-1", address="127.0.0.1", port=12200, group="u1", version="1.0")
    url, data = to_url("sofa", svc, inst)
    assert url.startswith("bolt://127.0.0.1:12200?startTime=") and "uniqueId=u1" in url
    assert data == b"\x01"
    parsed = from_node("sofa", java_encode(url), data)
    assert parsed is not None and parsed[0].protocol == "bolt"
    assert (parsed[1].group, parsed[1].version, parsed[1].id) == ("u1", "1.0", "s-1")
    offline = from_node("sofa", java_encode(url), b"\x00")
    assert offline is not None and offline[1].health is Health.UNHEALTHY


def test_a_node_without_sofamesh_id_is_named_by_host_and_port_and_weights_are_clamped() -> None:
    parsed = from_node("dubbo", java_encode("dubbo://10.1.2.3:20880/x.Y?interface=x.Y&weight=500"))
    assert parsed is not None
    assert (parsed[1].id, parsed[1].weight) == ("10.1.2.3:20880", 128)
    default = from_node("dubbo", java_encode("dubbo://10.1.2.3:20880/x.Y"))
    assert default is not None and default[1].weight == 100 and default[0].name == "x.Y"


def test_a_sofa_provider_converted_to_the_dubbo_layout_keeps_shared_fields_and_the_rest_as_labels() -> None:
    sofa = ("bolt://127.0.0.1:12200?startTime=1&pid=2&uniqueId=u1&version=1.0&timeout=3000&weight=30"
            "&interface=x.Sofa&appName=app")
    parsed = from_node("sofa", java_encode(sofa), b"\x01")
    assert parsed is not None
    svc, inst = parsed
    url, _data = to_url("dubbo", svc, inst)
    assert url.startswith("bolt://127.0.0.1:12200/x.Sofa?")  # the scheme says how to call it
    back = from_node("dubbo", java_encode(url))
    assert back is not None
    b = back[1]
    assert (b.address, b.port, b.version, b.group, b.weight) == ("127.0.0.1", 12200, "1.0", "u1", 30)
    assert (b.labels["appName"], b.labels["timeout"], b.labels["protocol"]) == ("app", "3000", "bolt")
