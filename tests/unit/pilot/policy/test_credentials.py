"""Kubernetes TLS Secrets in Pilot's policy store: admission (base64, PEM, the key matches the
certificate; errors name the field), the stored form, and reads that never show the key."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from sofamesh.certs import CertFiles, load_or_mint_ca, mint_workload
from sofamesh.pilot.policy.credentials import REDACTED, credential, redacted
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.validate import validate


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret_doc(
    name: str,
    cert: CertFiles | None = None,
    ca: str | None = None,
    namespace: str = "default",
    kind: str = "kubernetes.io/tls",
) -> dict[str, Any]:
    """A Kubernetes Secret holding ``cert`` (tls.crt, tls.key) and/or ``ca`` (ca.crt), base64 as kubectl writes it."""
    data = {}
    if cert is not None:
        data["tls.crt"] = _b64(Path(cert.cert).read_bytes())
        data["tls.key"] = _b64(Path(cert.key).read_bytes())
    if ca is not None:
        data["ca.crt"] = _b64(Path(ca).read_bytes())
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": kind,
        "data": data,
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, CertFiles, CertFiles]:
    d = tmp_path_factory.mktemp("pki")
    ca = load_or_mint_ca(d / "ca")
    a = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/a", d, "a.example.com", dns=("a.example.com",))
    b = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/b", d, "b.example.com", dns=("b.example.com",))
    return ca.files.cert, a, b


def test_a_tls_secret_is_admitted_and_stored_with_its_fields_beside_metadata(pki: Any) -> None:
    ca, a, _b = pki
    verdict = validate(secret_doc("a-cert", a, ca), Source("s.yaml"))
    assert verdict.accepted, verdict.lines()
    r = verdict.resource
    assert r is not None and r.group == "" and r.kind == "Secret"
    doc = r.to_dict()
    assert doc["apiVersion"] == "v1" and "spec" not in doc and doc["type"] == "kubernetes.io/tls"
    c = credential(r.spec)
    assert c.chain_pem == Path(a.cert).read_bytes() and c.key_pem == Path(a.key).read_bytes()
    assert c.ca_pem == Path(ca).read_bytes()


def test_string_data_is_merged_into_data_as_the_api_server_does(pki: Any) -> None:
    ca, _a, _b = pki
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "a-cert-cacert"},
        "type": "Opaque",
        "stringData": {"cacert": Path(ca).read_text()},
    }
    verdict = validate(doc, Source("s.yaml"))
    assert verdict.accepted, verdict.lines()
    assert verdict.resource is not None
    assert verdict.resource.spec["data"] == {"cacert": _b64(Path(ca).read_bytes())}
    assert "stringData" not in verdict.resource.spec


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (lambda d, a, b: d["data"].update({"tls.crt": "not base64!"}), "data[tls.crt]", "not base64"),
        (lambda d, a, b: d["data"].update({"tls.crt": _b64(b"hello")}), "data[tls.crt]", "not a PEM certificate"),
        (
            lambda d, a, b: d["data"].update(
                {"tls.key": _b64(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}
            ),
            "data[tls.key]",
            "not an unencrypted PEM private key",
        ),
        (
            lambda d, a, b: d["data"].update({"tls.key": _b64(Path(b.key).read_bytes())}),
            "data[tls.key]",
            "does not match the certificate in tls.crt (subject CN=a.example.com,O=sofamesh)",
        ),
        (lambda d, a, b: d["data"].pop("tls.key"), "data[tls.key]", "required with tls.crt"),
        (lambda d, a, b: d["data"].update({"ca.crt": _b64(b"junk")}), "data[ca.crt]", "not a PEM certificate"),
        (lambda d, a, b: d.update({"type": "kubernetes.io/dockerconfigjson"}), "type", "not served to gateways"),
        (lambda d, a, b: d.update({"data": {}}), "data", "no credential"),
        (lambda d, a, b: d.update({"spec": {}}), "spec", "beside metadata"),
    ],
)
def test_a_secret_that_cannot_serve_is_rejected_naming_the_field(pki: Any, change: Any, path: str, words: str) -> None:
    ca, a, b = pki
    doc = secret_doc("a-cert", a, ca)
    change(doc, a, b)
    verdict = validate(doc, Source("s.yaml"))
    assert not verdict.accepted
    assert [(i.path, words in i.message) for i in verdict.errors] == [(path, True)], verdict.lines()


def test_reads_show_the_certificate_and_never_the_private_key(pki: Any) -> None:
    ca, a, _b = pki
    verdict = validate(secret_doc("a-cert", a, ca), Source("s.yaml"))
    assert verdict.resource is not None
    shown = redacted(verdict.resource.spec)
    assert shown["data"]["tls.key"] == REDACTED
    assert shown["data"]["tls.crt"] == verdict.resource.spec["data"]["tls.crt"]
    assert verdict.resource.spec["data"]["tls.key"] != REDACTED  # the stored form keeps it


def test_analyze_reports_a_credential_name_with_no_usable_secret_as_istios_ist0161(pki: Any) -> None:
    from sofamesh.pilot.model import MeshModel
    from sofamesh.pilot.policy.analyze import analyze
    from sofamesh.pilot.policy.model import PolicyModel
    from sofamesh.pilot.policy.store import StoredDocument

    ca, a, b = pki
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge"},
        "spec": {
            "servers": [
                {
                    "port": {"number": 443, "name": f"https-{i}", "protocol": "HTTPS"},
                    "hosts": [f"h{i}.example"],
                    "tls": {"mode": mode, "credentialName": name},
                }
                for i, (mode, name) in enumerate(
                    [("SIMPLE", "a-cert"), ("MUTUAL", "a-cert"), ("MUTUAL", "kubernetes://b-cert"), ("SIMPLE", "gone")]
                )
            ]
        },
    }
    docs = [
        gateway,
        secret_doc("a-cert", a),
        secret_doc("b-cert", b),
        secret_doc("b-cert-cacert", ca=ca),
        secret_doc("gone", a, namespace="other"),
    ]
    policy = PolicyModel()
    policy.sync([StoredDocument(Source("t.yaml", i + 1), d) for i, d in enumerate(docs)])
    assert not policy.rejections()
    found = [str(f) for f in analyze(policy, MeshModel([])) if f.code == "IST0161"]
    assert found == [
        "Error [IST0161] (Gateway default/edge) spec.servers[1].tls.credentialName: MUTUAL needs a client CA: "
        "ca.crt in Secret 'a-cert' or a Secret a-cert-cacert in namespace default",
        "Error [IST0161] (Gateway default/edge) spec.servers[3].tls.credentialName: no Secret 'gone' with tls.crt "
        "and tls.key in namespace default: the server is left out of gateways there",
    ]
