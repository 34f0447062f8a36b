"""Seed corpora: frames captured between real peers (tests/unit/.../bolt_captured.py: sofa-rpc-node
and anthunder; the Dubbo frames of dubbo2.js in test_dubbo_codec.py), HTTP/1 requests and
responses as curl and Python's http.server write them, and HTTP/2 connections as curl, nghttp and
grpcio wrote them (recorded by fuzz/capture_http2.py into fuzz/captured/http2/); a decoder's seed
starts with the split byte (0x80: two halves). The configuration targets' seeds: the resources
Pilot generates for Bookinfo's and Aeraki's samples (fuzz/config_targets.py), the proxy's example
configs, the policy documents of tests/data and the security policy of the generation tests, and
Open Service Registry API bodies as the docs show them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.unit.plugins.protocols.bolt import bolt_captured as bolt
from tests.unit.plugins.protocols.dubbo import test_dubbo_codec as dubbo

_SPLIT = b"\x80"

_HTTP1_REQUESTS = [
    b"GET /item/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    b"GET / HTTP/1.0\r\n\r\n",
]
_HTTP1_RESPONSES = [
    b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.7\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
]


_ROOT = Path(__file__).resolve().parent.parent
_HTTP2_CAPTURED = _ROOT / "fuzz" / "captured" / "http2"


def _http2_captured() -> list[bytes]:
    """What curl, nghttp and grpcio sent on their HTTP/2 connections (fuzz/capture_http2.py)."""
    return [p.read_bytes() for p in sorted(_HTTP2_CAPTURED.glob("*.bin"))]


_OSR_BODIES = [  # PUT /v1/services/{service}/instances/{id} (docs/pilot.md)
    b'{"address": "127.0.0.1", "port": 20880, "protocol": "dubbo", "labels": {"version": "v1"}, "ttl_seconds": 30}',
    b'{"address": "10.0.0.7", "port": 8080, "weight": 3, "version": "1.0", "group": "g", "health": "unhealthy",'
    b' "service_ports": [8080], "service_metadata": {"owner": "web"}}',
]


def _config_seeds() -> dict[str, list[bytes]]:
    from fuzz.config_targets import STRUCTURED, XDS_TYPES, generate
    from sofamesh.core.xds.translate import ENDPOINT_TYPE
    from sofamesh.pilot.policy.applied import AppliedPolicy
    from sofamesh.pilot.policy.documents import parse_stream
    from sofamesh.pilot.policy.model import PolicyModel
    from sofamesh.pilot.policy.resource import Source
    from sofamesh.pilot.policy.store import StoredDocument
    from tests.unit.pilot.xds.test_security_generation import AUTHZ

    data = _ROOT / "tests" / "data"
    docs = [
        p.read_text()
        for p in (
            data / "bookinfo" / "destination-rule-all.yaml",
            data / "bookinfo" / "virtual-service-reviews-jason-v2-v3.yaml",
            data / "bookinfo" / "virtual-service-ratings-test-abort.yaml",
            *sorted((data / "aeraki-dubbo").glob("*.yaml")),
        )
    ]
    all_policy = [p.read_text().encode() for p in sorted(data.glob("*/*.yaml"))] + [AUTHZ.encode()]
    model = PolicyModel()
    text = "\n---\n".join([*docs, AUTHZ])
    model.sync([StoredDocument(Source("seed", d.document, d.line, d.lines), d.body) for d in parse_stream(text)])
    xds = []
    for msg in generate(AppliedPolicy(model, "cluster.local")):
        url = (
            ENDPOINT_TYPE
            if type(msg).__name__ == "ClusterLoadAssignment"
            else next(u for u in XDS_TYPES if u.endswith("." + type(msg).__name__))
        )
        xds.append(bytes([XDS_TYPES.index(url) | 0x80]) + msg.SerializeToString())
    examples = [p.read_bytes() for p in sorted((_ROOT / "examples").glob("*.yaml")) if p.name != "pilot.yaml"]
    # structured inputs (fuzz/structured.py): a NUL, then the bytes a value is built from
    built = [bytes([STRUCTURED]) + hashlib.sha512(str(i).encode()).digest() * 2 for i in range(4)]
    return {
        "xds_translation": xds,
        "proxy_yaml": examples + built,
        "policy": all_policy + built,
        "osr_api": [b"\x00" + b for b in _OSR_BODIES]
        + [b"\x80" + _OSR_BODIES[0], b"\x41reviews", b"\x01i-1", b"\x0210s", b"\x02500ms", b"\x0342"],
    }


def seeds() -> dict[str, list[bytes]]:
    bolt_req = [bolt.NODE_V1_REQUEST, bolt.NODE_V2CRC_REQUEST, bolt.ANTHUNDER_REQUEST]
    bolt_res = [bolt.NODE_V1_RESPONSE, bolt.NODE_V2CRC_RESPONSE, bolt.ANTHUNDER_RESPONSE]
    dubbo_req = [dubbo.REQ_GREET, dubbo.REQ_FAIL, dubbo.HEARTBEAT]
    dubbo_res = [dubbo.RES_GREET, dubbo.RES_FAIL, dubbo.HEARTBEAT]
    hessian = [f[16:] for f in (*dubbo_req, *dubbo_res)]
    decoders = {
        "http1_server": _HTTP1_REQUESTS,
        "http1_client": _HTTP1_RESPONSES,
        "http2_server": _http2_captured(),
        "bolt_server": bolt_req,
        "bolt_client": bolt_res,
        "dubbo_server": dubbo_req,
        "dubbo_client": dubbo_res,
        "hessian": hessian,
        # as thriftpy2 frames them (contrib/sofamesh-thrift/tests/test_thrift_codec.py)
        "thrift_server": [
            bytes.fromhex("0000001a80010001000000046563686f000000070b000100000002686900"),
            bytes.fromhex("0000001f80010001000000094563686f3a6563686f000000070b000100000002686900"),
            bytes.fromhex("00000017000000046563686f01000000070b000100000002686900"),
        ],
        "thrift_client": [
            bytes.fromhex("0000001a80010002000000046563686f000000070b000000000002686900"),
            bytes.fromhex("0000001f80010002000000066c6f6f6b7570000000090c00010b0001000000016b0000"),
        ],
    }
    out = {name: [_SPLIT + s for s in frames] for name, frames in decoders.items()}
    return {**out, **_config_seeds()}


def write(target: str, directory: Path) -> Path:
    """Write ``target``'s seeds into ``directory`` (kept: libFuzzer adds what it finds)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds().get(target, [])):
        (directory / f"seed-{i}").write_bytes(s)
    return directory


__all__ = ["seeds", "write"]
