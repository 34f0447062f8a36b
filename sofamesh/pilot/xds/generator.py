"""The xDS generator contract: what ``pilot_register_xds_generators`` puts in the catalog.

A generator turns the mesh model into resources of one xDS type URL for one node. Pilot merges
every generator of a type URL, so a protocol plugin adds listeners, or resources of a type URL of
its own, without a change to Pilot.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf import json_format

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from sofamesh.pilot.model import MeshModel

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SHORT_TYPE_NAMES: Mapping[str, str] = MappingProxyType(
    {LISTENER: "lds", CLUSTER: "cds", ROUTE: "rds", ENDPOINT: "eds"}
)


def short_type(type_url: str) -> str:
    """``lds``/``cds``/``rds``/``eds`` for the Envoy types, the message name otherwise."""
    return SHORT_TYPE_NAMES.get(type_url) or type_url.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The xDS node as the client described itself; generators scope their output with it."""

    id: str
    cluster: str = ""
    user_agent: str = ""
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    locality: tuple[str, str, str] = ("", "", "")  # (region, zone, sub_zone) of the node

    @classmethod
    def from_proto(cls, node: Any) -> NodeInfo:
        meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        agent = node.user_agent_name
        if node.HasField("user_agent_version"):
            agent = f"{agent}/{node.user_agent_version}"
        loc = node.locality
        return cls(id=node.id, cluster=node.cluster, user_agent=agent, metadata=MappingProxyType(meta),
                   locality=(loc.region, loc.zone, loc.sub_zone))


GATEWAY_NODE_PREFIX = "router~"


def is_gateway(node: NodeInfo) -> bool:
    """Whether ``node`` is a gateway proxy: its id starts with ``router~`` (Istio's node type for its
    ingress and egress gateways; sidecars are ``sidecar~``). Gateways get no sidecar listeners."""
    return node.id.startswith(GATEWAY_NODE_PREFIX)


@dataclass(frozen=True, slots=True, eq=False)
class XdsResource:
    """One named resource. ``wildcard=False`` keeps it out of wildcard subscriptions: only a node
    that names it gets it (proxyless gRPC ``api_listener``\\ s are such resources)."""

    name: str
    message: Message
    wildcard: bool = True


class XdsGenerator(Protocol):
    """Builds the resources of one type URL.

    ``scope(node)`` says which nodes get the same output: Pilot calls ``generate`` once per mesh
    change and distinct scope, and shares the result between nodes of equal scope. Return ``None``
    when the output does not depend on the node. ``generate`` must be deterministic and must not
    block; returning the very same ``XdsResource`` object for an unchanged resource lets Pilot skip
    re-serializing it.
    """

    type_url: str

    def scope(self, node: NodeInfo) -> Hashable: ...

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]: ...


__all__ = ["CLUSTER", "ENDPOINT", "GATEWAY_NODE_PREFIX", "LISTENER", "ROUTE", "NodeInfo", "XdsGenerator", "XdsResource",
           "is_gateway", "short_type"]
