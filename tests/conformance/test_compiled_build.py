"""The compiled build (setup.py ``COMPILED``: the codecs, the HTTP/2 engine and the stream path
compiled by mypyc) serves real traffic: a sofa-rpc-node consumer and HTTP/1.1 clients through one
``sofamesh proxy`` run by the compiled venv, whose hot-path modules are checked to be C extensions;
the HTTP/2 unit tests pass on the compiled HTTP/2 modules; the venv was installed from a platform
wheel holding every compiled module.

The venv is built by scripts/setup.d/50-mypyc-build.sh (scripts/build-mypyc.sh) into
``$SOFAMESH_CACHE/venv-mypyc``; when it is missing these tests skip locally and fail under ``CI``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.conformance.bolt_peers import CACHE, REPO, node_consumer, node_provider

COMPILED_PY = CACHE / "venv-mypyc" / "bin" / "python"
ECHO = "com.example.EchoService"


def compiled_python() -> str:
    if COMPILED_PY.exists():
        return str(COMPILED_PY)
    msg = f"the compiled build is not installed at {COMPILED_PY}: run scripts/setup.d/50-mypyc-build.sh"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def compiled_modules() -> list[str]:
    """The module names setup.py's ``COMPILED`` lists."""
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets):
            return [p.removesuffix(".py").replace("/", ".") for p in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no COMPILED list")


def test_every_module_setup_py_compiles_is_a_c_extension_in_the_compiled_venv() -> None:
    python = compiled_python()
    modules = compiled_modules()
    assert {"sofamesh.core.proxy.stream", "sofamesh.plugins.protocols.bolt.codec"} <= set(modules)
    code = ("import importlib, json, sys; "
            "print(json.dumps({m: importlib.import_module(m).__file__ for m in ['sofamesh', *sys.argv[1:]]}))")
    out = subprocess.run([python, "-P", "-c", code, *modules], capture_output=True, text=True, timeout=60,
                         cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    files: dict[str, str] = json.loads(out.stdout)
    assert not files.pop("sofamesh").startswith(str(REPO / "sofamesh")), "the venv must hold its own install"
    assert {m: f for m, f in files.items() if not f.endswith(".so")} == {}


def test_request_and_response_heads_are_built_by_compiled_code() -> None:
    """A dataclass's generated ``__init__`` stays interpreted under mypyc (the decorator writes it at
    import); the two heads and the two body events every request builds have their own, compiled
    with the class, and so does the HTTP/1 codec's per-request ``Http1Meta``."""
    python = compiled_python()
    code = ("import json; from sofamesh.core.events import BodyChunk, EndOfMessage, RequestHead, ResponseHead\n"
            "from sofamesh.plugins.protocols.http1.codec import Http1Meta\n"
            "print(json.dumps({c.__name__: [type(c.__init__).__name__, getattr(getattr(c.__init__, '__code__', None),"
            " 'co_filename', None)] for c in (RequestHead, ResponseHead, BodyChunk, EndOfMessage, Http1Meta)}))")
    out = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                         check=False)
    assert out.returncode == 0, out.stderr
    inits = json.loads(out.stdout)
    compiled = ["wrapper_descriptor", None]
    assert inits == {"RequestHead": compiled, "ResponseHead": compiled, "BodyChunk": compiled,
                     "EndOfMessage": compiled, "Http1Meta": compiled}, inits


def loaded_extensions(pid: int) -> set[str]:
    """The C extensions from site-packages the process has mapped, by module name. The modules one
    mypyc build compiles share one library (``<hash>__mypyc``) that holds their code; importing one
    from another does not map its own small ``.so``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.rsplit("/", 1)[-1].split(".")[0] for line in maps.splitlines()
            if "/site-packages/" in line and line.endswith(".so")}


def test_sofa_rpc_node_and_http_clients_get_their_answers_through_the_compiled_proxy() -> None:
    python = compiled_python()
    bolt_port, http_port = free_port(), free_port()
    with node_provider(ECHO, "A") as provider, UpstreamServer("web") as web:
        config = {
            "listeners": [
                {"name": "rpc_in", "address": f"127.0.0.1:{bolt_port}", "protocols": ["bolt"],
                 "routes": [{"match": {"service": f"{ECHO}:1.0"}, "cluster": "rpc", "timeout_ms": 5000}]},
                {"name": "web_in", "address": f"127.0.0.1:{http_port}", "protocols": ["http1"],
                 "routes": [{"name": "all", "cluster": "web", "timeout_ms": 5000}]},
            ],
            "clusters": [
                {"name": "rpc", "protocol": "bolt", "endpoints": [provider.address]},
                {"name": "web", "endpoints": [web.address]},
            ],
        }
        with ProxyProcess(config, python=python) as proxy:
            assert proxy.proc is not None
            mapped = loaded_extensions(proxy.proc.pid)
            assert "stream_manager" in mapped and any(m.endswith("__mypyc") for m in mapped), mapped

            calls: list[dict[str, object]] = [{"method": "echo", "args": [f"m{i}"]} for i in range(40)]
            calls += [{"method": "plus", "args": [2, 3]}, {"method": "fail", "args": ["x"]}]
            for framing in ("v1", "v2crc"):
                results = node_consumer(f"127.0.0.1:{bolt_port}", ECHO, calls, clients=4, framing=framing)
                assert results[:40] == [{"ok": True, "result": f"A:m{i}"} for i in range(40)], framing
                assert results[40] == {"ok": True, "result": 5}, framing
                assert results[41]["ok"] is False and "fail: x" in str(results[41]["message"]), framing

            with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5.0) as client:
                for i in range(20):
                    r = client.get(f"/hello/{i}")
                    assert (r.status_code, r.text, r.headers["x-upstream"]) == (200, f"web GET /hello/{i}\n", "web")
                body = bytes(range(256)) * 1000
                r = client.post("/echo", content=body)
                assert r.status_code == 200 and r.text.startswith(f"{len(body)} ")

            stats = proxy.stats()
            assert stats["listeners"]["rpc_in"]["downstream_rq_total"] == 2 * len(calls)
            assert stats["listeners"]["web_in"]["downstream_rq_2xx"] == 21
            assert stats["clusters"]["rpc"]["upstream_rq_total"] == 2 * len(calls)
    assert web.requests == 21


NATIVE_HTTP2_EXCHANGE = """
import json
import h2.config, h2.connection, h2.events
from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA, EndOfMessage, RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.http2 import frames, machine
from sofamesh.plugins.protocols.http2.codec import Http2Codec
codec = Http2Codec(Role.SERVER, CodecLimits())
peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
peer.initiate_connection()
peer.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/echo.v1.Echo/Say"),
                      (":authority", "echo"), ("content-type", "application/grpc")], end_stream=True)
peer.receive_data(codec.data_to_send())
codec.receive_data(peer.data_to_send())
heads = []
while (ev := codec.next_event()) is not NEED_DATA:
    heads.append([type(ev).__name__, getattr(ev, "service", ""), getattr(ev, "method", "")])
wire = codec.send(ResponseHead("http2", request_id=1, headers=Headers([("content-type", "application/grpc")]),
                               end_stream=False))
wire += codec.send(EndOfMessage(Headers([("grpc-status", "0")]), stream_id=1))
got = [type(e).__name__ for e in peer.receive_data(wire)]
# A connection error (HEADERS on stream 0) and a refused send: their own exception types come out.
bad = machine.Machine(client=False)
bad.receive_data(frames.PREFACE + bytes.fromhex("000000040000000000"))  # the preface and SETTINGS
failed = [type(e).__name__ for e in bad.receive_data(bytes.fromhex("00000101050000000082"))]
try:
    Http2Codec(Role.SERVER, CodecLimits()).send(EndOfMessage(stream_id=7))
    refused = ""
except Exception as exc:
    refused = type(exc).__name__
import sofamesh.plugins.protocols.http2.codec as codec_module
print(json.dumps({"machine": machine.__file__, "codec": codec_module.__file__, "heads": heads, "peer": got,
                  "failed": failed, "refused": refused}))
"""


def _h2_peer_path(tmp_path: Path) -> str:
    """A directory holding only the third-party ``h2`` peer (and what it imports) from this test
    interpreter: the compiled venv is a product install, without the test extra."""
    import h2
    import hpack
    import hyperframe

    peer = tmp_path / "h2-peer"
    peer.mkdir()
    for module in (h2, hpack, hyperframe):
        package = Path(str(module.__file__)).parent
        (peer / package.name).symlink_to(package)
    return str(peer)


def test_the_codec_on_the_own_http2_machine_runs_on_the_compiled_machine(tmp_path: Path) -> None:
    """The codec holds the machine (never extends it): it works whether ``machine`` is compiled and
    ``codec`` interpreted or both are compiled."""
    python = compiled_python()
    out = subprocess.run([python, "-P", "-c", NATIVE_HTTP2_EXCHANGE], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": _h2_peer_path(tmp_path)}, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["machine"].endswith(".so")
    assert result["codec"].endswith(".so")
    assert result["heads"] == [["RequestHead", "echo.v1.Echo", "Say"]]
    assert "ResponseReceived" in result["peer"] and "TrailersReceived" in result["peer"]
    assert result["failed"] == ["ConnectionFailed"]  # not a TypeError from mypyc's one-type-per-name
    assert result["refused"] == "LocalProtocolError"


def test_the_http2_unit_tests_pass_on_the_compiled_http2_modules(tmp_path: Path) -> None:
    """mypyc can compile code into something that behaves otherwise (it found an exception handler
    name reused for two types, and a tuple compared by identity): the HTTP/2 unit tests run on the
    compiled modules. This interpreter's pytest, with the compiled venv's site-packages first on
    the path and the tests copied out of the checkout (whose sources would shadow the build)."""
    python = compiled_python()
    site, version = subprocess.run(
        [python, "-c", "import sys, sysconfig; print(sysconfig.get_paths()['purelib'], sys.version)"],
        capture_output=True, text=True, timeout=30, check=True).stdout.split(" ", 1)
    assert version.strip() == sys.version, "the compiled venv must be built by this interpreter (one C ABI)"
    for d in ("tests", "tests/unit", "tests/unit/plugins", "tests/unit/plugins/protocols"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        if (REPO / d / "__init__.py").exists():
            shutil.copy(REPO / d / "__init__.py", tmp_path / d / "__init__.py")
    shutil.copytree(REPO / "tests/unit/plugins/protocols/http2", tmp_path / "tests/unit/plugins/protocols/http2",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": site}
    check = "import sofamesh.plugins.protocols.http2.fields as f, sofamesh.plugins.protocols.http2.codec as c; " \
            "print(f.__file__, c.__file__)"
    where = subprocess.run([sys.executable, "-P", "-c", check], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, env=env, check=False)
    assert where.returncode == 0 and where.stdout.split() and all(
        f.endswith(".so") for f in where.stdout.split()), where.stdout + where.stderr
    out = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          "-o", "addopts=", "tests/unit/plugins/protocols/http2"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_the_compiled_venv_is_installed_from_a_platform_wheel_with_every_compiled_module() -> None:
    python = compiled_python()
    wheels = sorted((CACHE / "wheels").glob("sofamesh-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    assert not wheel.name.endswith("-none-any.whl"), f"{wheel.name} is not a platform wheel"
    names = zipfile.ZipFile(wheel).namelist()
    missing = [m for m in compiled_modules() if not any(
        n.startswith(m.replace(".", "/") + ".") and n.endswith(".so") for n in names)]
    assert missing == []
    assert any("__mypyc" in n and n.endswith(".so") for n in names)  # the library the modules share
    record = subprocess.run([python, "-m", "pip", "show", "-f", "sofamesh"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert "Editable project location" not in record
    assert "stream_manager.cpython" in record  # the installed files are the wheel's extensions
