"""The API port's admin token: minting and revoking workload tokens and stepping a root rotation
need ``Authorization: Bearer <admin token>`` (401 without, 403 with another); reads stay open; the
CLI sends the token from ``--admin-token-file``; an operator's own file is used, a bad one stops
Pilot naming the field."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import REPO, PilotProcess


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOFAMESH_ADMIN_TOKEN_FILE"}
    return subprocess.run(
        [sys.executable, "-m", "sofamesh", "pilot", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
    )


def test_minting_revoking_and_rotating_need_the_admin_token(tmp_path: Path) -> None:
    pilot = PilotProcess(tmp_path / "data").start()
    try:
        path = pilot.admin_token_file
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) >= 32
        body = {"namespace": "default", "service_account": "web"}
        r = httpx.post(f"{pilot.api_url}/v1/tokens", json=body, timeout=5)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "needs the admin token" in r.json()["error"] and str(path) in r.json()["error"]
        r = httpx.post(f"{pilot.api_url}/v1/tokens", json=body, headers={"Authorization": "Bearer not-it"}, timeout=5)
        assert r.status_code == 403 and "not the admin token" in r.json()["error"], r.text
        for method, url, json in (
            ("DELETE", "/v1/tokens/abc", None),
            ("POST", "/v1/ca/root-rotation", {"step": "prepare"}),
        ):
            assert httpx.request(method, pilot.api_url + url, json=json, timeout=5).status_code == 401
        r = httpx.post(f"{pilot.api_url}/v1/tokens", json=body, headers=pilot.admin_headers(), timeout=5)
        assert r.status_code == 201 and r.json()["identity"] == "spiffe://cluster.local/ns/default/sa/web", r.text
        # reads need nothing
        assert httpx.get(f"{pilot.api_url}/v1/ca/roots", timeout=5).status_code == 200
        assert httpx.get(f"{pilot.api_url}/debug/ca", timeout=5).status_code == 200
        # the CLI: without the file Pilot's 401 is shown (exit 1); with it, a token
        create = ("token", "create", "--namespace", "default", "--service-account", "web", "--pilot", pilot.api_url)
        out = _cli(*create, cwd=tmp_path)
        assert out.returncode == 1 and "401" in out.stderr and "needs the admin token" in out.stderr, out
        out = _cli(*create, "--admin-token-file", str(tmp_path / "missing"), cwd=tmp_path)
        assert out.returncode == 1 and "--admin-token-file: cannot read" in out.stderr, out
        out = _cli(*create, "--admin-token-file", str(path), cwd=tmp_path)
        assert out.returncode == 0 and out.stdout.count(".") == 2, out  # a JWT
        # from Pilot's own directory the default file (pilot-data/admin-token) is found
        (tmp_path / "pilot-data").mkdir()
        (tmp_path / "pilot-data" / "admin-token").write_text(path.read_text())
        out = _cli("ca", "rotate-root", "prepare", "--pilot", pilot.api_url, cwd=tmp_path)
        assert out.returncode == 0 and "root_rotation" in out.stdout, out
    finally:
        pilot.stop()
    # the token survives a restart (the same file)
    again = PilotProcess(tmp_path / "data", api_port=pilot.api_port).start()
    try:
        r = httpx.post(f"{again.api_url}/v1/tokens", json=body, headers=pilot.admin_headers(), timeout=5)
        assert r.status_code == 201, r.text
    finally:
        again.stop()


def test_an_operators_admin_token_file_is_used_and_a_bad_one_stops_pilot(tmp_path: Path) -> None:
    mine = tmp_path / "ops-admin-token"
    mine.write_text("short\n")
    bad = PilotProcess(tmp_path / "bad", config={"admin_token_file": str(mine)})
    try:
        bad.start()
        raise AssertionError("Pilot started with a 5-character admin token")
    except AssertionError as exc:
        assert "admin_token_file" in str(exc) and "at least 16" in str(exc), exc
    finally:
        bad.stop()
    mine.write_text("an-operators-own-admin-token-0123456789\n")
    pilot = PilotProcess(tmp_path / "good", config={"admin_token_file": str(mine)}).start()
    try:
        assert not (tmp_path / "good" / "admin-token").exists()
        r = httpx.post(
            f"{pilot.api_url}/v1/tokens",
            json={"namespace": "default", "service_account": "web"},
            headers={"Authorization": "Bearer an-operators-own-admin-token-0123456789"},
            timeout=5,
        )
        assert r.status_code == 201, r.text
    finally:
        pilot.stop()
