"""Certificates for gateway tests and the real clients that check them: curl over HTTPS with
``--resolve`` (SNI and Host from the URL), ``openssl s_client -servername``."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sofamesh.certs import Authority, CertFiles, load_or_mint_ca, mint_workload


@dataclass(frozen=True)
class GatewayCerts:
    ca: Authority
    servers: dict[str, CertFiles]  # by host name; each certificate's CN is the host
    client: CertFiles


def gateway_certs(tmp_path: Path, hosts: tuple[str, ...]) -> GatewayCerts:
    ca = load_or_mint_ca(tmp_path / "ca")
    servers = {
        h: mint_workload(ca, f"spiffe://cluster.local/ns/default/sa/{h.split('.')[0]}", tmp_path / "certs", h, dns=(h,))
        for h in hosts
    }
    client = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/client", tmp_path / "certs", "client")
    return GatewayCerts(ca, servers, client)


def curl(
    url: str,
    port: int,
    certs: GatewayCerts | None = None,
    *,
    client: CertFiles | None = None,
    http2: bool = False,
    extra: tuple[str, ...] = (),
    address: str = "127.0.0.1",
) -> tuple[int, str, str]:
    """(exit code, ``HTTP_CODE HTTP_VERSION REDIRECT_URL``, body) of one curl request to ``url``
    whose host resolves to ``address`` (``--resolve``): the TLS server name and Host are the URL's."""
    host = url.split("//", 1)[1].split("/", 1)[0].split(":", 1)[0]
    cmd = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        f"{host}:{port}:{address}",
        "-o",
        "-",
        "-w",
        "--curl-- %{http_code} %{http_version} %{redirect_url}",
        *extra,
    ]
    if certs is not None:
        cmd += ["--cacert", certs.ca.files.cert]
    if client is not None:
        cmd += ["--cert", client.cert, "--key", client.key]
    cmd += ["--http2" if http2 else "--http1.1", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    body, _, tail = done.stdout.rpartition("--curl--")
    return done.returncode, tail.strip(), body


def served_subject(port: int, server_name: str, alpn: str = "", address: str = "127.0.0.1") -> str:
    """The subject of the certificate ``openssl s_client -servername`` gets (``""``: no handshake)."""
    cmd = ["openssl", "s_client", "-connect", f"{address}:{port}", "-servername", server_name, "-brief"]
    if alpn:
        cmd += ["-alpn", alpn]
    done = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=20, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("Peer certificate:"):
            return line.partition(":")[2].strip()
    return ""


def negotiated_alpn(port: int, server_name: str, alpn: str, address: str = "127.0.0.1") -> str:
    cmd = ["openssl", "s_client", "-connect", f"{address}:{port}", "-servername", server_name, "-alpn", alpn]
    done = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=20, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("ALPN protocol:"):
            return line.partition(":")[2].strip()
    return ""


__all__ = ["GatewayCerts", "curl", "gateway_certs", "negotiated_alpn", "served_subject"]
