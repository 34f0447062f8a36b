"""The rate limit service's descriptor tree: the most specific node wins."""

from __future__ import annotations

import pytest

from sofamesh.ratelimit.server import find_limit, load_config

CONFIG = """
domain: shop
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: user
    value: vip
    rate_limit: {unit: minute, requests_per_unit: 1000}
  - key: service
    value: orders
    descriptors:
      - key: method
        value: create
        rate_limit: {unit: second, requests_per_unit: 5}
"""


def test_an_exact_value_beats_a_key_only_node_and_nested_entries_walk_the_tree() -> None:
    tree = load_config(CONFIG)["shop"]
    assert find_limit(tree, [("user", "ann")]).requests_per_unit == 10  # type: ignore[union-attr]
    assert find_limit(tree, [("user", "vip")]).requests_per_unit == 1000  # type: ignore[union-attr]
    nested = find_limit(tree, [("service", "orders"), ("method", "create")])
    assert nested is not None and (nested.unit, nested.requests_per_unit) == ("second", 5)
    assert find_limit(tree, [("service", "orders")]) is None  # the node has no limit of its own
    assert find_limit(tree, [("service", "orders"), ("method", "list")]) is None
    assert find_limit(tree, [("tenant", "x")]) is None


def test_a_bad_unit_names_its_place() -> None:
    with pytest.raises(ValueError, match=r"shop\.descriptors\[0\]\.rate_limit\.unit: unknown unit 'fortnight'"):
        load_config("domain: shop\ndescriptors: [{key: a, rate_limit: {unit: fortnight, requests_per_unit: 1}}]")
