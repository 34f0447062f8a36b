"""Mesh policy: Istio's networking and security resources and Aeraki's MetaRouter, validated as
the Kubernetes API server and Istio's webhook would, kept in a config store, served over REST."""

from __future__ import annotations

from sofamesh.pilot.policy.kinds import KINDS, Kind, by_api_version, by_name, by_plural
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE, Resource, ResourceKey, Source
from sofamesh.pilot.policy.schema import Issue
from sofamesh.pilot.policy.store import ConfigStore, ConfigStoreContext, ConfigStoreFactory, StoredDocument
from sofamesh.pilot.policy.validate import Verdict, validate

__all__ = [
    "DEFAULT_NAMESPACE",
    "KINDS",
    "ConfigStore",
    "ConfigStoreContext",
    "ConfigStoreFactory",
    "Issue",
    "Kind",
    "PolicyModel",
    "Resource",
    "ResourceKey",
    "Source",
    "StoredDocument",
    "Verdict",
    "by_api_version",
    "by_name",
    "by_plural",
    "validate",
]
