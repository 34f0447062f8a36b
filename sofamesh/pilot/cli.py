"""The ``sofamesh pilot`` subcommand: ``-c FILE`` or quick mode flags."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sofamesh.core.errors import MeshError

if TYPE_CHECKING:  # the proxy builds this parser too: Pilot's config models load only when Pilot runs
    from sofamesh.pilot import config as pilot_config


_DEFAULT_API = "http://127.0.0.1:15080"
_DEFAULT_ADMIN_TOKEN = "pilot-data/admin-token"  # Pilot's default <data_dir>/admin-token, from the same directory
_ADMIN_HELP = ("file holding Pilot's admin token (default: $SOFAMESH_ADMIN_TOKEN_FILE, else "
               f"{_DEFAULT_ADMIN_TOKEN}: Pilot's <data_dir>/admin-token)")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``pilot`` to the ``sofamesh`` command's subparsers."""
    p = subparsers.add_parser(
        "pilot", help="run the control plane (xDS + Open Service Registry API)",
        description="Run Pilot from a config file (-c) or in quick mode (--xds/--api/--registry/--data-dir). "
                    "The API port also serves /ready, /debug/syncz, /debug/registry and /metrics.")
    p.add_argument("-c", "--config", type=Path, help="Pilot YAML config file")
    p.add_argument("--xds", metavar="HOST:PORT", help="xDS (ADS gRPC) address (default 127.0.0.1:15010)")
    p.add_argument("--xds-transport", metavar="NAME", help="what serves ADS: grpcio (default) or native")
    p.add_argument("--api", metavar="HOST:PORT",
                   help="registry API and admin address (default 127.0.0.1:15080)")
    p.add_argument("--registry", metavar="NAME", help="registry type to read and write (default embedded)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="where registries persist (default ./pilot-data)")
    p.add_argument("--debounce-ms", type=int, metavar="MS", help="push quiet period (default 100)")
    p.add_argument("--max-delay-ms", type=int, metavar="MS", help="push max delay (default 1000)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = p.add_subparsers(dest="pilot_command", metavar="COMMAND")
    tok = sub.add_parser("token", help="bearer tokens workloads get their certificates with")
    tsub = tok.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    tc = tsub.add_parser("create", help="print a token bound to one identity (spiffe://<td>/ns/NS/sa/SA)")
    tc.add_argument("--namespace", required=True)
    tc.add_argument("--service-account", required=True)
    tc.add_argument("--ttl", metavar="DURATION", help="lifetime, e.g. 30m, 24h, 720h (default: Pilot's "
                    "ca.token_ttl_s, 24h)")
    tc.add_argument("--pilot", default=_DEFAULT_API, metavar="URL", help=f"Pilot's API port (default {_DEFAULT_API})")
    tc.add_argument("--admin-token-file", metavar="FILE", help=_ADMIN_HELP)
    tc.add_argument("--json", action="store_true", help="print the whole answer (token, identity, jti, expires_at)")
    tr = tsub.add_parser("revoke", help="refuse a token from now on, by its jti")
    tr.add_argument("jti")
    tr.add_argument("--pilot", default=_DEFAULT_API, metavar="URL", help=f"Pilot's API port (default {_DEFAULT_API})")
    tr.add_argument("--admin-token-file", metavar="FILE", help=_ADMIN_HELP)
    ca = sub.add_parser("ca", help="Pilot's CA")
    csub = ca.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)
    rr = csub.add_parser("rotate-root", help="one step of a root rotation: prepare (a new root, trusted beside the "
                         "current one), activate (it signs), finish (the old root is no longer trusted); wait one "
                         "workload certificate lifetime between steps")
    rr.add_argument("step", choices=["prepare", "activate", "finish"])
    rr.add_argument("--pilot", default=_DEFAULT_API, metavar="URL", help=f"Pilot's API port (default {_DEFAULT_API})")
    rr.add_argument("--admin-token-file", metavar="FILE", help=_ADMIN_HELP)


def config_from_args(args: argparse.Namespace) -> pilot_config.PilotConfig:
    """The config file, with any quick-mode flag overriding it."""
    from sofamesh.pilot import config as pilot_config

    if args.config is not None:
        data = pilot_config.load(args.config).model_dump(mode="python")
    else:
        data = {}
    if args.xds or args.xds_transport:
        xds = dict(data.get("xds") or {})
        if args.xds:
            xds["address"] = args.xds
        if args.xds_transport:
            xds["transport"] = args.xds_transport
        data["xds"] = xds
    if args.api:
        data["api"] = {"address": args.api}
    if args.data_dir is not None:
        data["data_dir"] = args.data_dir
    if args.registry:
        data["registries"] = [{"name": args.registry, "type": args.registry}]
    if args.debounce_ms is not None or args.max_delay_ms is not None:
        deb = dict(data.get("debounce") or {})
        if args.debounce_ms is not None:
            deb["quiet_ms"] = args.debounce_ms
        if args.max_delay_ms is not None:
            deb["max_delay_ms"] = args.max_delay_ms
        data["debounce"] = deb
    return pilot_config.parse(data)


async def _serve(cfg: pilot_config.PilotConfig) -> None:
    from sofamesh.pilot.app import Pilot

    pilot = Pilot(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await pilot.start()
        print(f"pilot: xds 127.0.0.1:{pilot.xds_port} api http://{cfg.api.host_port[0]}:{pilot.api_port}",
              flush=True)
        await stop.wait()
    finally:
        await pilot.stop()


def _admin_headers(args: argparse.Namespace) -> dict[str, str]:
    """``Authorization: Bearer <admin token>`` from ``--admin-token-file`` (or its defaults); none
    when the default file is missing (Pilot then answers 401 saying what it needs)."""
    import os

    given = getattr(args, "admin_token_file", None) or os.environ.get("SOFAMESH_ADMIN_TOKEN_FILE")
    path = Path(given or _DEFAULT_ADMIN_TOKEN)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        if given:
            raise MeshError(f"--admin-token-file: cannot read {path}: {exc}") from None
        return {}
    return {"Authorization": f"Bearer {token}"}


def _call(method: str, url: str, body: dict[str, object] | None = None,
          headers: dict[str, str] | None = None) -> dict[str, object]:
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        raise MeshError(f"{method} {url}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MeshError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None


def run_token(args: argparse.Namespace) -> int:
    """``sofamesh pilot token create|revoke``: 0 when done, 1 when Pilot refused or was not reached."""
    import json

    base = str(args.pilot).rstrip("/")
    try:
        admin = _admin_headers(args)
        if args.token_command == "revoke":
            _call("DELETE", f"{base}/v1/tokens/{args.jti}", headers=admin)
            print(f"revoked {args.jti}")
            return 0
        body: dict[str, object] = {"namespace": args.namespace, "service_account": args.service_account}
        if args.ttl:
            from sofamesh.pilot.policy.duration import parse_duration

            try:
                body["ttl_s"] = parse_duration(args.ttl)
            except ValueError as exc:
                print(f"error: --ttl: {exc}", file=sys.stderr)
                return 2
        answer = _call("POST", f"{base}/v1/tokens", body, admin)
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=1, sort_keys=True) if args.json else answer["token"])
    return 0


def run_ca(args: argparse.Namespace) -> int:
    """``sofamesh pilot ca rotate-root STEP``: prints the CA as ``/debug/ca`` shows it afterwards."""
    import json

    try:
        answer = _call("POST", f"{str(args.pilot).rstrip('/')}/v1/ca/root-rotation", {"step": args.step},
                       _admin_headers(args))
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=1, sort_keys=True))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run Pilot until SIGINT/SIGTERM; 0 on a clean stop, 2 on a config or plugin error."""
    if getattr(args, "pilot_command", None) == "token":
        return run_token(args)
    if getattr(args, "pilot_command", None) == "ca":
        return run_ca(args)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        asyncio.run(_serve(cfg))
    except MeshError as exc:
        print(f"pilot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pilot: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sofamesh")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return run(parser.parse_args(argv))


__all__ = ["add_parser", "config_from_args", "main", "run", "run_ca", "run_token"]
