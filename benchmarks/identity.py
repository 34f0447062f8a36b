"""Workload identity costs: certificates Pilot signs per second, and the CPU a sidecar spends on a
new mTLS connection against a plaintext one.

    .venv/bin/python benchmarks/identity.py [--csrs 2000] [--concurrency 8] [--connections 400]

1. ``sign``: the built-in CA alone (in this process: ``BuiltinCa.sign`` on prepared CSRs), then
   Pilot end to end (a ``sofamesh pilot`` child process; CSRs prepared beforehand, sent over Istio's
   CSR API with a token, ``--concurrency`` calls in flight); Pilot's CPU seconds per certificate
   from /proc.
2. ``connect``: a ``sofamesh proxy`` child with two HTTP/1 listeners to the same upstream, one
   plaintext and one mTLS (EC P-256 certificates, as the agent's; ``require_client_cert``), and
   ``--connections`` new connections to each, one request per connection; the proxy's CPU seconds
   per connection from /proc, and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.client
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sofamesh.certs import load_or_mint_ca, mint_workload
from sofamesh.core.security import ca_api
from sofamesh.pilot.security.ca import CaContext, SignRequest
from sofamesh.pilot.security.storage import DirStorage
from sofamesh.plugins.ca.builtin.authority import BuiltinCa
from sofamesh.testing import ProxyProcess, UpstreamServer, free_port

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
SPIFFE = "spiffe://cluster.local/ns/default/sa/bench"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def csrs(n: int) -> list[x509.CertificateSigningRequest]:
    out = []
    for _ in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        out.append(x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE)]),
                                  critical=False).sign(key, hashes.SHA256()))
    return out


async def sign_in_process(reqs: list[x509.CertificateSigningRequest], tmp: Path) -> float:
    ca = BuiltinCa(CaContext("builtin", "cluster.local", DirStorage(tmp / "ca")))
    await ca.start()
    ttl = datetime.timedelta(hours=24)
    t0 = time.perf_counter()
    for r in reqs:
        await ca.sign(SignRequest(r, SPIFFE, ttl))
    return len(reqs) / (time.perf_counter() - t0)


async def sign_over_grpc(reqs: list[x509.CertificateSigningRequest], concurrency: int, tmp: Path) -> tuple[float, float]:
    xds, api = free_port(), free_port()
    log = (tmp / "pilot.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sofamesh", "pilot", "--xds", f"127.0.0.1:{xds}", "--api",
                             f"127.0.0.1:{api}", "--data-dir", str(tmp / "pilot"), "--log-level", "WARNING"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{api}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((tmp / "pilot.log").read_text())
            await asyncio.sleep(0.1)
        admin = (tmp / "pilot" / "admin-token").read_text().strip()
        token = httpx.post(f"http://127.0.0.1:{api}/v1/tokens", json={"namespace": "default", "service_account": "bench"},
                           headers={"Authorization": f"Bearer {admin}"}).json()["token"]
        pems = [r.public_bytes(serialization.Encoding.PEM).decode() for r in reqs]
        md = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{xds}") as ch:
            call = ch.unary_unary(ca_api.METHOD, request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=ca_api.IstioCertificateResponse.FromString)
            await call(ca_api.IstioCertificateRequest(csr=pems[0]), metadata=md, timeout=10)  # warm up
            queue = list(reversed(pems))

            async def worker() -> None:
                while queue:
                    resp = await call(ca_api.IstioCertificateRequest(csr=queue.pop()), metadata=md, timeout=10)
                    assert len(resp.cert_chain) == 2

            cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall, cpu = time.perf_counter() - t0, cpu_s(proc.pid) - cpu0
        return len(pems) / wall, cpu / len(pems)
    finally:
        proc.terminate()
        proc.wait(10)


def connect_cost(n: int, tmp: Path) -> tuple[float, float]:
    ca = load_or_mint_ca(tmp / "certs")
    server = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/server", tmp / "certs", "server")
    client = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/client", tmp / "certs", "client")
    plain, tls = free_port(), free_port()
    with UpstreamServer() as up:
        cfg = {"listeners": [
            {"name": "plain", "address": f"127.0.0.1:{plain}", "protocols": ["http1"],
             "routes": [{"name": "up", "cluster": "up"}]},
            {"name": "mtls", "address": f"127.0.0.1:{tls}", "protocols": ["http1"],
             "tls": {"cert": server.cert, "key": server.key, "ca": ca.files.cert, "require_client_cert": True},
             "routes": [{"name": "up", "cluster": "up"}]}],
            "clusters": [{"name": "up", "endpoints": [up.address]}]}
        with ProxyProcess(cfg) as proxy:
            assert proxy.proc is not None
            ctx = ssl.create_default_context(cafile=ca.files.cert)
            ctx.check_hostname = False
            ctx.load_cert_chain(client.cert, client.key)

            def one(port: int, secure: bool) -> None:
                conn = (http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5) if secure
                        else http.client.HTTPConnection("127.0.0.1", port, timeout=5))
                conn.request("GET", "/", headers={"Connection": "close"})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
                conn.close()

            out = []
            for port, secure in ((plain, False), (tls, True)):
                for _ in range(20):
                    one(port, secure)  # warm up
                c0 = cpu_s(proxy.proc.pid)
                for _ in range(n):
                    one(port, secure)
                out.append((cpu_s(proxy.proc.pid) - c0) / n)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csrs", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--connections", type=int, default=400)
    ap.add_argument("--only", choices=("sign", "connect"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sofamesh-identity-") as d:
        tmp = Path(d)
        if args.only in (None, "sign"):
            reqs = csrs(args.csrs)
            rate = asyncio.run(sign_in_process(reqs, tmp))
            print(f"built-in CA, in process:       {rate:8.0f} certificates/s")
            rate, cpu = asyncio.run(sign_over_grpc(reqs, args.concurrency, tmp))
            print(f"Pilot over the CSR API:        {rate:8.0f} certificates/s "
                  f"({cpu * 1e3:.2f} ms of Pilot CPU each, {args.concurrency} in flight)")
        if args.only in (None, "connect"):
            plain, mtls = connect_cost(args.connections, tmp)
            print(f"sidecar CPU per new connection + 1 request: plaintext {plain * 1e3:.2f} ms, "
                  f"mTLS {mtls * 1e3:.2f} ms (+{(mtls - plain) * 1e3:.2f} ms for the handshake)")


if __name__ == "__main__":
    main()
