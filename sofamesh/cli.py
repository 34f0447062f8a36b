"""The ``sofamesh`` command: proxy | pilot | check-config | plugins | demo | version."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from sofamesh import __version__


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def quick_config(listen: str, upstreams: str, protocol: str, admin: str | None) -> Any:
    from sofamesh.core.config.loader import from_mapping

    eps = [u.strip() for u in upstreams.split(",") if u.strip()]
    return from_mapping({
        "admin": {"address": admin} if admin else None,
        "listeners": [{"name": "quick", "address": listen,
                       "protocols": "auto" if protocol == "auto" else [protocol],
                       "routes": [{"name": "all", "cluster": "upstream"}]}],
        "clusters": [{"name": "upstream", "endpoints": eps}],
    })


def _print_config_errors(exc: Exception) -> None:
    from sofamesh.core.errors import ConfigErrors

    errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)


def cmd_proxy(args: argparse.Namespace) -> int:
    from sofamesh.core.config.loader import load_file
    from sofamesh.core.errors import MeshError

    _setup_logging(args.log_level)
    try:
        if args.config:
            config = load_file(args.config)
        elif args.listen and args.upstream:
            config = quick_config(args.listen, args.upstream, args.protocol, args.admin)
        else:
            print("error: give -c FILE, or --listen HOST:PORT --upstream HOST:PORT[,...]", file=sys.stderr)
            return 2
    except MeshError as exc:
        _print_config_errors(exc)
        return 2
    if args.workers > 1:
        from sofamesh.core.workers import supervise

        return supervise(config, args.workers, args.config)
    return _serve(config, args.config)


def _serve(config: Any, path: str | None) -> int:
    from sofamesh.core.errors import MeshError
    from sofamesh.core.gc_policy import settle_after_start
    from sofamesh.core.net import loop
    from sofamesh.core.server import Server

    async def main() -> int:
        server = Server(config)
        server.config_path = path
        try:
            await server.start()
        except MeshError as exc:
            _print_config_errors(exc)
            return 2
        settle_after_start()
        names = ", ".join(f"{n}={h.config.address}" for n, h in server.listeners.items())
        logging.getLogger("sofamesh").info("serving %s (admin %s, loop %s)", names,
                                           server.admin_address or "off", loop.loop_name())
        cut = await server.serve_until_stopped()
        print(f"sofamesh: stopped; {cut} in-flight request(s) cut", file=sys.stderr)
        return 0

    return loop.run(main())


def cmd_check_config(args: argparse.Namespace) -> int:
    from sofamesh.core.config.check import build_filters, resolve
    from sofamesh.core.config.loader import load_file
    from sofamesh.core.errors import ConfigError, ConfigErrors, MeshError
    from sofamesh.core.plugin_host import PluginHost

    try:
        config = load_file(args.file)
        host = PluginHost()
        cats = resolve(config, host)
        errors: list[ConfigError] = []
        for i, lc in enumerate(config.listeners):
            try:
                build_filters(cats, list(lc.filters), f"listeners[{i}].filters")
            except ConfigErrors as exc:
                errors.extend(exc.errors)
        if errors:
            raise ConfigErrors(errors)
    except MeshError as exc:
        _print_config_errors(exc)
        n = len(exc.errors) if isinstance(exc, ConfigErrors) else 1
        print(f"{args.file}: {n} error(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: ok ({len(config.listeners)} listener(s), {len(config.clusters)} cluster(s))")
    return 0


def plugin_table() -> list[dict[str, str]]:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.config.check import Catalogs
    from sofamesh.core.errors import PluginError
    from sofamesh.core.plugin_host import PILOT_GROUP, PluginHost

    rows: list[dict[str, str]] = []
    host = PluginHost()
    avail = host.available()
    for name in sorted(avail):
        try:
            host.load([name])
        except PluginError as exc:
            info = avail[name]
            rows.append({"name": name, "kind": "error", "distribution": info.distribution,
                         "version": info.version, "error": str(exc)})
    cats = Catalogs.build(host)
    for kind, cat in (("protocol", cats.protocols), ("filter", cats.filters),
                      ("load_balancer", cats.load_balancers)):
        for n in cat:
            p = cat.provenance(n)
            rows.append({"name": n, "kind": kind, "distribution": p.distribution, "version": p.version})
    try:
        from sofamesh.pilot import hookspecs as pilot_specs
    except ImportError:
        return rows
    phost = PluginHost(PILOT_GROUP, pilot_specs)
    pavail = phost.available()
    for name in sorted(pavail):
        try:
            phost.load([name])
        except PluginError as exc:
            info = pavail[name]
            rows.append({"name": name, "kind": "error", "distribution": info.distribution,
                         "version": info.version, "error": str(exc)})
    for hook, kind in (("pilot_register_registries", "registry"), ("pilot_register_xds_generators", "xds_generator")):
        if hasattr(phost.pm.hook, hook):
            cat: Catalog[Any] = phost.fill(hook, Catalog(kind))
            for n in cat:
                p = cat.provenance(n)
                rows.append({"name": n, "kind": kind, "distribution": p.distribution, "version": p.version})
    return rows


def cmd_plugins(args: argparse.Namespace) -> int:
    from sofamesh.core.errors import PluginError

    try:
        rows = plugin_table()
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cols = ("name", "kind", "distribution", "version")
    widths = [max(len(c), *(len(r[c]) for r in rows)) if rows else len(c) for c in cols]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(cols, widths, strict=True)))
        if "error" in r:
            print(f"    {r['error']}")
    return 1 if any("error" in r for r in rows) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sofamesh.demo import run_demo

    return run_demo(verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sofamesh", description="A service mesh in Python: sidecar, gateway, Pilot.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    px = sub.add_parser("proxy", help="run the data plane (sidecar or edge gateway)")
    px.add_argument("-c", "--config", help="YAML config file")
    px.add_argument("--listen", help="quick mode: HOST:PORT to listen on")
    px.add_argument("--upstream", help="quick mode: HOST:PORT[,HOST:PORT...] to forward to")
    px.add_argument("--protocol", default="auto", help="quick mode: protocol name or 'auto' (default)")
    px.add_argument("--admin", default=None, help="quick mode: admin HOST:PORT (default: no admin)")
    px.add_argument("--workers", type=int, default=1, help="processes sharing the ports (SO_REUSEPORT)")
    px.add_argument("--log-level", default="info")
    px.set_defaults(func=cmd_proxy)

    cc = sub.add_parser("check-config", help="validate a config file and print every error")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_check_config)

    pl = sub.add_parser("plugins", help="list installed plugins: name, kind, distribution, version")
    pl.set_defaults(func=cmd_plugins)

    dm = sub.add_parser("demo", help="run the demo on embedded defaults")
    dm.add_argument("-v", "--verbose", action="store_true")
    dm.set_defaults(func=cmd_demo)

    vs = sub.add_parser("version", help="print the version")
    vs.set_defaults(func=lambda a: print(f"sofamesh {__version__}") or 0)

    try:
        from sofamesh.pilot import cli as pilot_cli
    except ImportError:
        pilot_cli = None  # type: ignore[assignment]
    if pilot_cli is not None and hasattr(pilot_cli, "add_parser"):
        pilot_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "pilot":
        from sofamesh.pilot import cli as pilot_cli

        return int(pilot_cli.run(args))
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
