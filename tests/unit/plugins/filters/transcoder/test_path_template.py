"""``google.api.http`` path templates: what matches, what each variable binds, how values are
decoded, and templates refused with the reason."""

from __future__ import annotations

import pytest

from sofamesh.plugins.filters.transcoder.path_template import TemplateError, parse_template, unescape


@pytest.mark.parametrize(
    ("template", "path", "bindings"),
    [
        ("/shelves", "/shelves", []),
        ("/shelves", "/shelves/1", None),
        ("/shelves/{shelf}", "/shelves/12", [("shelf", "12")]),
        ("/shelves/{shelf}", "/shelves/1/books", None),
        ("/shelves/{shelf}/books/{book.id}", "/shelves/1/books/b2", [("shelf", "1"), ("book.id", "b2")]),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2", [("name", "shelves/1/books/2")]),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books", None),
        ("/files/{path=**}", "/files/a/b/c.txt", [("path", "a/b/c.txt")]),
        ("/v1/{name=books/*}:publish", "/v1/books/7:publish", [("name", "books/7")]),
        ("/v1/{name=books/*}:publish", "/v1/books/7", None),
        ("/v1/{name}:cancel", "/v1/op:1:cancel", [("name", "op:1")]),
        ("/a/*/c", "/a/anything/c", []),
        ("/a/**", "/a/x/y/z", []),
    ],
)
def test_a_template_matches_paths_and_binds_its_variables(
    template: str, path: str, bindings: list[tuple[str, str]] | None
) -> None:
    assert parse_template(template).match(path) == bindings


def test_values_are_decoded_as_envoys_url_unescape_spec_says() -> None:
    t = parse_template("/x/{v}")
    assert t.match("/x/a%20b%2Fc%3Ad") == [("v", "a b%2Fc%3Ad")]  # reserved characters stay escaped by default
    assert t.match("/x/a%20b%2Fc%3Ad", "ALL_CHARACTERS_EXCEPT_SLASH") == [("v", "a b%2Fc:d")]
    assert t.match("/x/a%20b%2Fc%3Ad", "ALL_CHARACTERS") == [("v", "a b/c:d")]
    assert t.match("/x/h%C3%A9") == [("v", "hé")]
    many = parse_template("/x/{v=**}")
    assert many.match("/x/a/b%2Fc", "ALL_CHARACTERS") == [("v", "a/b%2Fc")]  # a multi-segment value keeps %2F
    assert unescape("%2523", "ALL_CHARACTERS") == "%23"  # decoded once


def test_literal_segments_rank_before_wildcards_and_a_verb_before_none() -> None:
    ranks = sorted(["/a/{x}", "/a/b", "/a/**", "/a/{x}:go"], key=lambda t: parse_template(t).rank)
    assert ranks == ["/a/b", "/a/{x}:go", "/a/{x}", "/a/**"]


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("shelves", "must start with '/'"),
        ("/a/{b", "'{' without '}'"),
        ("/a/b}", "'}' without '{'"),
        ("/a/{b{c}}", "a variable inside a variable"),
        ("/a/{1b}", "bad variable name '1b'"),
        ("/a/{b}/{b}", "variable 'b' twice"),
        ("/a/**x", "bad segment '**x'"),
        ("/a//b", "bad segment ''"),
        ("/a/b:", "bad verb ''"),
    ],
)
def test_a_bad_template_is_refused_with_the_reason(template: str, why: str) -> None:
    with pytest.raises(TemplateError) as exc:
        parse_template(template)
    assert (
        str(exc.value) == f"path template {template!r}: {why}" or str(exc.value) == f"path template {template!r} {why}"
    )
