"""The resource kinds Pilot serves: API group, versions, plural, short names, schema and webhook rules.

The one table that maps ``apiVersion`` + ``kind`` (or a REST path's group/version/plural, or a CLI
word such as ``vs``) to what validates the resource.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sofamesh.pilot.policy import credentials, metaprotocol, networking, security
from sofamesh.pilot.policy.schema import Obj, Report

SpecCheck = Callable[[str, str, Mapping[str, Any], Report], None]
"""(namespace, name, spec, report): the webhook rules of one kind."""

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
METAPROTOCOL = "metaprotocol.aeraki.io"
CORE = ""  # Kubernetes' core group (``apiVersion: v1``, REST under ``/api/v1``)
_NETWORKING_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_SECURITY_VERSIONS = ("v1", "v1beta1")


@dataclass(frozen=True, slots=True)
class Kind:
    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]
    schema: Obj
    check: SpecCheck
    short_names: tuple[str, ...] = ()
    top_level: bool = False
    """The object's fields sit beside ``metadata`` (a core kind: a Secret's ``type`` and ``data``),
    not under ``spec``; the resource keeps them as its ``spec``."""
    normalize: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    """The stored form of an admitted object's fields (a Secret's ``stringData`` merged into ``data``)."""
    redact: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    """What reads (REST, ``sofamesh get``) show of the fields (a Secret's private key hidden)."""

    @property
    def preferred_version(self) -> str:
        return self.versions[0]

    @property
    def qualified(self) -> str:
        """``virtualservice.networking.istio.io`` (as kubectl prints it); a core kind: ``secret``."""
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()

    def api_version(self, version: str | None = None) -> str:
        v = version or self.preferred_version
        return f"{self.group}/{v}" if self.group else v

    def api_path(self, version: str | None = None) -> str:
        """``/apis/GROUP/VERSION``, or ``/api/VERSION`` for the core group (Kubernetes' paths)."""
        v = version or self.preferred_version
        return f"/apis/{self.group}/{v}" if self.group else f"/api/{v}"


def _ns(check: Callable[[str, Mapping[str, Any], Report], None]) -> SpecCheck:
    return lambda namespace, name, spec, report: check(namespace, spec, report)


KINDS: tuple[Kind, ...] = (
    Kind(NETWORKING, "VirtualService", "virtualservices", _NETWORKING_VERSIONS, networking.VIRTUAL_SERVICE,
         _ns(networking.check_virtual_service), ("vs",)),
    Kind(NETWORKING, "DestinationRule", "destinationrules", _NETWORKING_VERSIONS, networking.DESTINATION_RULE,
         _ns(networking.check_destination_rule), ("dr",)),
    Kind(NETWORKING, "ServiceEntry", "serviceentries", _NETWORKING_VERSIONS, networking.SERVICE_ENTRY,
         _ns(networking.check_service_entry), ("se",)),
    Kind(NETWORKING, "Gateway", "gateways", _NETWORKING_VERSIONS, networking.GATEWAY, networking.check_gateway,
         ("gw",)),
    Kind(NETWORKING, "WorkloadEntry", "workloadentries", _NETWORKING_VERSIONS, networking.WORKLOAD_ENTRY,
         _ns(networking.check_workload_entry), ("we",)),
    Kind(SECURITY, "AuthorizationPolicy", "authorizationpolicies", _SECURITY_VERSIONS, security.AUTHORIZATION_POLICY,
         _ns(security.check_authorization_policy), ("ap",)),
    Kind(SECURITY, "PeerAuthentication", "peerauthentications", _SECURITY_VERSIONS, security.PEER_AUTHENTICATION,
         _ns(security.check_peer_authentication), ("pa",)),
    Kind(SECURITY, "RequestAuthentication", "requestauthentications", _SECURITY_VERSIONS,
         security.REQUEST_AUTHENTICATION, _ns(security.check_request_authentication), ("ra",)),
    Kind(METAPROTOCOL, "MetaRouter", "metarouters", ("v1alpha1",), metaprotocol.META_ROUTER,
         _ns(metaprotocol.check_meta_router), ("mr",)),
    Kind(CORE, "Secret", "secrets", ("v1",), credentials.SECRET, credentials.check_secret, (), top_level=True,
         normalize=credentials.normalize, redact=credentials.redacted),
)
_BY_KIND = {(k.group, k.kind): k for k in KINDS}
_BY_PLURAL = {(k.group, k.plural): k for k in KINDS}


def by_api_version(api_version: str, kind: str) -> Kind | None:
    """The kind an object's ``apiVersion``/``kind`` names, ``None`` when unknown (or the version is not served)."""
    group, _, version = api_version.rpartition("/")
    found = _BY_KIND.get((group, kind))
    return found if found is not None and version in found.versions else None


def by_plural(group: str, version: str, plural: str) -> Kind | None:
    found = _BY_PLURAL.get((group, plural))
    return found if found is not None and version in found.versions else None


def by_name(word: str) -> Kind | None:
    """A CLI word: ``VirtualService``, ``virtualservice``, ``virtualservices``, ``vs``, or qualified
    (``virtualservices.networking.istio.io``)."""
    name, _, group = word.lower().partition(".")
    for k in KINDS:
        if group and group != k.group:
            continue
        if name in (k.kind.lower(), k.plural, *k.short_names):
            return k
    return None


def known_kinds() -> str:
    return ", ".join(f"{k.group or k.api_version()}/{k.kind}" for k in KINDS)


__all__ = ["CORE", "KINDS", "METAPROTOCOL", "NETWORKING", "SECURITY", "Kind", "by_api_version", "by_name", "by_plural",
           "known_kinds"]
