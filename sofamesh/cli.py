"""The ``sofamesh`` command: proxy | pilot | check-config | plugins | demo | apply | get | delete | analyze |
proxy-status | proxy-config | describe | version."""

from __future__ import annotations

import argparse
import logging
import os
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


def xds_config(config: Any, args: argparse.Namespace) -> Any:
    """The bootstrap config with the ``--xds`` flags laid over its ``xds`` section."""
    from pydantic import ValidationError

    from sofamesh.core.config.model import XdsConfig
    from sofamesh.core.errors import ConfigError, ConfigErrors

    base = config.xds.model_dump() if config.xds is not None else {}
    servers = [a.strip() for a in args.xds.split(",") if a.strip()] if args.xds else []
    flags: dict[str, Any] = {"address": servers[0] if servers else None, "addresses": servers[1:] if servers else None,
                             "node_id": args.node_id, "cluster": args.cluster, "mode": args.xds_mode,
                             "tls": {"ca": args.xds_ca} if args.xds_ca else None}
    merged = {**base, **{k: v for k, v in flags.items() if v is not None}}
    if args.admin:
        config = config.model_copy(update={"admin": config.admin.model_copy(update={"address": args.admin})
                                           if config.admin else None})
    try:
        return config.model_copy(update={"xds": XdsConfig.model_validate(merged)})
    except ValidationError as exc:
        raise ConfigErrors([ConfigError("xds." + ".".join(str(p) for p in e["loc"]),
                                        "required: give --node-id" if e["loc"] == ("node_id",) and
                                        e["type"] == "missing" else e["msg"]) for e in exc.errors()]) from None


def agent_config(config: Any, args: argparse.Namespace) -> Any:
    """The config with the agent flags (``--token``, ``--token-file``, ...) laid over its ``agent`` section."""
    from pydantic import ValidationError

    from sofamesh.core.config.model import AgentConfig
    from sofamesh.core.errors import ConfigError, ConfigErrors

    flags = {"token": args.token, "token_file": args.token_file, "ca_address": args.ca_address,
             "namespace": args.namespace, "service_account": args.service_account,
             "trust_domain": args.trust_domain}
    given = {k: v for k, v in flags.items() if v is not None}
    if not given and config.agent is None:
        return config
    base = config.agent.model_dump(exclude_none=True) if config.agent is not None else {}
    try:
        return config.model_copy(update={"agent": AgentConfig.model_validate({**base, **given})})
    except ValidationError as exc:
        raise ConfigErrors([ConfigError("agent" + "".join(f".{p}" for p in e["loc"]), e["msg"])
                            for e in exc.errors()]) from None


def cmd_proxy(args: argparse.Namespace) -> int:
    from sofamesh.core.config.loader import from_mapping, load_file
    from sofamesh.core.errors import MeshError

    _setup_logging(args.log_level)
    try:
        if args.xds or args.config:
            config = load_file(args.config) if args.config else from_mapping({})
            if args.xds or config.xds is not None:
                config = xds_config(config, args)
        elif args.listen and args.upstream:
            config = quick_config(args.listen, args.upstream, args.protocol, args.admin)
        else:
            print("error: give -c FILE, or --listen HOST:PORT --upstream HOST:PORT[,...]", file=sys.stderr)
            return 2
        config = agent_config(config, args)
        if args.upgrade_socket:
            config = config.model_copy(update={"upgrade_socket": args.upgrade_socket})
        if args.hot_upgrade and not config.upgrade_socket:
            print("error: --hot-upgrade needs the upgrade socket of the running process: --upgrade-socket PATH "
                  "or upgrade_socket: in the config", file=sys.stderr)
            return 2
    except MeshError as exc:
        _print_config_errors(exc)
        return 2
    if args.workers > 1:
        from sofamesh.core.workers import supervise

        return supervise(config, args.workers, args.config, args.hot_upgrade, args.argv)
    return _serve(config, args.config, args.hot_upgrade, args.argv)


def _serve(config: Any, path: str | None, hot_upgrade: bool = False, argv: Sequence[str] = ()) -> int:
    import asyncio

    from sofamesh.core.errors import MeshError
    from sofamesh.core.gc_policy import settle_after_start
    from sofamesh.core.net import loop
    from sofamesh.core.server import Server

    async def main() -> int:
        agent = None
        if config.agent is not None:
            from sofamesh.core.security.agent import WorkloadAgent, settings_from_config

            try:
                agent = WorkloadAgent(settings_from_config(config.agent, config.xds))
                await agent.start()  # the first certificate before any listener needs it
            except MeshError as exc:
                _print_config_errors(exc)
                return 2
        server = Server(config)
        server.config_path = path
        upgrade = None
        inherited, admin_sock = None, None
        try:
            if config.upgrade_socket:
                from sofamesh.core.upgrade import HotUpgrade

                upgrade = HotUpgrade(server, config.upgrade_socket, argv)
                if hot_upgrade:
                    inherited, admin_sock = await upgrade.take_over()
                else:
                    await upgrade.listen()
            await server.start(inherited, admin_sock)
        except MeshError as exc:
            _print_config_errors(exc)
            if upgrade is not None and hot_upgrade:
                await upgrade.failed(str(exc))
                print("sofamesh: hot upgrade abandoned; the running process keeps serving", file=sys.stderr)
            if agent is not None:
                await agent.stop()
            return 2
        if config.xds is not None:
            from sofamesh.core.xds.client import attach

            client = await attach(server)
            if hot_upgrade and upgrade is not None and not client.synced.is_set():
                # a successor serves a complete config or nothing: the running process carries on
                why = (f"xds {client.address}: no complete config after {config.xds.initial_fetch_timeout_ms} ms "
                       f"({client.last_error or 'nothing received'})")
                print(f"error: {why}", file=sys.stderr)
                await upgrade.failed(why)
                print("sofamesh: hot upgrade abandoned; the running process keeps serving", file=sys.stderr)
                await server.shutdown()
                return 2
        if upgrade is not None:
            if hot_upgrade:
                await upgrade.started()
            import signal

            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _spawn_upgrade, upgrade)
        settle_after_start()
        names = ", ".join(f"{n}={h.config.address}" for n, h in server.listeners.items())
        logging.getLogger("sofamesh").info("serving %s (admin %s, loop %s)", names,
                                           server.admin_address or "off", loop.loop_name())
        cut = await server.serve_until_stopped()
        if agent is not None:
            await agent.stop()
        if upgrade is not None and upgrade.phase == "handed over":
            print(f"sofamesh: handed over to pid {upgrade.report.peer_pid}: {upgrade.report.line()}", file=sys.stderr)
        else:
            print(f"sofamesh: stopped; {cut} in-flight request(s) cut", file=sys.stderr)
        return 0

    return loop.run(main())


def _spawn_upgrade(upgrade: Any) -> None:
    """SIGUSR2: start this command again with --hot-upgrade; it takes over from this process."""
    from sofamesh.core.errors import MeshError

    try:
        upgrade.spawn()
    except (MeshError, OSError) as exc:
        logging.getLogger("sofamesh").error("SIGUSR2: %s", exc)


def cmd_check_config(args: argparse.Namespace) -> int:
    from sofamesh.core.build import proxy_host
    from sofamesh.core.config.check import check_mapping
    from sofamesh.core.config.loader import from_mapping, read_mapping
    from sofamesh.core.errors import ConfigErrors, MeshError

    try:
        data = read_mapping(args.file)
        errors = check_mapping(data, proxy_host())
    except MeshError as exc:  # unreadable, not YAML, or a plugin that cannot be loaded
        _print_config_errors(exc)
        print(f"{args.file}: {len(exc.errors) if isinstance(exc, ConfigErrors) else 1} error(s)", file=sys.stderr)
        return 1
    if errors:
        _print_config_errors(ConfigErrors(errors))
        print(f"{args.file}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    config = from_mapping(data)
    print(f"{args.file}: ok ({len(config.listeners)} listener(s), {len(config.clusters)} cluster(s))")
    return 0


def plugin_table() -> list[dict[str, str]]:
    from sofamesh.core.build import proxy_host
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.config.check import Catalogs
    from sofamesh.core.errors import PluginError
    from sofamesh.core.plugin_host import PILOT_GROUP, PluginHost

    rows: list[dict[str, str]] = []
    host = proxy_host()
    avail = host.available()
    for name in sorted(avail):
        try:
            host.load([name])
        except PluginError as exc:
            info = avail[name]
            rows.append({"name": name, "kind": "error", "distribution": info.distribution,
                         "version": info.version, "error": str(exc)})
    cats = Catalogs.build(host)
    providers: set[str] = set()
    for kind, cat in (("protocol", cats.protocols), ("filter", cats.filters),
                      ("load_balancer", cats.load_balancers)):
        for n in cat:
            p = cat.provenance(n)
            providers.add(p.plugin)
            rows.append({"name": n, "kind": kind, "distribution": p.distribution, "version": p.version})
    for name in host.loaded():
        if name not in providers:  # a plugin that only implements lifecycle hooks
            info = avail[name]
            rows.append({"name": name, "kind": "lifecycle", "distribution": info.distribution,
                         "version": info.version})
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
    for hook, kind in (("pilot_register_registries", "registry"), ("pilot_register_xds_generators", "xds_generator"),
                       ("pilot_register_config_stores", "config_store"), ("pilot_register_cas", "ca")):
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

    return run_demo(verbose=args.verbose, dashboard=args.dashboard)


def cmd_certs(args: argparse.Namespace) -> int:
    from sofamesh.certs import run

    return run(args)


def cmd_agent(args: argparse.Namespace) -> int:
    """``sofamesh agent``: the workload agent alone, serving SDS to a co-located Envoy."""
    import asyncio
    import contextlib
    import signal

    from sofamesh.core.config.model import AgentConfig, PilotTlsConfig
    from sofamesh.core.errors import MeshError
    from sofamesh.core.net import loop
    from sofamesh.core.net.secrets import PROCESS_SECRETS
    from sofamesh.core.security.agent import WorkloadAgent, settings_from_config
    from sofamesh.core.security.sds import SdsServer

    _setup_logging(args.log_level)
    try:
        cfg = AgentConfig(ca_address=args.pilot, token=args.token, token_file=args.token_file,
                          namespace=args.namespace, service_account=args.service_account,
                          trust_domain=args.trust_domain, validity_s=args.validity_s,
                          ca_tls=PilotTlsConfig(ca=args.pilot_ca) if args.pilot_ca else None)
        agent = WorkloadAgent(settings_from_config(cfg, None))
    except MeshError as exc:
        _print_config_errors(exc)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        sds = SdsServer(PROCESS_SECRETS)
        try:
            await agent.start()
        except MeshError as exc:
            print(f"error: {exc}", file=sys.stderr)
            await agent.stop()
            return 1
        await sds.start(args.sds_socket)
        print(f"agent: {agent.identity} serving SDS on unix:{args.sds_socket}", flush=True)
        try:
            await stop.wait()
        finally:
            await sds.stop()
            await agent.stop()
        return 0

    return loop.run(main())


def cmd_ratelimit_server(args: argparse.Namespace) -> int:
    from sofamesh.ratelimit.server import run

    return run(args)


def cmd_policy(args: argparse.Namespace) -> int:
    """apply / get / delete / analyze: the logic is in sofamesh.pilot.policy.client."""
    from sofamesh.pilot.policy import client

    pilot = client.PilotClient(args.pilot)
    try:
        if args.command == "apply":
            return client.apply(pilot, args.filename, args.namespace, sys.stdout, sys.stderr, args.dry_run)
        if args.command == "get":
            return client.get(pilot, args.kind, args.name, args.namespace, args.all_namespaces, args.output,
                              sys.stdout)
        if args.command == "delete":
            return client.delete(pilot, args.filename, args.kind, args.name, args.namespace, sys.stdout, sys.stderr)
        return client.analyze(pilot, sys.stdout)
    except client.CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        pilot.close()


def _add_policy_parsers(sub: Any) -> None:
    def common(p: argparse.ArgumentParser, namespaced: bool = True) -> None:
        p.add_argument("--pilot", default="http://127.0.0.1:15080", metavar="URL",
                       help="Pilot's API (default %(default)s)")
        if namespaced:
            p.add_argument("-n", "--namespace", help="namespace (default: the document's, else default)")
        p.set_defaults(func=cmd_policy)

    ap = sub.add_parser("apply", help="create or replace policy resources (Istio / Aeraki YAML) in Pilot")
    ap.add_argument("-f", "--filename", required=True, metavar="FILE|DIR|-")
    ap.add_argument("--dry-run", action="store_true", help="validate only")
    common(ap)
    gt = sub.add_parser("get", help="show policy resources: KIND [NAME]")
    gt.add_argument("kind", help="VirtualService, vs, destinationrules, ...")
    gt.add_argument("name", nargs="?")
    gt.add_argument("-A", "--all-namespaces", action="store_true")
    gt.add_argument("-o", "--output", choices=("yaml", "json"))
    common(gt)
    dl = sub.add_parser("delete", help="delete policy resources: -f FILE, or KIND NAME")
    dl.add_argument("-f", "--filename", metavar="FILE|DIR|-")
    dl.add_argument("kind", nargs="?")
    dl.add_argument("name", nargs="?")
    common(dl)
    an = sub.add_parser("analyze", help="report policy that is accepted but will not work as written")
    common(an, namespaced=False)


def cmd_debug(args: argparse.Namespace) -> int:
    """proxy-status / proxy-config / describe: the logic is in sofamesh.pilot.debug_client."""
    from sofamesh.pilot import debug_client
    from sofamesh.pilot.policy.client import CommandError, PilotClient

    pilot = PilotClient(args.pilot)
    try:
        if args.command == "proxy-status":
            return debug_client.proxy_status(pilot, args.proxy, args.output, sys.stdout)
        if args.command == "proxy-config":
            return debug_client.proxy_config(pilot, args.kind, args.proxy, args.output, sys.stdout)
        return debug_client.describe_service(pilot, args.name, args.output, sys.stdout)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        pilot.close()


def _add_debug_parsers(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--pilot", default="http://127.0.0.1:15080", metavar="URL",
                       help="Pilot's API (default %(default)s)")
        p.add_argument("-o", "--output", choices=("json", "yaml"), help="JSON or YAML instead of a table")
        p.set_defaults(func=cmd_debug)

    ps = sub.add_parser("proxy-status", help="each connected proxy: SYNCED / STALE / NOT SENT / NACKED per xDS type")
    ps.add_argument("proxy", nargs="?", help="only this proxy (its xDS node id)")
    common(ps)
    pc = sub.add_parser("proxy-config", help="the clusters, listeners, routes or endpoints Pilot last sent a proxy")
    pc.add_argument("kind", choices=("cluster", "listener", "route", "endpoint"))
    pc.add_argument("proxy", help="the proxy's xDS node id")
    common(pc)
    ds = sub.add_parser("describe", help="a service: instances per registry, the policies that apply, who calls it")
    ds.add_argument("what", choices=("service", "svc"))
    ds.add_argument("name", help="the service name")
    common(ds)


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
    px.add_argument("--xds", metavar="HOST:PORT[,HOST:PORT...]", help="take listeners, routes, clusters and "
                    "endpoints from this xDS (ADS) server, e.g. Pilot; several (Pilot replicas): fail over in turn")
    px.add_argument("--node-id", help="xDS node id (required with --xds)")
    px.add_argument("--cluster", help="xDS node cluster (the service this sidecar belongs to)")
    px.add_argument("--xds-mode", choices=("sotw", "delta"), default=None,
                    help="ADS variant: state of the world (default) or delta")
    px.add_argument("--xds-ca", metavar="FILE", help="Pilot's roots (PEM, from GET /v1/ca/roots): TLS to Pilot's "
                    "TLS xDS port (its 15012) instead of plaintext")
    px.add_argument("--workers", type=int, default=1, help="processes sharing the ports (SO_REUSEPORT)")
    ag = px.add_argument_group("workload certificate (the agent in the sidecar; docs/security.md)")
    ag.add_argument("--token", help="a token from 'sofamesh pilot token create'")
    ag.add_argument("--token-file", help="a file holding that token (re-read at each renewal)")
    ag.add_argument("--ca-address", metavar="HOST:PORT", help="Pilot's CSR API (default: the --xds address)")
    ag.add_argument("--namespace", help="identity to ask for (default: node metadata NAMESPACE, else the token's)")
    ag.add_argument("--service-account", help="identity to ask for (default: node metadata SERVICE_ACCOUNT, "
                    "else the token's)")
    ag.add_argument("--trust-domain", help="trust domain of that identity (default: the token's)")
    up = px.add_argument_group("hot upgrade (docs/upgrade.md)")
    up.add_argument("--upgrade-socket", metavar="PATH", help="Unix socket this process serves hot upgrades on "
                    "(also upgrade_socket: in the config)")
    up.add_argument("--hot-upgrade", action="store_true", help="take the listeners and connections over from the "
                    "process serving --upgrade-socket, which then exits")
    px.add_argument("--log-level", default="info")
    px.set_defaults(func=cmd_proxy)

    cc = sub.add_parser("check-config", help="validate a config file and print every error")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_check_config)

    pl = sub.add_parser("plugins", help="list installed plugins: name, kind, distribution, version")
    pl.set_defaults(func=cmd_plugins)

    dm = sub.add_parser("demo", help="run the demo on embedded defaults")
    dm.add_argument("-v", "--verbose", action="store_true")
    dm.add_argument("--dashboard", action="store_true", help="keep the mesh and its traffic running (Ctrl-C "
                    "stops it) and print the address of Pilot's dashboard, /ui")
    dm.set_defaults(func=cmd_demo)

    ct = sub.add_parser("certs", help="mint a test CA and workload certificates with SPIFFE URI SANs")
    ct.add_argument("--out", required=True, help="directory for ca.pem, ca-key.pem, <name>.pem, <name>-key.pem")
    ct.add_argument("--trust-domain", default="cluster.local")
    ct.add_argument("--workload", action="append", default=[], metavar="NAME=SPIFFE_ID",
                    help="e.g. web=spiffe://cluster.local/ns/default/sa/web (repeatable); "
                         "NAME alone means spiffe://<trust-domain>/ns/default/sa/NAME")
    ct.add_argument("--days", type=int, default=30)
    ct.set_defaults(func=cmd_certs)

    at = sub.add_parser("agent", help="the workload agent alone: a certificate from Pilot, served over SDS "
                        "to a co-located Envoy (as istio-agent)")
    at.add_argument("--pilot", required=True, metavar="HOST:PORT", help="Pilot's xDS port (the CSR API)")
    at.add_argument("--pilot-ca", metavar="FILE", help="Pilot's roots (PEM, from GET /v1/ca/roots): TLS to "
                    "Pilot's TLS xDS port, renewals authenticated by the current certificate")
    at.add_argument("--token", help="a token from 'sofamesh pilot token create'")
    at.add_argument("--token-file", help="a file holding that token (re-read at each renewal)")
    at.add_argument("--sds-socket", required=True, metavar="PATH", help="Unix socket to serve SDS on")
    at.add_argument("--namespace", help="identity to ask for (default: the token's)")
    at.add_argument("--service-account", help="identity to ask for (default: the token's)")
    at.add_argument("--trust-domain", help="trust domain of that identity (default: the token's)")
    at.add_argument("--validity-s", type=int, default=0, help="certificate lifetime to ask for (default: the CA's)")
    at.add_argument("--log-level", default="info")
    at.set_defaults(func=cmd_agent)

    rl = sub.add_parser("ratelimit-server", help="a global rate limit service (Envoy RLS v3) backed by Redis")
    rl.add_argument("-c", "--config", required=True, help="YAML: domain + descriptors (envoyproxy/ratelimit shape)")
    rl.add_argument("--listen", default="127.0.0.1:8081", help="gRPC HOST:PORT")
    rl.add_argument("--redis", default="127.0.0.1:6379", help="Redis HOST:PORT")
    rl.add_argument("--log-level", default="info")
    rl.set_defaults(func=cmd_ratelimit_server)

    _add_policy_parsers(sub)
    _add_debug_parsers(sub)

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
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # how to start this command again (hot upgrade)
    if args.command == "pilot":
        from sofamesh.pilot import cli as pilot_cli

        return int(pilot_cli.run(args))
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`sofamesh get ... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
