"""authz.rbac, quota.local and tracing decisions on request heads, without a proxy."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.errors import ConfigError
from sofamesh.core.events import RequestHead
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.filter_chain import LocalReply, Verdict
from sofamesh.core.proxy.stream import StreamContext
from sofamesh.plugins.filters.authz.rbac import RbacFilterFactory
from sofamesh.plugins.filters.quota.local import LocalQuotaFilter, LocalQuotaSettings
from sofamesh.plugins.filters.telemetry.tracing import parse_traceparent


def stream(service: str = "com.example.Echo:1.0", method: str = "echo", peer: str | None = None,
           ip: str = "10.1.2.3", raw: bytes | None = b"frame", **headers: str) -> Any:
    def resolve(name: str) -> str | None:
        return "lazy" if name == "method" else None

    head = RequestHead(protocol="bolt", service=service, method=method, raw=raw, headers=Headers(list(headers.items())),
                       resolve=resolve)
    return SimpleNamespace(head=head, context=StreamContext("l", (ip, 1), peer, 0.0))


def rbac(policies: list[dict[str, Any]], **extra: Any) -> Any:
    return RbacFilterFactory().create({"policies": policies, **extra}, "listeners[0].filters[0]")


SHOP = "spiffe://cluster.local/ns/default/sa/shop"


def test_deny_wins_over_a_matching_allow() -> None:
    f = rbac([{"action": "ALLOW", "rules": [{}]},
              {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["drop*"]}}]}]}])
    assert f.on_request_head(stream(method="echo")) is Verdict.CONTINUE
    r = f.on_request_head(stream(method="dropAll"))
    assert isinstance(r, LocalReply) and r.status is ReplyStatus.DENIED


def test_no_policy_allows_and_an_allow_policy_without_rules_allows_nothing() -> None:
    assert rbac([]).on_request_head(stream()) is Verdict.CONTINUE
    assert isinstance(rbac([{"action": "ALLOW"}]).on_request_head(stream()), LocalReply)


def test_principals_namespaces_ip_blocks_and_negations_match_as_istio_does() -> None:
    f = rbac([{"action": "ALLOW", "rules": [{"from": [{"source": {
        "principals": ["cluster.local/ns/*"], "namespaces": ["default"], "notIpBlocks": ["10.9.0.0/16"]}}]}]}])
    assert f.on_request_head(stream(peer=SHOP)) is Verdict.CONTINUE
    assert isinstance(f.on_request_head(stream(peer=SHOP, ip="10.9.1.1")), LocalReply)
    assert isinstance(f.on_request_head(stream(peer="spiffe://cluster.local/ns/prod/sa/x")), LocalReply)
    assert isinstance(f.on_request_head(stream(peer=None)), LocalReply)


def test_a_method_only_in_the_body_is_resolved_lazily_for_rbac() -> None:
    f = rbac([{"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["lazy"]}}]}]}])
    assert f.on_request_head(stream(method="")) is Verdict.CONTINUE


def test_header_conditions_read_header_map_keys() -> None:
    f = rbac([{"action": "ALLOW", "rules": [{"when": [{"key": "request.headers[x-tenant]", "notValues": ["evil"]}]}]}])
    assert f.on_request_head(stream(**{"x-tenant": "acme"})) is Verdict.CONTINUE
    assert isinstance(f.on_request_head(stream(**{"x-tenant": "evil"})), LocalReply)


def test_dry_run_counts_instead_of_denying() -> None:
    f = rbac([{"action": "DENY", "rules": [{}]}], dry_run=True)
    assert f.on_request_head(stream()) is Verdict.CONTINUE
    assert f.stats()["rbac_shadow_denied"] == 1 and f.stats()["rbac_denied"] == 0


def test_an_unknown_condition_key_is_a_config_error_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"policies\[0\]\.rules\[0\]\.when\[0\]\.key: unknown condition key"):
        rbac([{"action": "ALLOW", "rules": [{"when": [{"key": "nope", "values": ["x"]}]}]}])


def test_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    now = [0.0]
    f = LocalQuotaFilter(LocalQuotaSettings.model_validate({"key": ["service"], "rate": 2, "burst": 3}),
                         clock=lambda: now[0])

    def n_ok(k: int, service: str = "a") -> int:
        return sum(f.on_request_head(stream(service=service)) is Verdict.CONTINUE for _ in range(k))

    assert n_ok(5) == 3
    now[0] = 1.0
    assert n_ok(5) == 2
    now[0] = 100.0
    assert n_ok(5) == 3  # capped at the burst
    assert n_ok(2, "b") == 2  # another service, another bucket


def test_without_a_default_limit_only_calls_an_override_matches_are_limited() -> None:
    f = LocalQuotaFilter(LocalQuotaSettings.model_validate({"overrides": [
        {"match": {"service": {"exact": "a"}, "tier": {"exact": "gold"}}, "limit": {"rate": 0.001, "burst": 1}},
        {"match": {"service": {"exact": "a"}}, "limit": {"rate": 0.001, "burst": 2}}]}), clock=lambda: 0.0)

    def n_ok(k: int, service: str = "a", **headers: str) -> int:
        return sum(f.on_request_head(stream(service=service, **headers)) is Verdict.CONTINUE for _ in range(k))

    assert n_ok(3, tier="gold") == 1  # the first override's own bucket
    assert n_ok(3) == 2  # the service-wide one, untouched by the gold calls
    assert n_ok(50, "b") == 50  # no override matches: not limited
    with pytest.raises(ValueError, match="set limit"):
        LocalQuotaSettings.model_validate({"key": ["service"]})


def test_traceparent_is_parsed_and_malformed_ones_are_ignored() -> None:
    assert parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)
    assert parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")[2] is False  # type: ignore[index]
    for bad in (None, "", "00-xyz-00f067aa0ba902b7-01", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"):
        assert parse_traceparent(bad) is None


def test_ip_block_answers_stay_right_for_each_address_when_remembered() -> None:
    from sofamesh.plugins.filters.authz.matchers import ip_blocks

    inside = ip_blocks(["10.9.0.0/16", "::1"])
    for _ in range(2):  # the second pass answers from the memo
        assert inside("10.9.1.1") is True
        assert inside("10.8.1.1") is False
        assert inside("::1") is True
        assert inside("not-an-address") is False
        assert inside("") is False
    for i in range(5000):  # more distinct peers than the memo holds: still right
        assert inside(f"10.{9 if i % 2 else 7}.{i // 256 % 256}.{i % 256}") is bool(i % 2)


def test_hosts_and_not_hosts_match_any_spelling_of_the_host_with_or_without_its_port() -> None:
    f = rbac([{"action": "ALLOW", "rules": [{"to": [{"operation": {"hosts": ["shop.local"],
                                                                   "notHosts": ["admin.shop.local"]}}]}]}])
    assert f.on_request_head(stream(host="shop.local:8080")) is Verdict.CONTINUE
    assert f.on_request_head(stream(host="shop.local")) is Verdict.CONTINUE
    assert isinstance(f.on_request_head(stream(host="other.local")), LocalReply)
    g = rbac([{"action": "ALLOW", "rules": [{"to": [{"operation": {"notHosts": ["admin.local"]}}]}]}])
    assert isinstance(g.on_request_head(stream(host="admin.local:9000")), LocalReply)
    assert g.on_request_head(stream(host="shop.local:9000")) is Verdict.CONTINUE


def test_paths_mean_the_service_or_slash_service_slash_method_for_rpc_and_keep_grpcs_own_path() -> None:
    f = rbac([{"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/com.example.Echo:1.0/echo"]}}]},
                                            {"to": [{"operation": {"paths": ["com.example.Admin*"]}}]}]}])
    assert f.on_request_head(stream(method="echo")) is Verdict.CONTINUE
    assert isinstance(f.on_request_head(stream(method="plus")), LocalReply)
    assert f.on_request_head(stream(service="com.example.AdminService:1.0", method="any")) is Verdict.CONTINUE
    grpc = rbac([{"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["pkg.Who"]}}]}]}])
    head = RequestHead(protocol="http2", service="pkg.Who", method="Name", path="/pkg.Who/Name", raw=b"")
    assert grpc.on_request_head(SimpleNamespace(head=head, context=StreamContext("l", ("1.2.3.4", 1), None, 0.0))) \
        is Verdict.CONTINUE
    http = RequestHead(protocol="http1", service="pkg.Who", method="GET", path="/other/Name", raw=b"")
    assert isinstance(grpc.on_request_head(SimpleNamespace(head=http, context=StreamContext(
        "l", ("1.2.3.4", 1), None, 0.0))), LocalReply)
