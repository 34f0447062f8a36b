"""Gateway credentials over SDS: the Kubernetes ``Secret`` objects of Pilot's config store served
as Envoy ``Secret`` resources to gateway proxies, over the same ADS stream (istiod's SDS for
gateways: ``sds_config: {ads: {}}``).

Which secrets a node gets: only a gateway (a ``router~`` node), and only the Secrets of its own
namespace (node metadata ``NAMESPACE``, else ``default``), as Istio authorizes a gateway to read the
secrets of its namespace. Names, as Istio's: ``kubernetes://NAME`` (and plain ``NAME``) for the
certificate and key of Secret ``NAME``; ``kubernetes://NAME-cacert`` (and ``NAME-cacert``) for its
client CA bundle, taken from a Secret ``NAME-cacert`` when one holds a CA, else from ``ca.crt`` of
``NAME``. Resources are not wildcard: a proxy gets the names it asks for (those its listeners name).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from sofamesh.core.net.secrets import CertificateSecret, Secret, TrustSecret
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.security.sds import secret_message
from sofamesh.pilot.policy.credentials import CA_SUFFIX, SDS_PREFIX, secret_name, served
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE
from sofamesh.pilot.xds.generator import NodeInfo, XdsResource, is_gateway
from sofamesh.pilot.xds.generators import NAMESPACE_KEY, PolicyAware

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.model import MeshModel
    from sofamesh.pilot.policy.model import PolicyModel
    from sofamesh.pilot.xds.generator import XdsGenerator

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def node_namespace(node: NodeInfo) -> str:
    return str(node.metadata.get(NAMESPACE_KEY) or DEFAULT_NAMESPACE)


class GatewayCredentials:
    """What a gateway's servers can use: ``cert(credentialName)`` / ``ca(credentialName)`` give the
    SDS name to reference, ``None`` when its namespace holds no such Secret."""

    def __init__(self, secrets: Mapping[str, Secret], namespace: str) -> None:
        self.secrets = secrets
        self.namespace = namespace

    def cert(self, credential_name: str) -> str | None:
        name = secret_name(credential_name)
        return SDS_PREFIX + name if isinstance(self.secrets.get(name), CertificateSecret) else None

    def ca(self, credential_name: str) -> str | None:
        name = secret_name(credential_name) + CA_SUFFIX
        return SDS_PREFIX + name if isinstance(self.secrets.get(name), TrustSecret) else None


def credentials_for(policy: PolicyModel | None, node: NodeInfo) -> GatewayCredentials:
    ns = node_namespace(node)
    return GatewayCredentials(served(policy.resources("Secret", ns)) if policy is not None else {}, ns)


def ads_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """An SDS reference fetched over the node's ADS stream (istiod's form for gateway credentials)."""
    source = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


class GatewaySecretGenerator(PolicyAware):
    """SDS: the Secrets of a gateway's namespace (module docstring)."""

    type_url = SECRET

    def __init__(self) -> None:
        self._memo: dict[tuple[str, Secret], XdsResource] = {}

    def scope(self, node: NodeInfo) -> Hashable:
        return ("gateway", node_namespace(node)) if is_gateway(node) else None

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        if not is_gateway(node) or self.policy is None:
            return []
        out: list[XdsResource] = []
        memo: dict[tuple[str, Secret], XdsResource] = {}
        for name, secret in sorted(served(self.policy.policy.resources("Secret", node_namespace(node))).items()):
            for rname in (SDS_PREFIX + name, name):
                key = (rname, secret)
                res = self._memo.get(key) or XdsResource(rname, secret_message(rname, secret), wildcard=False)
                memo[key] = res
                out.append(res)
        self._memo = memo
        return out


__all__ = [
    "SECRET",
    "GatewayCredentials",
    "GatewaySecretGenerator",
    "ads_secret",
    "credentials_for",
    "node_namespace",
    "served",
]


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    catalog.add("sds.gateway", GatewaySecretGenerator())
