"""EDS endpoints carry their instance's labels under Envoy's ``envoy.lb`` metadata key, so a real
Envoy (and anything reading EDS) sees the ``version`` a registry gave an instance."""

from __future__ import annotations

from google.protobuf import json_format

from sofamesh.pilot.model import ServiceInstance
from sofamesh.pilot.xds.generators import LB_METADATA, EndpointGenerator, endpoint_labels


def _inst(iid: str, port: int, **kw: object) -> ServiceInstance:
    return ServiceInstance(service="web", id=iid, address="127.0.0.1", port=port, **kw)  # type: ignore[arg-type]


def test_labels_and_version_are_endpoint_metadata_and_bare_instances_have_none() -> None:
    insts = (
        _inst("a", 8001, labels={"version": "v1", "zone": "z1"}),
        _inst("b", 8002, version="v2"),
        _inst("c", 8003, labels={"version": "v3"}, version="ignored-when-labelled"),
        _inst("d", 8004),
    )
    cla = EndpointGenerator.assignment("outbound|80|web", insts)
    meta = {}
    for lb in (lb for group in cla.endpoints for lb in group.lb_endpoints):  # a zone label is a locality
        doc = json_format.MessageToDict(lb.metadata)
        meta[lb.endpoint.address.socket_address.port_value] = doc.get("filterMetadata", {}).get(LB_METADATA)
    assert meta == {8001: {"version": "v1", "zone": "z1"}, 8002: {"version": "v2"}, 8003: {"version": "v3"}, 8004: None}


def test_endpoint_labels_do_not_change_the_instance() -> None:
    inst = _inst("a", 1, labels={"k": "v"}, version="v9")
    assert endpoint_labels(inst) == {"k": "v", "version": "v9"}
    assert dict(inst.labels) == {"k": "v"}
