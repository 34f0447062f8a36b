"""The eureka-cluster adapter's copy of an Eureka registry: full fetch, deltas, hashcode reconciliation."""

from __future__ import annotations

from typing import Any

import pytest

from sofamesh.core.errors import PluginError
from sofamesh.plugins.registries.eureka.adapter import Mirror


def inst(iid: str, status: str = "UP", app: str = "HELLO", **extra: Any) -> dict[str, Any]:
    return {
        "instanceId": iid,
        "hostName": "127.0.0.1",
        "ipAddr": "127.0.0.1",
        "app": app,
        "status": status,
        "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"name": "MyOwn"},
        **extra,
    }


def apps(rows: dict[str, list[dict[str, Any]]], hashcode: str) -> dict[str, Any]:
    return {
        "applications": {
            "versions__delta": "1",
            "apps__hashcode": hashcode,
            "application": [{"name": n, "instance": i} for n, i in rows.items()],
        }
    }


def test_full_fetch_replaces_the_copy_and_names_the_changed_apps() -> None:
    m = Mirror()
    assert m.replace_all(apps({"HELLO": [inst("a"), inst("b", "DOWN")]}, "")) == {"HELLO"}
    assert m.hashcode() == "DOWN_1_UP_1_"
    assert m.replace_all(apps({"HELLO": [inst("a"), inst("b", "DOWN")]}, "")) == set()
    assert m.replace_all(apps({"OTHER": [inst("c", app="OTHER")]}, "")) == {"HELLO", "OTHER"}
    assert set(m.apps) == {"OTHER"}


def test_delta_added_modified_deleted_and_the_hashcode_matches() -> None:
    m = Mirror()
    m.replace_all(apps({"HELLO": [inst("a"), inst("b")]}, ""))
    delta = apps(
        {
            "HELLO": [
                inst("c", actionType="ADDED"),
                inst("a", "DOWN", actionType="MODIFIED"),
                inst("b", actionType="DELETED"),
            ],
            "NEW": [inst("n", app="NEW", actionType="ADDED")],
        },
        "DOWN_1_UP_2_",
    )
    changed, same = m.apply_delta(delta)
    assert changed == {"HELLO", "NEW"} and same
    assert set(m.apps["HELLO"]) == {"a", "c"} and m.apps["HELLO"]["a"]["status"] == "DOWN"
    assert "actionType" not in m.apps["HELLO"]["c"]
    # the same delta again changes nothing and still reconciles
    assert m.apply_delta(delta) == (set(), True)


def test_delta_that_does_not_reconcile_reports_a_mismatch() -> None:
    m = Mirror()
    m.replace_all(apps({"HELLO": [inst("a")]}, ""))
    # the server holds an instance the client never saw (a delta that left the queue): UP_2_
    changed, same = m.apply_delta(apps({"HELLO": [inst("b", actionType="ADDED")]}, "UP_3_"))
    assert changed == {"HELLO"} and not same
    # a full fetch then reconciles
    m.replace_all(apps({"HELLO": [inst("a"), inst("b"), inst("x")]}, ""))
    assert m.hashcode() == "UP_3_"


def test_deleting_the_last_instance_drops_the_app_and_single_objects_are_accepted() -> None:
    m = Mirror()
    one = {"applications": {"apps__hashcode": "UP_1_", "application": {"name": "HELLO", "instance": inst("a")}}}
    assert m.replace_all(one) == {"HELLO"}
    changed, same = m.apply_delta(apps({"HELLO": [inst("a", actionType="DELETED")]}, ""))
    assert changed == {"HELLO"} and same and m.apps == {}


def test_a_document_that_is_not_applications_is_an_error() -> None:
    with pytest.raises(PluginError, match="applications"):
        Mirror().apply_delta({"nope": 1})
