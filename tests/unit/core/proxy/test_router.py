"""Router host matching: HTTP/1 matches on Host (its ``service``), HTTP/2 on ``:authority``."""

from __future__ import annotations

from sofamesh.core.config.model import RouteConfig
from sofamesh.core.events import RequestHead
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.router import Route, Router


def _router() -> Router:
    return Router([Route(0, RouteConfig.model_validate({"match": {"host": "greeter"}, "cluster": "g"})),
                   Route(1, RouteConfig.model_validate({"match": {"host": {"prefix": "web:"}}, "cluster": "w"}))])


def test_a_grpc_request_matches_its_host_on_the_authority_not_on_the_grpc_service() -> None:
    head = RequestHead(protocol="http2", service="demo.Greeter", method="WhoAmI", path="/demo.Greeter/WhoAmI",
                       headers=Headers([(":authority", "greeter:80"), ("content-type", "application/grpc")]))
    route = _router().match(head)
    assert route is not None and route.pick_cluster() == "g"


def test_an_http1_request_matches_its_host_header_with_or_without_a_port() -> None:
    router = _router()
    for host, cluster in (("greeter", "g"), ("greeter:8080", "g"), ("web:81", "w")):
        route = router.match(RequestHead(protocol="http1", service=host, method="GET", path="/",
                                         headers=Headers([("host", host)])))
        assert route is not None and route.pick_cluster() == cluster, host
    assert router.match(RequestHead(protocol="http1", service="other", method="GET", path="/")) is None


def test_a_field_match_reads_the_field_and_asks_the_codec_only_when_the_field_is_empty() -> None:
    asked: list[str] = []

    def resolve(name: str) -> str | None:
        asked.append(name)
        return "echo" if name == "method" else None

    router = Router([Route(0, RouteConfig.model_validate(
        {"match": {"service": "svc:1.0", "method": "echo"}, "cluster": "c"}))])
    assert router.match(RequestHead("bolt", service="svc:1.0", method="echo", resolve=resolve)) is not None
    assert asked == []
    assert router.match(RequestHead("bolt", service="svc:1.0", resolve=resolve)) is not None
    assert asked == ["method"]
    assert router.match(RequestHead("bolt", service="svc:2.0", method="echo", resolve=resolve)) is None
