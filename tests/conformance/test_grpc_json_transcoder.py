"""HTTP/JSON through a sidecar route with the ``grpc_json_transcoder`` filter to a real grpcio server
(stubs and descriptor set compiled by grpcio-tools at test time): path templates with variables,
body ``*`` and a field, query parameters, print options, server streaming, gRPC status to HTTP
status, and requests the rules do not cover passed through to the server untouched."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.peers.grpc.bookstore_build import build
from tests.conformance.test_http2_peers import Peer, start_peer, stop_peer

SERVER = Path(__file__).parent / "peers" / "grpc" / "bookstore_server.py"
SERVICE = "bookstore.Bookstore"
EXTRAS = "bookstore.Extras"  # response_body on a plain field: only sofamesh transcodes it


def _route(descriptor: Path, header: str | None = None, **config: Any) -> dict[str, Any]:
    match: dict[str, Any] = {"path": {"prefix": "/"}}
    if header:
        match["headers"] = {"x-print": {"exact": header}}
    return {
        "match": match,
        "cluster": "bookstore",
        "timeout_ms": 3000,
        "filters": [
            {
                "type": "grpc_json_transcoder",
                "config": {"proto_descriptor": str(descriptor), "services": [SERVICE, EXTRAS], **config},
            }
        ],
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    descriptor = build(tmp_path_factory.mktemp("bookstore"))
    peer: Peer = start_peer([sys.executable, str(SERVER)], timeout=60)
    listen = f"127.0.0.1:{free_port()}"
    config = {
        "listeners": [
            {
                "name": "edge",
                "address": listen,
                "protocols": ["http1", "http2"],
                "routes": [
                    _route(
                        descriptor,
                        "pretty",
                        print_options={
                            "add_whitespace": True,
                            "always_print_primitive_fields": True,
                            "always_print_enums_as_ints": True,
                            "preserve_proto_field_names": True,
                        },
                    ),
                    _route(descriptor, "lines", print_options={"stream_newline_delimited": True}),
                    _route(
                        descriptor,
                        "strict",
                        request_validation_options={
                            "reject_unknown_method": True,
                            "reject_unknown_query_parameters": True,
                        },
                        ignored_query_parameters=["api_key"],
                    ),
                    _route(descriptor, "lenient", ignore_unknown_query_parameters=True),
                    {**_route(descriptor, "small", max_request_body_size=64, max_response_body_size=100)},
                    {**_route(descriptor, "quick"), "timeout_ms": 300},
                    _route(descriptor),
                ],
            }
        ],
        "clusters": [{"name": "bookstore", "protocol": "http2", "endpoints": [f"127.0.0.1:{peer.port}"]}],
    }
    try:
        with ProxyProcess(config) as proxy, httpx.Client(base_url=f"http://{listen}", timeout=10) as client:
            yield {"proxy": proxy, "client": client, "listen": listen, "descriptor": descriptor, "peer": peer}
    finally:
        stop_peer(peer)


def test_path_variables_body_field_and_star_become_the_request_message(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.get("/shelves/2")
    assert (r.status_code, r.headers["content-type"], r.json()) == (
        200,
        "application/json",
        {"id": "2", "theme": "history"},
    )
    r = c.post("/shelves", json={"theme": "poetry"})  # body: "shelf"
    assert r.json() == {"id": "106", "theme": "poetry"}
    book = {
        "title": "Kindred",
        "author": "butler",
        "pageCount": 264,
        "genre": "FICTION",
        "tags": ["sf"],
        "price": 12.5,
        "inPrint": True,
        "published": "1979-06-01T00:00:00Z",
        "isbn": "9780807083697",
    }
    r = c.post("/shelves/1/books", json=book)  # body: "book", shelf from the path
    assert r.status_code == 200, r.text
    assert r.json() == {**book, "name": "shelves/1/books/9"}
    r = c.put("/v2/shelves/7/books", json={"book": {"title": "t"}, "shelf": "3"})  # additional binding, body "*"
    assert r.json() == {"name": "shelves/3/books/9", "title": "t"}  # the body wins over the path, as in Envoy
    # a nested field from a multi-segment variable, with an escaped slash kept escaped
    r = c.patch("/v1/shelves/1/books/a%2Fb", json={"title": "new"})
    assert r.json() == {"name": "shelves/1/books/a%2Fb", "title": "new"}
    r = c.post("/v1/shelves/4/books/5:publish")  # a custom verb after the template
    assert r.json() == {"name": "shelves/4/books/5", "inPrint": True}
    r = c.request(
        "REPORT",
        "/echo/h%C3%A9llo%20there",
        json={"labels": {"k": "v"}, "numbers": ["1", 2], "blob": base64.b64encode(b"\x00\xff").decode()},
        headers={"x-client-tag": "tag-1"},
    )  # a custom HTTP method; metadata goes through
    assert r.status_code == 200, r.text
    assert r.json() == {
        "text": "héllo there",
        "labels": {"k": "v"},
        "numbers": ["1", "2"],
        "blob": "AP8=",
        "metadata": "tag-1 /echo/h%C3%A9llo%20there",
    }


def test_query_parameters_fill_fields_repeated_and_nested(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.get(
        "/shelves/1/items", params=[("tags", "sf"), ("tags", "classic")]
    )  # response_body: "books" (bookstore.Extras)
    assert [b["title"] for b in r.json()] == ["The Dispossessed"]
    r = c.get("/shelves/1/items", params={"filter.in_print": "false", "pageSize": "5"})
    assert [b["title"] for b in r.json()] == ["Solaris"]
    assert r.json()[0]["isbn"] == str(2**60)  # int64 as a JSON string, as proto3 JSON prints it
    r = c.get("/shelves/1/items?author=lem&page_size=1")
    assert [b["author"] for b in r.json()] == ["lem"]
    # a parameter naming no field: the request is not transcoded but passed through, as Envoy does
    # (the gRPC server resets a plain GET); refused with reject_unknown_query_parameters
    r = c.get("/shelves/1/items", params={"nope": "1"})
    assert r.status_code >= 500 and r.headers.get("content-type") != "application/json", r.text
    r = c.get("/shelves/1/items", params={"nope": "1"}, headers={"x-print": "strict"})
    assert r.status_code == 400
    assert r.json()["code"] == 3 and "nope" in r.json()["message"], r.text
    r = c.get("/shelves/1/items", params={"nope": "1", "author": "lem"}, headers={"x-print": "lenient"})
    assert [b["author"] for b in r.json()] == ["lem"]
    r = c.get("/shelves/1/items", params={"api_key": "k", "author": "lem"}, headers={"x-print": "strict"})
    assert [b["author"] for b in r.json()] == ["lem"]
    r = c.get("/shelves/1/items", params={"filter.in_print": "maybe"})
    assert r.status_code == 400 and "expected true or false" in r.json()["message"]


def test_print_options_and_server_streaming(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.get("/shelves/2/items", headers={"x-print": "pretty"})
    assert r.text.startswith("[\n  {\n")  # add_whitespace
    (book,) = r.json()
    assert book["page_count"] == 608 and book["genre"] == 2  # proto names, enums as ints
    assert book["in_print"] is False and book["tags"] == [] and book["price"] == 0  # primitives printed
    r = c.get("/search/s")  # server streaming: a JSON array
    assert [b["title"] for b in r.json()] == ["The Dispossessed", "Solaris", "SPQR"]
    r = c.get("/search/s", params={"limit": "2"}, headers={"x-print": "lines"})
    lines = r.text.splitlines()
    assert len(lines) == 2 and httpx.Response(200, content=lines[1]).json()["title"] == "Solaris"
    r = c.get("/search/nothing-matches")
    assert (r.status_code, r.json()) == (200, [])
    r = c.get("/shelves")  # google.protobuf.Empty in, a message with a repeated field out
    assert r.json() == {"shelves": [{"id": "1", "theme": "fiction"}, {"id": "2", "theme": "history"}]}


def test_http_body_messages_carry_raw_bytes_and_their_content_type(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'>\xe2\x98\x83</svg>"
    r = c.put("/shelves/5/cover", content=svg, headers={"content-type": "image/svg+xml"})
    assert r.json() == {"id": "5", "theme": f"image/svg+xml {len(svg)}"}  # the bytes as sent, not JSON
    r = c.get("/shelves/5/cover")
    assert (r.status_code, r.headers["content-type"], r.content) == (200, "image/svg+xml", svg)


def test_client_and_bidi_streaming_take_a_json_array(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.post("/books:batch", json=[{"title": "a", "pageCount": 1}, {"title": "b"}])
    assert r.json() == {"books": [{"title": "a", "pageCount": 1}, {"title": "b"}], "nextPageToken": "2"}
    r = c.post("/books:batch", json={"title": "one"})  # one object: one message
    assert [b["title"] for b in r.json()["books"]] == ["one"]
    r = c.post("/books:batch")  # no body: the stream ends at once
    assert r.json() == {"nextPageToken": "2"}
    r = c.post("/chat/hi", json=[{"labels": {"k": "1"}}, {"text": "mine"}])  # the path, unless the body says
    assert r.json() == [{"text": "hi:0", "labels": {"k": "1"}}, {"text": "mine:1"}]
    r = c.post("/books:batch", json=[{"title": "a"}, {"pageCount": "x"}])
    assert r.status_code == 400 and "page_count" in r.json()["message"]


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (3, 400),
        (5, 404),
        (7, 403),
        (8, 429),
        (9, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (16, 401),
        (2, 500),
        (10, 409),
        (4, 504),
    ],
)
def test_grpc_status_becomes_the_http_status_envoy_maps_it_to(gateway: dict[str, Any], code: int, http: int) -> None:
    r = gateway["client"].post("/fail", json={"code": code, "message": f"failed ü {code}"})
    assert r.status_code == http
    assert r.json() == {"code": code, "message": f"failed ü {code}"}
    assert r.headers["grpc-status"] == str(code)


def test_error_details_come_back_as_json(gateway: dict[str, Any]) -> None:
    r = gateway["client"].post("/fail", json={"code": 3, "message": "bad", "withDetails": True})
    assert r.status_code == 400
    assert r.json()["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "code", "description": "asked to fail"}],
        }
    ]
    r = gateway["client"].get("/shelves/99")  # a NOT_FOUND from a trailers-only answer
    assert (r.status_code, r.json()) == (404, {"code": 5, "message": "shelf 99 not found"})


def test_bad_bodies_limits_and_timeouts_are_json(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.post("/shelves", content=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == 3 and "not JSON" in r.json()["message"]
    r = c.post("/shelves/1/books", json={"pageCount": "many"})
    assert r.status_code == 400 and "pageCount" in r.json()["message"], r.text
    r = c.post("/shelves/1/books", json={"unknownField": 1})
    assert r.status_code == 400 and "unknownField" in r.json()["message"]
    r = c.get("/shelves/x")
    assert r.status_code == 400 and "shelf" in r.json()["message"]
    r = c.post("/shelves", json={"theme": "x" * 100}, headers={"x-print": "small"})
    assert r.status_code == 413 and r.json()["code"] == 8
    r = c.get("/search/s", headers={"x-print": "small"})  # the answer is over 100 bytes
    assert r.status_code == 500 and "over 100 bytes" in r.json()["message"]
    r = c.get("/slow/2000", headers={"x-print": "quick"})
    assert (r.status_code, r.json()["code"]) == (504, 4)
    assert c.get("/shelves/1").status_code == 200  # and the route serves on


def test_unknown_paths_and_grpc_calls_pass_through(gateway: dict[str, Any]) -> None:
    c: httpx.Client = gateway["client"]
    r = c.get("/no/such/rule")  # passed to the gRPC server as plain HTTP: not a JSON error of ours
    assert r.status_code != 200 and "code" not in r.text
    r = c.delete("/shelves/1")  # a path a rule has, with a method no rule has
    assert r.headers.get("content-type") != "application/json"
    r = c.get("/no/such/rule", headers={"x-print": "strict"})
    assert (r.status_code, r.json()) == (404, {"code": 5, "message": "no gRPC method for GET /no/such/rule"})
    # a real gRPC client through the same route: untouched, even for a method without a rule
    from google.protobuf import empty_pb2

    with grpc.insecure_channel(gateway["listen"]) as channel:
        plain = channel.unary_unary(
            f"/{SERVICE}/ListShelves",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=lambda b: b,
        )
        assert b"fiction" in plain(empty_pb2.Empty(), timeout=10)


def test_http2_clients_get_the_same_answers(gateway: dict[str, Any]) -> None:
    with httpx.Client(base_url=f"http://{gateway['listen']}", http1=False, http2=True, timeout=10) as c:
        r = c.get("/shelves/2")
        assert (r.http_version, r.json()) == ("HTTP/2", {"id": "2", "theme": "history"})
        big = "x" * 200_000
        r = c.request("REPORT", "/echo/big", json={"labels": {"k": big}})
        assert r.status_code == 200 and r.json()["labels"]["k"] == big


# The same requests to Envoy 1.40's own grpc_json_transcoder (convert_grpc_status on: its errors
# are then JSON too) in front of the same server: each answer must match sofamesh's.
SIDE_BY_SIDE: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/shelves/2", {}),
    ("GET", "/shelves", {}),
    ("POST", "/shelves", {"json": {"theme": "poetry"}}),
    (
        "POST",
        "/shelves/1/books",
        {
            "json": {
                "title": "Kindred",
                "pageCount": 264,
                "genre": "FICTION",
                "published": "1979-06-01T00:00:00Z",
                "isbn": "9780807083697",
            }
        },
    ),
    ("PUT", "/v2/shelves/7/books", {"json": {"book": {"title": "t"}, "shelf": "3"}}),
    ("PATCH", "/v1/shelves/1/books/a%2Fb", {"json": {"title": "new"}}),
    ("POST", "/v1/shelves/4/books/5:publish", {}),
    ("GET", "/shelves/1/books?tags=sf&tags=classic", {}),
    ("GET", "/shelves/1/books?filter.in_print=false&pageSize=5", {}),
    ("GET", "/search/s", {}),
    ("GET", "/search/nothing-matches", {}),
    ("GET", "/shelves/99", {}),
    ("POST", "/fail", {"json": {"code": 8, "message": "slow down"}}),
    ("POST", "/fail", {"json": {"code": 16, "message": "who?"}}),
    ("GET", "/shelves/2/cover", {}),
    ("REPORT", "/echo/h%C3%A9llo%20there", {"json": {"labels": {"k": "v"}}, "headers": {"x-client-tag": "t"}}),
    ("POST", "/books:batch", {"json": [{"title": "a"}, {"title": "b"}]}),
    ("GET", "/shelves/1/books?nope=1", {}),
    ("POST", "/shelves", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("GET", "/no/such/rule", {}),
]


PASSED_THROUGH = ("/shelves/1/books?nope=1", "/no/such/rule")


@pytest.fixture(scope="module")
def envoy(gateway: dict[str, Any]) -> Iterator[int]:
    from tests.integration.resilience.peers import H2_UPSTREAM, StaticEnvoy, http_listener, static_cluster

    port = free_port()
    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(gateway["descriptor"]),
            "services": [SERVICE],
            "convert_grpc_status": True,
        },
    }
    vhost = {
        "name": "all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "bookstore", "timeout": "3s"}}],
    }
    cluster = static_cluster(
        "bookstore", [f"127.0.0.1:{gateway['peer'].port}"], typed_extension_protocol_options=H2_UPSTREAM
    )
    with StaticEnvoy([http_listener("edge", port, vhost, "AUTO", [transcoder])], [cluster]):
        yield port


def _answer(r: httpx.Response) -> tuple[int, Any]:
    if r.status_code == 200 or r.headers.get("content-type") == "application/json":
        try:
            return r.status_code, r.json() if r.headers.get("content-type") == "application/json" else r.content
        except ValueError:
            pass
    return r.status_code, None  # an error text of the proxy's own: only the status is compared


@pytest.mark.parametrize(("method", "path", "kwargs"), SIDE_BY_SIDE, ids=[f"{m} {p}" for m, p, _ in SIDE_BY_SIDE])
def test_envoys_own_transcoder_gives_the_same_answers(
    gateway: dict[str, Any], envoy: int, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{envoy}", timeout=10) as e:
        theirs = _answer(e.request(method, path, **kwargs))
    ours = _answer(gateway["client"].request(method, path, **kwargs))
    if path in PASSED_THROUGH:  # not transcoded: the gRPC server resets it before headers: 503 both
        assert ours[0] == theirs[0] == 503 and ours[1] is theirs[1] is None, (ours, theirs)
        return
    if theirs[1] is None or ours[1] is None or (ours[0] >= 400 and "code" not in (theirs[1] or {})):
        assert ours[0] == theirs[0], (ours, theirs)  # errors Envoy answers in text: the status alone
    else:
        assert ours == theirs
