"""VirtualService delegation merged as Istio's mergeVirtualServicesIfNeeded does it."""

from __future__ import annotations

from typing import Any

import pytest

from sofamesh.pilot.policy.delegate import delegated_http, has_conflict, merge_matches
from sofamesh.pilot.policy.resource import Resource


def _vs(ns: str, name: str, spec: dict[str, Any]) -> Resource:
    return Resource("networking.istio.io/v1", "VirtualService", ns, name, spec)


@pytest.mark.parametrize(
    ("root", "leaf", "conflict"),
    [
        ({"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/a/b"}}, False),
        ({"uri": {"prefix": "/a"}}, {"uri": {"exact": "/a/b"}}, False),
        ({"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/b"}}, True),
        ({"uri": {"exact": "/a"}}, {"uri": {"prefix": "/a"}}, True),
        ({"uri": {"exact": "/a"}}, {"uri": {"exact": "/a"}}, False),
        ({"uri": {"regex": "/a.*"}}, {"uri": {"prefix": "/a"}}, True),
        ({"uri": {"prefix": "/a"}}, {"uri": {"regex": "/a.*"}}, True),
        ({"headers": {"x": {"exact": "1"}}}, {"headers": {"x": {"exact": "2"}}}, True),
        ({"headers": {"x": {"exact": "1"}}}, {"headers": {"y": {"exact": "2"}}}, False),
        ({"port": 80}, {"port": 8080}, True),
        ({"sourceLabels": {"app": "a"}}, {"sourceLabels": {"app": "b"}}, True),
        ({"sourceNamespace": "a"}, {"sourceNamespace": "b"}, True),
        ({"gateways": ["mesh"]}, {"gateways": ["mesh", "gw"]}, True),
        ({"ignoreUriCase": True}, {}, True),
        ({}, {"uri": {"prefix": "/x"}}, False),
    ],
)
def test_conflicts_follow_istio(root: dict[str, Any], leaf: dict[str, Any], conflict: bool) -> None:
    assert has_conflict(root, leaf) is conflict


def test_matches_merge_root_and_delegate_fields() -> None:
    merged = merge_matches(
        [{"name": "r", "uri": {"prefix": "/a"}, "headers": {"x": {"exact": "1"}}}, {"uri": {"prefix": "/b"}}],
        [{"name": "d", "uri": {"prefix": "/a/1"}, "headers": {"y": {"exact": "2"}}}],
    )
    assert merged == [
        {"name": "r-d", "uri": {"prefix": "/a/1"}, "headers": {"x": {"exact": "1"}, "y": {"exact": "2"}}}
    ]  # /b conflicts: left out
    assert merge_matches([{"uri": {"prefix": "/a"}}], [{"uri": {"prefix": "/b"}}]) is None
    assert merge_matches([], [{"port": 80}]) == [{"port": 80}]
    assert merge_matches([{"port": 80}], []) == [{"port": 80}]


def test_a_delegating_route_is_replaced_by_the_delegates_routes() -> None:
    delegate = _vs(
        "team",
        "d",
        {
            "http": [
                {"name": "one", "match": [{"uri": {"prefix": "/a/1"}}], "route": [{"destination": {"host": "web"}}]},
                {"name": "bad", "match": [{"uri": {"prefix": "/z"}}], "route": [{"destination": {"host": "web"}}]},
                {"route": [{"destination": {"host": "other.example.com"}}], "timeout": "2s"},
            ]
        },
    )
    hidden = _vs("team", "hidden", {"exportTo": ["."], "http": [{"route": [{"destination": {"host": "web"}}]}]})
    root = _vs(
        "default",
        "root",
        {
            "hosts": ["web"],
            "http": [
                {
                    "name": "r",
                    "match": [{"uri": {"prefix": "/a"}}],
                    "timeout": "5s",
                    "retries": {"attempts": 1},
                    "delegate": {"name": "d", "namespace": "team"},
                },
                {"match": [{"uri": {"prefix": "/h"}}], "delegate": {"name": "hidden", "namespace": "team"}},
                {"match": [{"uri": {"prefix": "/m"}}], "delegate": {"name": "missing"}},
                {"route": [{"destination": {"host": "web"}}]},
            ],
        },
    )
    found = {("team", "d"): delegate, ("team", "hidden"): hidden}
    routes = delegated_http(root, lambda ns, name: found.get((ns, name)) if (ns, name) != ("team", "hidden") else None)
    assert [r.get("name") for r in routes] == ["r-one", "r", None]
    one, catch_all, last = routes
    assert one["match"] == [{"uri": {"prefix": "/a/1"}}]
    assert one["route"][0]["destination"]["host"] == "web.team.svc.cluster.local"  # the delegate's namespace
    assert (one["timeout"], one["retries"]) == ("5s", {"attempts": 1})  # inherited from the root route
    assert catch_all["match"] == [{"uri": {"prefix": "/a"}}] and catch_all["timeout"] == "2s"
    assert catch_all["route"][0]["destination"]["host"] == "other.example.com"
    assert last == root.spec["http"][3]
    assert delegate.spec["http"][0]["route"][0]["destination"]["host"] == "web"  # the stored one unchanged
