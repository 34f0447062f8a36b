"""Fuzz targets for what configures the mesh rather than carries its traffic: the sidecar's xDS
translation (an Envoy resource from a DiscoveryResponse -> the proxy's config), the proxy's YAML
loader and ``check-config``, Pilot's policy validation (Istio and Aeraki resources in multi-document
YAML, then the xDS Pilot generates from what it accepted) and the Open Service Registry API's inputs.

Each must turn any input into the project's own error (a ``MeshError``: ``ConfigError`` /
``ConfigErrors`` naming the field, or a rejected policy document's issues); any other exception is a
bug, because the sidecar would drop its xDS stream instead of NACKing, ``check-config`` would print
a traceback, and Pilot's API would answer 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2

from fuzz.structured import Builder, vocabulary
from sofamesh.core.config.check import check_mapping
from sofamesh.core.config.loader import from_mapping, parse_yaml
from sofamesh.core.config.model import ProxyConfig
from sofamesh.core.errors import ConfigError, MeshError
from sofamesh.core.plugin_host import PluginHost
from sofamesh.core.xds.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Translated,
    assemble,
    decode,
    translate,
)
from sofamesh.pilot.api import bodies
from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.policy.documents import parse_stream
from sofamesh.pilot.policy.kinds import KINDS
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.store import StoredDocument
from sofamesh.pilot.xds.generator import NodeInfo, XdsGenerator
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed

# The first input byte of an xDS input chooses the resource type (and whether routes must name
# known clusters); the rest is the resource as it travels in a DiscoveryResponse's Any.
XDS_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)
PROTOCOLS = ("http1", "http2", "bolt", "dubbo", "thrift", "tcp")
MAX_TEXT = 64 * 1024  # a policy or config document larger than this is not what these targets test

# A workload that is meshed (mTLS, its own instances), so Pilot's inbound generators run too.
MESHED = {"security.istio.io/tlsMode": "istio", "sofamesh.io/service-account": "provider", "app": "echo"}
NODE = NodeInfo("p1", user_agent="sofamesh/1", metadata={"sofamesh.mtls": True, "sofamesh.instances": "e1,b1,d1"})
DUBBO_SERVICE = "org.apache.dubbo.samples.basic.api.demoservice"
ROOT = Path(__file__).resolve().parent.parent
# An input starting with this byte is not YAML text (a NUL is refused before the first document)
# but a structured value built from the rest (fuzz/structured.py), handed to the validation as the
# parsed YAML would be: every execution reaches the validation.
STRUCTURED = 0


@cache
def _proxy_words() -> tuple[str, ...]:
    return vocabulary(p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml")))


@cache
def _policy_words() -> tuple[str, ...]:
    from tests.unit.pilot.xds.test_security_generation import AUTHZ

    texts = [p.read_text() for p in sorted((ROOT / "tests" / "data").glob("*/*.yaml"))]
    return vocabulary([*texts, AUTHZ])


@cache
def pilot_generators() -> list[tuple[str, XdsGenerator]]:
    """Every xDS generator Pilot registers (its own and the installed protocol plugins')."""
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.app import pilot_host

    host = pilot_host()
    host.load_all()
    catalog: Catalog[XdsGenerator] = Catalog("xds generator")
    host.fill("pilot_register_xds_generators", catalog)
    return list(catalog.items())


@cache
def mesh() -> MeshModel:
    """Bookinfo's reviews and ratings, Aeraki's Dubbo sample and a meshed HTTP / Bolt workload."""
    insts = [ServiceInstance("reviews", f"r{v}", "127.0.0.1", 9000 + v, labels={"version": f"v{v}"}) for v in (1, 2, 3)]
    insts += [ServiceInstance("ratings", "ra1", "127.0.0.1", 9101, labels={"version": "v1"})]
    insts += [
        ServiceInstance(DUBBO_SERVICE, f"d{v}", "127.0.0.2", 20880 + v, labels={**MESHED, "version": f"v{v}"})
        for v in (1, 2)
    ]
    insts += [
        ServiceInstance("echo", "e1", "127.0.0.2", 8080, labels=MESHED),
        ServiceInstance(
            "com.acme.Echo:1.0", "b1", "127.0.0.2", 12200, labels={**MESHED, "sofamesh.io/app-port": "12201"}
        ),
    ]
    services = [
        Service("reviews", ports=(9080,)),
        Service("ratings", ports=(9080,)),
        Service(DUBBO_SERVICE, "dubbo", ports=(20880,)),
        Service("echo", ports=(8080,)),
        Service("com.acme.Echo:1.0", "bolt", ports=(12200,)),
    ]
    model = MeshModel([Fixed(services, insts)])
    model.refresh()
    return model


def generate(applied: AppliedPolicy) -> list[Any]:
    """The resources Pilot would send ``NODE`` under ``applied`` policy."""
    out: list[Any] = []
    for _name, gen in pilot_generators():
        use_policy = getattr(gen, "use_policy", None)
        if callable(use_policy):
            use_policy(applied)
        out += [r.message for r in gen.generate(mesh(), NODE)]
    return out


# -- the sidecar's xDS translation ------------------------------------------------------------------
@cache
def _xds_base() -> ProxyConfig:
    return from_mapping({"admin": {"address": "127.0.0.1:0"}})


def xds_translation(data: bytes) -> None:
    if not data:
        return
    url = XDS_TYPES[data[0] % len(XDS_TYPES)]
    any_msg = any_pb2.Any(type_url=url, value=data[1:])
    try:
        msg = decode(url, any_msg)
        out = translate(url, msg, PROTOCOLS)
        if out is None:  # not for this proxy (an API listener): ignored, as the client does
            return
        state = Translated()
        name = str(msg.cluster_name if url == ENDPOINT_TYPE else msg.name) or "r"
        {
            LISTENER_TYPE: state.listeners,
            ROUTE_TYPE: state.routes,
            CLUSTER_TYPE: state.clusters,
            ENDPOINT_TYPE: state.endpoints,
        }[url][name] = out
        assemble(_xds_base(), state, check_route_clusters=bool(data[0] & 0x80))
    except MeshError:
        pass


# -- the proxy's YAML loader and check-config --------------------------------------------------------
@cache
def _proxy_host() -> PluginHost:
    from sofamesh.core.build import proxy_host

    return proxy_host()


def proxy_yaml(data: bytes) -> None:
    if data[:1] == bytes([STRUCTURED]):
        mapping = Builder(data[1:MAX_TEXT], _proxy_words()).mapping(0)
    else:
        try:
            mapping = parse_yaml(data[:MAX_TEXT].decode("utf-8", "replace"), "fuzz.yaml")
        except MeshError:
            return
    errors = check_mapping(mapping, _proxy_host())
    try:
        from_mapping(mapping)
    except MeshError:
        if not errors:
            raise AssertionError("check-config passed a config the loader refuses") from None


# -- Pilot's policy validation -----------------------------------------------------------------------
def _built_documents(data: bytes) -> list[StoredDocument]:
    """Up to four documents of any known kind (the first bytes choose kind and version), with
    metadata and spec built from the rest."""
    b = Builder(data, _policy_words())
    docs: list[StoredDocument] = []
    while not b.done() and len(docs) < 4:
        kind = KINDS[b.byte() % len(KINDS)]
        version = kind.versions[b.byte() % len(kind.versions)]
        meta: Any = {"name": b.word()} if b.byte() & 1 else b.value(1)
        body = {"apiVersion": f"{kind.group}/{version}", "kind": kind.kind, "metadata": meta, "spec": b.value(1)}
        docs.append(StoredDocument(Source("fuzz", len(docs) + 1), body))
    return docs


def policy(data: bytes) -> None:
    if data[:1] == bytes([STRUCTURED]):
        docs = _built_documents(data[1:MAX_TEXT])
    else:
        docs = [
            StoredDocument(Source("fuzz.yaml", d.document, d.line, d.lines), d.body)
            for d in parse_stream(data[:MAX_TEXT].decode("utf-8", "replace"))
            if d.problem is None
        ]
    model = PolicyModel()
    model.sync(docs)
    for verdict in model.rejections():
        verdict.lines()  # every issue can be described
    if model.resources():  # what Pilot accepted, it can serve (with nothing accepted, nothing new to serve)
        generate(AppliedPolicy(model, "cluster.local"))


# -- the Open Service Registry API -------------------------------------------------------------------
_EXISTING = Service("existing", "dubbo", ports=(20880,), metadata={"owner": "team"})


def osr_api(data: bytes) -> None:
    """First byte: which input (0: a registration body, 1: a service or instance id in the path,
    2: ``wait``, 3: ``index``; bit 0x80: the service already exists); the rest is the input."""
    if not data:
        return
    which, existing = data[0] % 4, _EXISTING if data[0] & 0x80 else None
    raw = data[1:]
    try:
        if which == 0:
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # as the API handler answers them
                raise ConfigError("body", f"not valid JSON: {exc}") from None
            svc, inst, _ttl = bodies.instance_from_body("existing", "i-1", body, "embedded", existing)
            json.dumps({"service": svc.to_dict(), "instance": inst.to_dict()}, default=str)
            return
        text = raw.decode("utf-8", "replace")
        if which == 1:
            bodies.check_id(text, "service" if data[0] & 0x40 else "id")
        elif which == 2:
            bodies.parse_wait(text)
        else:
            bodies.parse_index(text)
    except ConfigError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "xds_translation": xds_translation,
    "proxy_yaml": proxy_yaml,
    "policy": policy,
    "osr_api": osr_api,
}

__all__ = ["TARGETS", "generate", "mesh", "pilot_generators"]
