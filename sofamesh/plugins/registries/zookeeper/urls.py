"""Provider URLs of the Dubbo and SOFA RPC ZooKeeper layouts <-> mesh model instances (sans-IO).

Owns Java ``URLEncoder`` encoding of node names, parsing and formatting of ``dubbo://`` / ``bolt://``
provider URLs, and the field mapping:

===============  ============================  =================================
model            Dubbo layout                  SOFA RPC layout
===============  ============================  =================================
service          ``interface`` (or URL path)   ``interface:version[:uniqueId]``
version          ``version`` (or               ``version``
                 ``default.version``)
group            ``group`` (or                 ``uniqueId``
                 ``default.group``)
weight           ``weight`` (default 100)      ``weight`` (default 100)
health           ``enabled=false`` /           node data ``\\x00`` (offline)
                 ``disabled=true`` -> unhealthy
id               ``sofamesh.id`` or host:port  ``sofamesh.id`` or host:port
labels           every other parameter but     every other parameter
                 ``category`` and ``path``
===============  ============================  =================================

The Dubbo layout's parameters are read by ``registries/dubbo_params.py``, as Nacos's Dubbo
services are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, quote_plus, unquote_plus

from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.dubbo_params import dubbo_fields, weight_of

LAYOUTS: tuple[str, ...] = ("dubbo", "sofa")
DEFAULT_ROOTS: Mapping[str, str] = {"dubbo": "/dubbo", "sofa": "/sofa-rpc"}
ID_PARAM = "sofamesh.id"
SERVICE_PARAM = "sofamesh.service"  # the model name, when it is not what the layout would derive

# Parameters of the SOFA layout that map to model fields; never copied into labels (the Dubbo
# layout's are dubbo_params.FIELDS and these two of ours).
_OURS = frozenset({ID_PARAM, SERVICE_PARAM})
_SOFA_FIELDS = frozenset({"interface", "version", "uniqueId", "weight"}) | _OURS
_BAD_ID = re.compile(r"[^A-Za-z0-9._:@\-]")


def java_encode(text: str) -> str:
    """``java.net.URLEncoder.encode(text, "UTF-8")``: space -> ``+``, ``*`` kept, ``~`` -> ``%7E``."""
    return quote_plus(text, safe="*").replace("~", "%7E")


def java_decode(text: str) -> str:
    return unquote_plus(text)


@dataclass(frozen=True, slots=True)
class ProviderUrl:
    """``scheme://host:port/path?params``; ``params`` keep their order."""

    scheme: str
    host: str
    port: int
    path: str = ""
    params: Mapping[str, str] = field(default_factory=dict)

    def format(self) -> str:
        query = "&".join(f"{k}={quote(v, safe=',*:/@')}" for k, v in self.params.items())
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = f"/{self.path}" if self.path else ""
        return f"{self.scheme}://{host}:{self.port}{path}" + (f"?{query}" if query else "")


_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<host>\[[^\]]+\]|[^:/?]+)(?::(?P<port>\d+))?"
                  r"(?:/(?P<path>[^?]*))?(?:\?(?P<query>.*))?$")


def parse_url(text: str, require_port: bool = True) -> ProviderUrl | None:
    """A provider URL from its decoded form; ``None`` when it is not one (port 0 when it has none
    and ``require_port`` is false)."""
    m = _URL.match(text)
    if m is None or (m["port"] is None and require_port):
        return None
    port = int(m["port"] or 0)
    if port > 65535 or (require_port and port == 0):
        return None
    params = dict(parse_qsl(m["query"] or "", keep_blank_values=True))
    return ProviderUrl(m["scheme"], m["host"].strip("[]"), port, m["path"] or "", params)


def parse_override(node_name: str) -> ProviderUrl | None:
    """A Dubbo configurator (``override://host[:port]/iface?...``) that is enabled; else ``None``."""
    url = parse_url(java_decode(node_name), require_port=False)
    if url is None or url.scheme != "override" or url.params.get("enabled", "true") == "false":
        return None
    return url


def apply_overrides(inst: ServiceInstance, overrides: list[ProviderUrl]) -> ServiceInstance:
    """``inst`` with the ``weight`` and ``disabled`` of every configurator that matches it (its host,
    or ``0.0.0.0`` for all; its port, or none; its version and group when the override names them).
    More specific overrides (a host, then a port) apply last, so they win."""
    changes: dict[str, object] = {}
    for o in sorted(overrides, key=lambda o: (o.host not in ("0.0.0.0", ""), o.port != 0)):
        if o.host not in ("0.0.0.0", "", inst.address) or o.port not in (0, inst.port):
            continue
        if o.params.get("version", inst.version) != inst.version or o.params.get("group", inst.group) != inst.group:
            continue
        if "weight" in o.params:
            changes["weight"] = weight_of(o.params["weight"])
        if o.params.get("disabled") in ("true", "false"):
            changes["health"] = Health.UNHEALTHY if o.params["disabled"] == "true" else Health.HEALTHY
    if not changes:
        return inst
    return ServiceInstance.from_dict({**inst.to_dict(), **changes})


def _instance_id(url: ProviderUrl) -> str:
    given = url.params.get(ID_PARAM, "")
    if given and not _BAD_ID.search(given):
        return given
    return _BAD_ID.sub("_", f"{url.host}:{url.port}")


def interface_of(service: str) -> str:
    """The interface of a model service name (``interface`` or SOFA's ``interface:version[:uniqueId]``)."""
    return service.split(":", 1)[0]


def sofa_service_name(interface: str, version: str, unique_id: str) -> str:
    """SOFA's unique service name, which Bolt requests carry and sidecars route on."""
    return f"{interface}:{version}" + (f":{unique_id}" if unique_id else "")


def from_node(layout: str, node_name: str, data: bytes = b"") -> tuple[Service, ServiceInstance] | None:
    """The service and instance a provider node stands for; ``None`` for anything else
    (``empty://``, consumers, unparsable names, a ``category`` other than providers)."""
    url = parse_url(java_decode(node_name))
    if url is None or url.scheme in ("empty", "consumer", "override", "route", "condition"):
        return None
    p = url.params
    if p.get("category", "providers") != "providers" or p.get("side", "provider") != "provider":
        return None
    interface = p.get("interface") or url.path
    try:
        if layout == "dubbo":
            protocol = "dubbo" if url.scheme == "dubbo" else ("triple" if url.scheme == "tri" else "tcp")
            fields = dubbo_fields(p, _OURS)
            version, group, weight, healthy, labels = (fields.version, fields.group, fields.weight, fields.enabled,
                                                       fields.labels)
        else:
            protocol = {"bolt": "bolt", "h2c": "grpc", "rest": "http", "dubbo": "dubbo", "tri": "triple"}.get(
                url.scheme, "tcp")
            version, group, weight = p.get("version", ""), p.get("uniqueId", ""), weight_of(p.get("weight"))
            healthy = data != b"\x00"
            labels = {k: v for k, v in p.items() if k not in _SOFA_FIELDS}
        labels["protocol"] = url.scheme
        name = interface if layout == "dubbo" else sofa_service_name(interface, p.get("version", "1.0"), group)
        if interface_of(p.get(SERVICE_PARAM, "")) == interface:
            name = p[SERVICE_PARAM]
        service = Service(name=name, protocol=protocol)
        inst = ServiceInstance(service=name, id=_instance_id(url), address=url.host, port=url.port,
                               weight=weight, labels=labels, version=version, group=group,
                               health=Health.HEALTHY if healthy else Health.UNHEALTHY)
    except ValueError:  # ConfigError: a name or address the model does not accept
        return None
    return service, inst


_SCHEMES: Mapping[str, str] = {"dubbo": "dubbo", "bolt": "bolt", "grpc": "h2c", "http": "rest", "triple": "tri"}


def to_url(layout: str, service: Service, inst: ServiceInstance, *, application: str = "sofamesh",
           pid: int = 0, now_ms: int | None = None, dynamic: bool = True) -> tuple[str, bytes]:
    """The provider URL (decoded) and node data that register ``inst`` the way Java/Node clients do
    (``dynamic=false``: a persistent node, as Dubbo writes it then).

    Labels become parameters (``protocol`` picks the scheme); model fields override labels.
    """
    labels = dict(inst.labels)
    interface = interface_of(inst.service)
    scheme = labels.pop("protocol", "") or _SCHEMES.get(service.protocol, layout if layout == "dubbo" else "bolt")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    params: dict[str, str] = {}
    if layout == "dubbo":
        params.update({"anyhost": "false", "application": application, "deprecated": "false", "dubbo": "2.0.2",
                       "dynamic": str(dynamic).lower(), "generic": "false", "pid": str(pid), "side": "provider",
                       "timestamp": str(now_ms)})
        params.update(labels)
        params["interface"] = interface
        if inst.version:
            params["version"] = inst.version
        if inst.group:
            params["group"] = inst.group
        if inst.health is not Health.HEALTHY:
            params["enabled"] = "false"
        params["weight"] = str(inst.weight)
        params[ID_PARAM] = inst.id
        if inst.service != interface:
            params[SERVICE_PARAM] = inst.service
        # Dubbo's URL.toFullString writes parameters sorted by name.
        url = ProviderUrl(scheme, inst.address, inst.port, interface, dict(sorted(params.items())))
        return url.format(), inst.address.encode()
    params.update({"startTime": str(now_ms), "pid": str(pid), "uniqueId": inst.group,
                   "version": inst.version or "1.0", "dynamic": str(dynamic).lower(), "appName": application})
    params.update(labels)
    params.update({"interface": interface, "uniqueId": inst.group, "weight": str(inst.weight),
                   ID_PARAM: inst.id})
    if inst.version:
        params["version"] = inst.version
    if inst.service != sofa_service_name(interface, params["version"], inst.group):
        params[SERVICE_PARAM] = inst.service
    url = ProviderUrl(scheme, inst.address, inst.port, "", params)
    return url.format(), (b"\x01" if inst.health is Health.HEALTHY else b"\x00")


def node_name(url: str) -> str:
    """The child name a provider URL is stored under."""
    return java_encode(url)


__all__ = ["DEFAULT_ROOTS", "LAYOUTS", "ProviderUrl", "apply_overrides", "from_node", "interface_of", "java_decode",
           "java_encode", "node_name", "parse_override", "parse_url", "sofa_service_name", "to_url"]
