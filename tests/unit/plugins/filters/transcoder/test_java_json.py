"""JSON values to Hessian by declared Java type (checked by npm hessian.js decoding what the writer
writes), results back to JSON, and the 400 errors naming the argument and the expected type."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from sofamesh.core.hessian import HessianReader, JavaLong, JavaObject, encode
from sofamesh.plugins.filters.transcoder import ArgumentError, dubbo_descriptor, to_hessian, to_json
from tests.unit.core.hessian.hessian_js import HessianJs, require_hessian_js


@pytest.fixture(scope="module")
def hessian_js() -> Iterator[HessianJs]:
    peer = HessianJs(require_hessian_js())
    yield peer
    peer.close()


def test_descriptors_follow_the_jvm_spelling_dubbo_sends() -> None:
    assert dubbo_descriptor(["java.lang.String", "int", "long[]", "com.example.User", "java.lang.String[]"]) == (
        "Ljava/lang/String;I[JLcom/example/User;[Ljava/lang/String;"
    )
    assert dubbo_descriptor([]) == ""


@pytest.mark.parametrize(
    ("java_type", "value", "expected"),
    [
        ("java.lang.String", "héllo 😀", {"$class": "java.lang.String", "$": "héllo 😀"}),
        ("int", 7, 7),
        ("java.lang.Integer", None, None),
        ("long", "9007199254740993", "9007199254740993"),  # a long beyond 2**53 as a string: every digit kept
        ("java.lang.Long", 12, 12),
        ("double", 1.25, 1.25),
        ("boolean", True, {"$class": "boolean", "$": True}),
        ("java.math.BigDecimal", "12.50", {"$class": "java.math.BigDecimal", "$": {"value": "12.50"}}),
        ("java.util.Date", "2024-05-01T10:00:00Z", {"$date": 1714557600000}),
        ("java.util.Date", 1714557600123, {"$date": 1714557600123}),
        ("java.util.List", [1, "a", None], [1, "a", None]),
        ("java.util.Map", {"k": [1, 2]}, {"$class": "java.util.HashMap", "$": {"k": [1, 2]}}),
        (
            "com.example.User",
            {"name": "bob", "age": 30, "tags": ["x"]},
            {"$class": "com.example.User", "$": {"name": "bob", "age": 30, "tags": ["x"]}},
        ),
        ("int[]", [1, 2, 3], {"$class": "[int", "$": [1, 2, 3]}),
    ],
)
def test_hessian_js_reads_each_declared_type_as_java_would(
    hessian_js: HessianJs, java_type: str, value: object, expected: object
) -> None:
    decoded, _ = hessian_js.decode(encode(to_hessian("arg", java_type, value)), 1)
    if java_type == "java.lang.String":  # hessian.js types only some values; a string comes plain
        expected = value
    assert decoded == [expected]


@pytest.mark.parametrize(
    ("java_type", "value", "found"),
    [
        ("int", "abc", "string 'abc'"),
        ("int", 2**31, "number 2147483648"),
        ("int", None, "null"),
        ("long", 1.5, "number 1.5"),
        ("boolean", 1, "number 1"),
        ("java.lang.String", [1], "array"),
        ("java.util.Date", "yesterday", "string 'yesterday'"),
        ("java.math.BigDecimal", "1,5", "string '1,5'"),
        ("java.util.List", {"a": 1}, "object"),
        ("com.example.User", "bob", "string 'bob'"),
        ("int[]", [1, "x"], "string 'x'"),
    ],
)
def test_a_value_that_does_not_fit_names_the_argument_and_the_type(java_type: str, value: object, found: str) -> None:
    with pytest.raises(ArgumentError) as info:
        to_hessian("user", java_type, value)
    assert info.value.status_hint == 400
    assert java_type.removesuffix("[]") in str(info.value) and found in str(info.value)
    assert "'user" in str(info.value)


def test_results_come_back_as_json_the_way_jackson_writes_them(hessian_js: HessianJs) -> None:
    data, _ = hessian_js.encode(
        [
            {
                "$class": "com.example.User",
                "$": {
                    "name": "bob",
                    "age": {"$class": "int", "$": 30},
                    "balance": {"$class": "java.math.BigDecimal", "$": {"value": "10.25"}},
                    "born": {"$date": 86400000},
                    "photo": {"$bytes": "00ff"},
                    "ids": [{"$class": "long", "$": 5}],
                    "big": {"$class": "long", "$": "9223372036854775807"},
                },
            }
        ]
    )
    assert to_json(HessianReader(data).read()) == {
        "name": "bob",
        "age": 30,
        "balance": "10.25",
        "born": 86400000,
        "photo": "AP8=",
        "ids": [5],
        "big": "9223372036854775807",
    }


def test_what_to_hessian_writes_reads_back_to_the_same_json() -> None:
    user = to_hessian("u", "com.example.User", {"name": "ann", "n": 2**40, "when": None})
    assert user == JavaObject("com.example.User", {"name": "ann", "n": JavaLong(2**40), "when": None})
    assert to_json(HessianReader(encode(user)).read()) == {"name": "ann", "n": 2**40, "when": None}
    when = to_hessian("d", "java.util.Date", "2024-05-01T12:00:00+02:00")
    assert when == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
