"""Validation as the Kubernetes API server (CRD schema) and Istio's webhook would do it: the
published samples pass unchanged, and each rule rejects its document with the field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sofamesh.pilot.policy.documents import parse_stream
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.validate import validate

DATA = Path(__file__).parents[3] / "data"
SAMPLES = sorted((DATA / "bookinfo").glob("*.yaml")) + sorted((DATA / "aeraki-dubbo").glob("*.yaml"))


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_published_istio_and_aeraki_samples_are_accepted_unchanged(path: Path) -> None:
    docs = list(parse_stream(path.read_text()))
    assert docs
    for d in docs:
        verdict = validate(d.body, Source(path.name, d.document, d.line, d.lines))
        assert verdict.accepted, verdict.lines()
        assert not verdict.errors


VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "r"},
      "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}}


def vs_http(**route: object) -> dict[str, object]:
    """A VirtualService whose one http route is ``route`` laid over a plain route to reviews."""
    base = {"route": [{"destination": {"host": "reviews"}}]}
    base.update(route)
    return {**VS, "spec": {"hosts": ["reviews"], "http": [{k: v for k, v in base.items() if v is not None}]}}


def vs_l4(kind: str, **route: object) -> dict[str, object]:
    """A VirtualService for ``a.example.com`` whose one ``kind`` (tcp / tls) route is ``route``."""
    return {**VS, "spec": {"hosts": ["a.example.com"], kind: [route]}}


def dr(spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "d"},
            "spec": {"host": "reviews", **spec}}


def se(spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "ServiceEntry", "metadata": {"name": "s"},
            "spec": spec}


def sec(kind: str, spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "security.istio.io/v1", "kind": kind, "metadata": {"name": "p"}, "spec": spec}


def mr(spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "metaprotocol.aeraki.io/v1alpha1", "kind": "MetaRouter", "metadata": {"name": "m"},
            "spec": spec}


DEST = {"host": "reviews"}
INVALID: list[tuple[str, dict[str, object], str, str]] = [
    # (id, document, field path, message fragment)
    ("unknown-top-level-field", {**VS, "extra": 1}, "extra", 'unknown field "extra"'),
    ("unknown-spec-field", vs_http(foo=1), "spec.http[0].foo", 'unknown field "foo"'),
    ("unknown-metadata-field", {**VS, "metadata": {"name": "r", "nmae": "x"}}, "metadata.nmae", "unknown field"),
    ("wrong-type", vs_http(route=[{"destination": DEST, "weight": "80"}]), "spec.http[0].route[0].weight",
     "must be of type integer"),
    ("hosts-not-a-list", {**VS, "spec": {"hosts": "reviews", "http": []}}, "spec.hosts", "must be of type array"),
    ("bad-enum", dr({"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBINN"}}}),
     "spec.trafficPolicy.loadBalancer.simple", "unsupported value 'ROUND_ROBINN'"),
    ("bad-duration", vs_http(timeout="1.5x"), "spec.http[0].timeout", "invalid duration '1.5x'"),
    ("duration-without-unit", vs_http(timeout="10"), "spec.http[0].timeout", "invalid duration"),
    ("duration-below-1ms", vs_http(timeout="0.5ms"), "spec.http[0].timeout", "must be at least 1ms"),
    ("duration-finer-than-ms", vs_http(timeout="1.0005s"), "spec.http[0].timeout", "ms precision"),
    ("missing-destination-host", vs_http(route=[{"destination": {"subset": "v1"}}]),
     "spec.http[0].route[0].destination.host", "required field is missing"),
    ("missing-dr-host", {**dr({}), "spec": {"subsets": []}}, "spec.host", "required field is missing"),
    ("missing-name", {**VS, "metadata": {}}, "metadata.name", "required field is missing"),
    ("missing-spec", {k: v for k, v in VS.items() if k != "spec"}, "spec", "required field is missing"),
    ("unknown-kind", {**VS, "kind": "VirtualServise"}, "kind", "no kind 'VirtualServise'"),
    ("unserved-version", {**VS, "apiVersion": "networking.istio.io/v2"}, "kind", "no kind 'VirtualService'"),
    ("bad-name", {**VS, "metadata": {"name": "Reviews_1"}}, "metadata.name", "invalid name"),
    ("oneof-string-match", vs_http(match=[{"uri": {"exact": "/a", "prefix": "/b"}}]), "spec.http[0].match[0].uri",
     "only one of exact, prefix, regex"),
    ("empty-prefix", vs_http(match=[{"uri": {"prefix": ""}}]), "spec.http[0].match[0].uri.prefix",
     "prefix string match should not be empty"),
    ("regex-does-not-compile", vs_http(match=[{"uri": {"regex": "/a(b"}}]), "spec.http[0].match[0].uri.regex",
     "invalid regex"),
    ("regex-not-re2", vs_http(match=[{"headers": {"x": {"regex": "(?=a)b"}}}]),
     "spec.http[0].match[0].headers[x].regex", "not RE2 syntax"),
    ("negative-weight", vs_http(route=[{"destination": DEST, "weight": -1}, {"destination": DEST, "weight": 101}]),
     "spec.http[0].route[0].weight", "weight -1 < 0"),
    ("weights-total-zero", vs_http(route=[{"destination": DEST, "weight": 0}, {"destination": DEST, "weight": 0}]),
     "spec.http[0].route", "total destination weight = 0"),
    ("redirect-with-route", vs_http(redirect={"uri": "/x"}), "spec.http[0]",
     "cannot contain both route and redirect"),
    ("direct-response-with-route", vs_http(directResponse={"status": 503}), "spec.http[0]",
     "cannot contain both route and directResponse"),
    ("delegate-with-route", vs_http(delegate={"name": "other"}), "spec.http[0]",
     "cannot contain both route and delegate"),
    ("no-action", vs_http(route=None, timeout="1s"), "spec.http[0]",
     "HTTP route, redirect, directResponse or delegate is required"),
    ("mirror-and-mirrors", vs_http(mirror=DEST, mirrors=[{"destination": DEST}]), "spec.http[0]",
     "both mirror and mirrors"),
    ("mirror-percentage-over-100", vs_http(mirror=DEST, mirrorPercentage={"value": 150}),
     "spec.http[0].mirrorPercentage", "max value of 100"),
    ("empty-fault", vs_http(fault={}), "spec.http[0].fault", "must have an abort and/or a delay"),
    ("abort-status-out-of-range", vs_http(fault={"abort": {"httpStatus": 700}}),
     "spec.http[0].fault.abort.httpStatus", "HTTP status 700 is not in range 200-599"),
    ("abort-grpc-status-unknown", vs_http(fault={"abort": {"grpcStatus": "NOPE"}}),
     "spec.http[0].fault.abort.grpcStatus", "gRPC status 'NOPE' is not supported"),
    ("delay-without-fixed-delay", vs_http(fault={"delay": {"percentage": {"value": 10}}}),
     "spec.http[0].fault.delay.fixedDelay", "required field is missing"),
    ("percentage-out-of-range", vs_http(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 101}}}),
     "spec.http[0].fault.delay.percentage.value", "percentage 101"),
    ("negative-retry-attempts", vs_http(retries={"attempts": -1}), "spec.http[0].retries.attempts",
     "attempts cannot be negative"),
    ("bad-retry-on", vs_http(retries={"attempts": 2, "retryOn": "5xx,sometimes"}), "spec.http[0].retries.retryOn",
     "'sometimes' is not a valid retryOn policy"),
    ("retry-policy-with-zero-attempts", vs_http(retries={"attempts": 0, "perTryTimeout": "1s"}),
     "spec.http[0].retries", "attempts are set to 0"),
    ("bad-redirect-code", vs_http(route=None, redirect={"uri": "/x", "redirectCode": 200}),
     "spec.http[0].redirect.redirectCode", "must be 3xx"),
    ("rewrite-uri-and-regex", vs_http(rewrite={"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}),
     "spec.http[0].rewrite", "only contain one of URI or UriRegexRewrite"),
    ("bad-header-operation", vs_http(headers={"request": {"set": {":path": "/x"}}}),
     "spec.http[0].headers.request.set[:path]", "cannot have \":\" prefix"),
    ("cors-bad-method", vs_http(corsPolicy={"allowMethods": ["FETCH"]}), "spec.http[0].corsPolicy.allowMethods[0]",
     "'FETCH' is not a supported HTTP method"),
    ("cors-bad-origin-regex", vs_http(corsPolicy={"allowOrigins": [{"exact": "https://a"}, {"regex": "https://(a"}]}),
     "spec.http[0].corsPolicy.allowOrigins[1].regex", "invalid regex 'https://(a'"),
    ("cors-empty-origin", vs_http(corsPolicy={"allowOrigins": [{"exact": ""}]}),
     "spec.http[0].corsPolicy.allowOrigins[0]", "'' is not a valid match type for CORS allow origins"),
    ("cors-max-age-not-whole-seconds", vs_http(corsPolicy={"maxAge": "1.5s"}), "spec.http[0].corsPolicy.maxAge",
     "max_age duration is accurate only to seconds precision"),
    ("cors-max-age-not-a-duration", vs_http(corsPolicy={"maxAge": "a day"}), "spec.http[0].corsPolicy.maxAge",
     "a day"),
    ("cors-bad-expose-header", vs_http(corsPolicy={"exposeHeaders": ["x e"]}),
     "spec.http[0].corsPolicy.exposeHeaders[0]", "x e"),
    ("cors-bad-preflight-mode", vs_http(corsPolicy={"unmatchedPreflights": "DROP"}),
     "spec.http[0].corsPolicy.unmatchedPreflights", "DROP"),
    ("no-routes-at-all", {**VS, "spec": {"hosts": ["reviews"]}}, "spec", "http, tcp or tls must be provided"),
    ("wildcard-host-on-mesh", {**VS, "spec": {"hosts": ["*"], "http": [{"route": [{"destination": DEST}]}]}},
     "spec.hosts[0]", "wildcard host * is not allowed"),
    ("bad-host", {**VS, "spec": {"hosts": ["bad host"], "http": [{"route": [{"destination": DEST}]}]}},
     "spec.hosts[0]", "domain name 'bad host' invalid"),
    ("duplicate-hosts", {**VS, "spec": {"hosts": ["a", "a"], "http": [{"route": [{"destination": DEST}]}]}},
     "spec.hosts[1]", "duplicate hosts"),
    ("bad-subset-name", vs_http(route=[{"destination": {"host": "reviews", "subset": "V_1"}}]),
     "spec.http[0].route[0].destination.subset", "subset name is invalid"),
    ("export-to-mixed", {**VS, "spec": {**VS["spec"], "exportTo": ["*", "."]}}, "spec.exportTo",  # type: ignore[dict-item]
     "cannot have both public (*) and non-public"),
    ("delegate-vs-with-gateways", {**VS, "spec": {"gateways": ["istio-system/gw"], "http": [
        {"route": [{"destination": DEST}]}]}}, "spec.gateways", "delegate virtual service must have no gateways"),
    ("tls-route-without-match", {**VS, "spec": {"hosts": ["a.example.com"], "tls": [{"route": [
        {"destination": DEST}]}]}}, "spec.tls[0].match", "required field is missing"),
    ("delegate-vs-with-tcp", {**VS, "spec": {"http": [{"route": [{"destination": DEST}]}], "tcp": [
        {"route": [{"destination": DEST}]}]}}, "spec.tcp", "delegate virtual service must have no tcp route"),
    ("delegate-delegates-again", {**VS, "spec": {"http": [{"delegate": {"name": "other"}}]}},
     "spec.http[0].delegate", "delegate virtual service can not delegate again"),
    ("delegate-bad-name", vs_http(route=None, delegate={"name": "Bad_Name"}), "spec.http[0].delegate.name",
     "invalid delegate name"),
    ("tcp-route-without-destination", vs_l4("tcp", match=[{"port": 5432}]), "spec.tcp[0].route",
     "TCP route is required"),
    ("tcp-bad-destination-subnet", vs_l4("tcp", match=[{"destinationSubnets": ["10.0.0.0/33"]}], route=[
        {"destination": DEST}]), "spec.tcp[0].match[0].destinationSubnets[0]", "not a valid IP address or CIDR"),
    ("tcp-negative-weight", vs_l4("tcp", route=[{"destination": DEST, "weight": -5}, {"destination": DEST,
                                                                                       "weight": 105}]),
     "spec.tcp[0].route[0].weight", "weight -5 < 0"),
    ("tcp-bad-source-label", vs_l4("tcp", match=[{"sourceLabels": {"app": "bad value!"}}], route=[
        {"destination": DEST}]), "spec.tcp[0].match[0].sourceLabels[app]", "invalid label value"),
    ("tls-sni-outside-hosts", vs_l4("tls", match=[{"sniHosts": ["b.example.com"]}], route=[{"destination": DEST}]),
     "spec.tls[0].match[0].sniHosts[0]", "not a compatible subset of any of the virtual service hosts"),
    ("tls-sni-bad-domain", vs_l4("tls", match=[{"sniHosts": ["a..example.com"]}], route=[{"destination": DEST}]),
     "spec.tls[0].match[0].sniHosts[0]", "invalid"),
    ("tls-route-without-destination", vs_l4("tls", match=[{"sniHosts": ["a.example.com"]}]), "spec.tls[0].route",
     "TLS route is required"),
    ("duplicate-subsets", dr({"subsets": [{"name": "v1"}, {"name": "v1"}]}), "spec.subsets[1].name",
     "duplicate subset names"),
    ("empty-traffic-policy", dr({"trafficPolicy": {}}), "spec.trafficPolicy", "must have at least one field"),
    ("lb-simple-and-hash", dr({"trafficPolicy": {"loadBalancer": {"simple": "RANDOM", "consistentHash": {
        "useSourceIp": True}}}}), "spec.trafficPolicy.loadBalancer", "only one of simple, consistentHash"),
    ("maglev-not-prime", dr({"trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpHeaderName": "x", "maglev": {"tableSize": 1000}}}}}),
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "prime"),
    ("distribute-and-failover", dr({"trafficPolicy": {"outlierDetection": {"interval": "1s"}, "loadBalancer": {
        "localityLbSetting": {"distribute": [{"from": "a/*", "to": {"a/*": 100}}], "failover": [
            {"from": "a", "to": "b"}]}}}}), "spec.trafficPolicy.loadBalancer.localityLbSetting",
     "can not simultaneously set 'distribute' and 'failover'"),
    ("distribute-not-100", dr({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [
        {"from": "a/*", "to": {"a/*": 60, "b/*": 30}}]}}}}),
     "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "must be 100"),
    ("mutual-tls-without-cert", dr({"trafficPolicy": {"tls": {"mode": "MUTUAL"}}}),
     "spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls"),
    ("istio-mutual-with-cert", dr({"trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL", "clientCertificate": "/c"}}}),
     "spec.trafficPolicy.tls", "if mode is ISTIO_MUTUAL"),
    ("outlier-percent", dr({"trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 101}}}),
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "not in range 0..100"),
    ("negative-pool-limit", dr({"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": -1}}}}),
     "spec.trafficPolicy.connectionPool.tcp.maxConnections", "must be non-negative"),
    ("port-level-without-port", dr({"trafficPolicy": {"portLevelSettings": [{"loadBalancer": {
        "simple": "RANDOM"}}]}}), "spec.trafficPolicy.portLevelSettings[0].port", "must have valid port"),
    ("se-without-hosts", se({"ports": [{"number": 80, "name": "http"}]}), "spec.hosts", "required field is missing"),
    ("se-endpoints-and-selector", se({"hosts": ["a.example.com"], "resolution": "STATIC", "endpoints": [
        {"address": "10.0.0.1"}], "workloadSelector": {"labels": {"app": "a"}}}), "spec",
     "only one of WorkloadSelector or Endpoints"),
    ("se-static-fqdn-endpoint", se({"hosts": ["a.example.com"], "resolution": "STATIC", "ports": [
        {"number": 80, "name": "http", "protocol": "HTTP"}], "endpoints": [{"address": "db.example.com"}]}),
     "spec.endpoints[0].address", "is not a valid IP address"),
    ("se-duplicate-port-name", se({"hosts": ["a.example.com"], "ports": [{"number": 80, "name": "http"}, {
        "number": 81, "name": "http"}]}), "spec.ports[1].name", "already defined"),
    ("se-unknown-protocol", se({"hosts": ["a.example.com"], "ports": [{"number": 80, "name": "x",
                                                                      "protocol": "SPDY"}]}),
     "spec.ports[0].protocol", "unsupported protocol: SPDY"),
    ("se-port-name-required", se({"hosts": ["a.example.com"], "ports": [{"number": 80}]}), "spec.ports[0].name",
     "required field is missing"),
    ("gateway-without-servers", {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                                 "metadata": {"name": "gw"}, "spec": {"servers": []}}, "spec.servers",
     "gateway must have at least one server"),
    ("gateway-https-without-tls", {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                                   "metadata": {"name": "gw"}, "spec": {"servers": [{"port": {
                                       "number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"]}]}},
     "spec.servers[0].tls", "server must have TLS settings"),
    ("workload-entry-without-address", {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                                        "metadata": {"name": "w"}, "spec": {"labels": {"app": "a"}}},
     "spec.address", "address is required"),
    ("deny-without-rules", sec("AuthorizationPolicy", {"action": "DENY"}), "spec.rules",
     "DENY action without `rules`"),
    ("custom-without-provider", sec("AuthorizationPolicy", {"action": "CUSTOM", "rules": [{}]}),
     "spec.provider.name", "`provider.name` must not be empty"),
    ("unknown-when-key", sec("AuthorizationPolicy", {"rules": [{"when": [{"key": "request.colour",
                                                                         "values": ["red"]}]}]}),
     "spec.rules[0].when[0].values", "unknown attribute (request.colour)"),
    ("bad-ip-block", sec("AuthorizationPolicy", {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300"]}}]}]}),
     "spec.rules[0].from[0].source.ipBlocks[0]", "not a valid IP address or CIDR"),
    ("empty-source", sec("AuthorizationPolicy", {"rules": [{"from": [{"source": {}}]}]}),
     "spec.rules[0].from[0].source", "`from.source` must not be empty"),
    ("selector-and-target-ref", sec("AuthorizationPolicy", {"selector": {"matchLabels": {"app": "a"}},
                                                            "targetRef": {"kind": "Service", "name": "a"}}),
     "spec", "only one of targetRefs or workloadSelector"),
    ("port-level-mtls-without-selector", sec("PeerAuthentication", {"portLevelMtls": {"8080": {
        "mode": "DISABLE"}}}), "spec.portLevelMtls", "cannot have port level mTLS"),
    ("bad-mtls-mode", sec("PeerAuthentication", {"mtls": {"mode": "STRICTER"}}), "spec.mtls.mode",
     "unsupported value 'STRICTER'"),
    ("jwt-rule-bad-jwks-uri", sec("RequestAuthentication", {"jwtRules": [{"issuer": "me",
                                                                         "jwksUri": "ftp://keys"}]}),
     "spec.jwtRules[0].jwksUri", "must be an http or https URL"),
    ("jwt-rule-without-issuer", sec("RequestAuthentication", {"jwtRules": [{"audiences": ["a"]}]}),
     "spec.jwtRules[0].issuer", "issuer or jwksUri must be non-empty"),
    ("meta-router-without-hosts", mr({"routes": [{"route": [{"destination": DEST}]}]}), "spec.hosts",
     "must have at least one host"),
    ("meta-router-mirror-percentage", mr({"hosts": ["com.example.Echo"], "routes": [{
        "route": [{"destination": DEST}], "mirror": DEST, "mirrorPercentage": {"value": 150.0}}]}),
     "spec.routes[0].mirrorPercentage.value", "percentage 150.0"),
    ("meta-router-attribute-regex", mr({"hosts": ["com.example.Echo"], "routes": [{
        "match": {"attributes": {"method": {"regex": "say(Hello"}}}, "route": [{"destination": DEST}]}]}),
     "spec.routes[0].match.attributes[method].regex", "invalid regex"),
    ("meta-router-negative-weight-type", mr({"hosts": ["com.example.Echo"], "routes": [{
        "route": [{"destination": DEST, "weight": -5}]}]}), "spec.routes[0].route[0].weight",
     "must be between 0 and 4294967295"),
    ("meta-router-token-bucket", mr({"hosts": ["com.example.Echo"], "localRateLimit": {"tokenBucket": {
        "maxTokens": 0, "fillInterval": "1s"}}}), "spec.localRateLimit.tokenBucket.maxTokens",
     "must be greater than 0"),
    ("meta-router-bucket-without-max-tokens", mr({"hosts": ["com.example.Echo"], "localRateLimit": {"tokenBucket": {
        "fillInterval": "1s"}}}), "spec.localRateLimit.tokenBucket.maxTokens", "must be greater than 0"),
    ("meta-router-fill-interval-under-50ms", mr({"hosts": ["com.example.Echo"], "localRateLimit": {"tokenBucket": {
        "maxTokens": 5, "fillInterval": "10ms"}}}), "spec.localRateLimit.tokenBucket.fillInterval",
     "must be at least 50ms"),
    ("meta-router-bucket-without-fill-interval", mr({"hosts": ["com.example.Echo"], "localRateLimit": {
        "tokenBucket": {"maxTokens": 5}}}), "spec.localRateLimit.tokenBucket.fillInterval", "required"),
    ("meta-router-zero-tokens-per-fill", mr({"hosts": ["com.example.Echo"], "localRateLimit": {"conditions": [{
        "match": {"attributes": {"method": {"exact": "ping"}}},
        "tokenBucket": {"maxTokens": 5, "tokensPerFill": 0, "fillInterval": "1s"}}]}}),
     "spec.localRateLimit.conditions[0].tokenBucket.tokensPerFill", "must be greater than 0"),
    ("meta-router-condition-without-bucket", mr({"hosts": ["com.example.Echo"], "localRateLimit": {"conditions": [{
        "match": {"attributes": {"method": {"exact": "ping"}}}}]}}),
     "spec.localRateLimit.conditions[0].tokenBucket", "required"),
    ("meta-router-empty-rate-limit", mr({"hosts": ["com.example.Echo"], "localRateLimit": {}}),
     "spec.localRateLimit", "at least one of tokenBucket or conditions"),
    ("meta-router-retry-on-an-http-condition", mr({"hosts": ["com.example.Echo"], "routes": [{
        "route": [{"destination": DEST}], "retries": {"attempts": 2, "retryOn": "reset,unavailable"}}]}),
     "spec.routes[0].retries.retryOn", "'unavailable' is not a retryOn condition for RPC"),
    ("meta-router-retries-negative", mr({"hosts": ["com.example.Echo"], "routes": [{
        "route": [{"destination": DEST}], "retries": {"attempts": -1}}]}),
     "spec.routes[0].retries.attempts", "cannot be negative"),
    ("meta-router-retries-disabled-with-conditions", mr({"hosts": ["com.example.Echo"], "routes": [{
        "route": [{"destination": DEST}], "retries": {"retryOn": "reset"}}]}),
     "spec.routes[0].retries", "attempts are set to 0"),
    ("meta-router-retry-backoff-under-1ms", mr({"hosts": ["com.example.Echo"], "routes": [{
        "route": [{"destination": DEST}], "retries": {"attempts": 2, "backoff": "100us"}}]}),
     "spec.routes[0].retries.backoff", "must be at least 1ms"),
    ("meta-router-retry-backoff-not-a-duration", mr({"hosts": ["com.example.Echo"], "routes": [{
        "route": [{"destination": DEST}], "retries": {"attempts": 2, "backoff": "soon"}}]}),
     "spec.routes[0].retries.backoff", "duration"),
]


@pytest.mark.parametrize(("doc", "path", "fragment"), [(d, p, f) for _, d, p, f in INVALID],
                         ids=[i for i, *_ in INVALID])
def test_each_rule_rejects_its_document_naming_the_field(doc: dict[str, object], path: str, fragment: str) -> None:
    verdict = validate(doc, Source("bad.yaml", 3, 10))
    assert not verdict.accepted
    matching = [i for i in verdict.errors if i.path == path and fragment in i.message]
    assert matching, f"wanted {path}: ...{fragment}..., got {[str(i) for i in verdict.errors]}"
    line = verdict.lines()[0]
    assert line.startswith("bad.yaml:10 (document 3) ")


def test_error_lines_point_at_the_file_document_and_line_of_the_field() -> None:
    text = (DATA / "bookinfo" / "virtual-service-reviews-80-20.yaml").read_text().replace("weight: 20",
                                                                                          "weight: twenty")
    text = "---\n" + yaml.safe_dump({"apiVersion": "v1", "kind": "Nothing"}) + "---\n" + text
    docs = list(parse_stream(text))
    verdicts = [validate(d.body, Source("canary.yaml", d.document, d.line, d.lines)) for d in docs]
    assert [v.accepted for v in verdicts] == [False, False]
    [line] = [x for x in verdicts[1].lines() if "weight" in x]
    assert line == ("canary.yaml:21 (document 2) VirtualService default/reviews: spec.http[0].route[1].weight: "
                    "must be of type integer, got string 'twenty'")


def test_namespace_defaults_to_default_and_must_match_the_request() -> None:
    ok = validate(VS, Source("r"))
    assert ok.resource is not None and ok.resource.namespace == "default"
    other = validate({**VS, "metadata": {"name": "r", "namespace": "prod"}}, Source("r"), namespace="dev")
    assert [str(i) for i in other.errors] == [
        "metadata.namespace: the namespace of the object (prod) does not match the namespace of the request (dev)"]


def test_deprecated_fields_and_unreachable_rules_are_warnings_not_rejections() -> None:
    doc = {**VS, "spec": {"hosts": ["reviews"], "http": [
        {"route": [{"destination": DEST}]},
        {"route": [{"destination": DEST}], "fault": {"delay": {"percent": 50, "fixedDelay": "1s"}}}]}}
    verdict = validate(doc, Source("w"))
    assert verdict.accepted
    assert {str(i) for i in verdict.issues} == {
        "spec.http[1].fault.delay.percent: deprecated field",
        "spec.http[1]: virtualService rule #1 not used (route without matches defined before)"}


def test_rpc_service_names_are_hosts() -> None:
    doc = mr({"hosts": ["com.example.EchoService:1.0"], "routes": [{"route": [{"destination": {
        "host": "com.example.EchoService:1.0", "subset": "v1"}}]}]})
    assert validate(doc, Source("m")).accepted


def test_docs_policy_lists_every_field_of_every_kind() -> None:
    from sofamesh.pilot.policy.enforcement import enforcers, field_table
    from sofamesh.pilot.policy.kinds import KINDS

    names = {"sofamesh": "sofamesh", "envoy": "Envoy", "grpc": "proxyless gRPC"}

    text = (Path(__file__).parents[4] / "docs" / "policy.md").read_text()
    sections = text.split("\n### ")
    for kind in KINDS:
        [section] = [s for s in sections if s.startswith(kind.kind + "\n")]
        for path, _ in field_table(kind):
            assert f"| `{path}` |" in section, f"docs/policy.md: {kind.kind} lacks {path}"
            who = ", ".join(names[w] for w in enforcers(kind.kind, path)) or "not yet (`analyze` SOFA0002)"
            [row] = [line for line in section.splitlines() if line.startswith(f"| `{path}` |")]
            assert row.endswith(f"| {who} |"), f"docs/policy.md: {kind.kind} {path}: enforced by {who}"


def test_a_control_character_ends_the_stream_with_a_problem_not_an_exception() -> None:
    """Found by fuzzing (fuzz/crashes/policy): PyYAML refuses a non-printable character when its
    reader is built, before the first document, and that escaped parse_stream."""
    [doc] = list(parse_stream("kind: VirtualService\nmetadata: {name: a\x07}\n"))
    assert doc.body is None and doc.problem is not None
    assert "unacceptable character #x0007" in doc.problem


@pytest.mark.parametrize("uri", ["https://[::1/jwks", "https://issuer.example:99999/jwks", "https://h:x/jwks"])
def test_a_jwks_uri_that_is_no_url_is_an_issue_not_an_exception(uri: str) -> None:
    """Found by fuzzing (fuzz/crashes/policy): urlsplit's ValueError ("Invalid IPv6 URL") escaped validation."""
    doc = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication", "metadata": {"name": "jwt"},
           "spec": {"jwtRules": [{"issuer": "https://issuer.example", "jwksUri": uri}]}}
    verdict = validate(doc, Source("ra.yaml"))
    assert not verdict.accepted
    assert [i.path for i in verdict.errors] == ["spec.jwtRules[0].jwksUri"], verdict.lines()
