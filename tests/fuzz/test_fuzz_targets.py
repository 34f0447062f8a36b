"""The fuzz targets in CI: a short coverage-guided pass of each (atheris, a few seconds, bounded
per input and in memory), and every crash input ever found (fuzz/crashes/) replayed as a
regression test."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.seeds import seeds
from fuzz.targets import TARGETS
from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.errors import ProtocolError
from sofamesh.core.events import NEED_DATA, EndOfMessage, RequestHead
from sofamesh.plugins.protocols.http2.codec import Http2Codec

ROOT = Path(__file__).resolve().parents[2]
PASS_S = 3  # seconds of fuzzing per target in CI; `make fuzz` runs longer

CRASHES = sorted(p for p in (ROOT / "fuzz" / "crashes").glob("*/*") if p.is_file())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_fuzz_pass_finds_no_crash(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz.run",
            target,
            f"-max_total_time={PASS_S}",
            "-timeout=5",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PASS_S + 60,
        env={**os.environ, "FUZZ_CORPUS": str(tmp_path / "corpus")},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    assert m and int(m.group(1)) > 0, out[-2000:]
    print(f"{target}: {m.group(1)} executions in {PASS_S} s")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_decodes_without_error(target: str) -> None:
    for s in seeds()[target]:  # every target has seeds
        TARGETS[target](s)


def test_every_crash_input_once_found_is_refused_cleanly() -> None:
    """fuzz/crashes/<target>/<input>: what a fuzz run once found, replayed after its fix."""
    for crash in CRASHES:
        TARGETS[crash.parent.name](crash.read_bytes())


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _requests(data: bytes, whole: bool = True) -> list[RequestHead]:
    """The request heads a server codec decodes from a client's connection replayed alone. Without
    the server's side no DATA goes back, so a grpcio connection's last WINDOW_UPDATE frames may trip
    the WINDOW_UPDATE flood limit: accepted only once every request it carried has ended (``whole``;
    else once its heads came: where grpcio puts its WINDOW_UPDATEs varies from run to run)."""
    codec = Http2Codec(Role.SERVER, CodecLimits())
    codec.receive_data(data)
    heads, ended = [], 0
    try:
        while (ev := codec.next_event()) is not NEED_DATA:
            if isinstance(ev, RequestHead):
                heads.append(ev)
                ended += ev.end_stream
            elif isinstance(ev, EndOfMessage):
                ended += 1
    except ProtocolError as exc:
        assert "WINDOW_UPDATE flood" in str(exc) and (ended == len(heads) or not whole), (exc, heads, ended)
    return heads


def test_the_http2_seeds_are_what_curl_nghttp_and_grpcio_sent() -> None:
    """fuzz/captured/http2/ (fuzz/capture_http2.py): each file is one real client's connection from
    its preface to its close, whose requests the server codec decodes; the http2_server seeds are
    those files, not bytes of the project's own client codec."""
    files = sorted((ROOT / "fuzz" / "captured" / "http2").glob("*.bin"))
    assert {p.name.split("-")[0] for p in files} == {"curl", "nghttp", "grpcio"}, files
    paths = set()
    for p in files:
        data = p.read_bytes()
        assert data.startswith(PREFACE), p
        heads = _requests(data)
        assert heads, p
        paths |= {h.path for h in heads}
    assert "/sofamesh.test.Echo/Bidi" in paths and "/a" in paths and "/index.html?q=1" in paths, paths
    assert seeds()["http2_server"] == [b"\x80" + p.read_bytes() for p in files]


def test_capturing_runs_each_client_through_a_socket_the_script_owns() -> None:
    """fuzz/capture_http2.py against the real clients now (the committed files are one such run)."""
    for tool in ("curl", "nghttp"):
        if shutil.which(tool) is None:
            message = f"{tool} is not installed: run scripts/setup.d/22-http2-peers.sh"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    from fuzz.capture_http2 import capture

    captured = asyncio.run(capture())
    assert set(captured) == {
        "curl-get",
        "curl-grpc-post",
        "nghttp-two-streams",
        "nghttp-grpc-upload",
        "grpcio-unary",
        "grpcio-server-stream",
        "grpcio-client-stream",
        "grpcio-bidi",
        "grpcio-fail",
    }, captured.keys()
    for name, connections in captured.items():
        assert connections and all(c.startswith(PREFACE) for c in connections), name
        assert sum(len(_requests(c, whole=False)) for c in connections) == (2 if name == "nghttp-two-streams" else 1), (
            name
        )
