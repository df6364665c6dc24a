"""`sop-console`: the command line. Thin clients of the daemon's control socket, plus the few commands that
work on files alone (check, key show, key install, log).

Exit codes: 0 ok, 1 operation failed, 2 usage or configuration error, 3 daemon not running.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from console import __version__
from console.core.config import Config, load_config
from console.core.errors import EXIT_FAILED, EXIT_OK, ConfigError, ConsoleError, DaemonNotRunning, UsageError
from console.core.paths import StatePaths, config_path, state_dir

EPILOG = """\
commands that need the daemon: start, stop, restart, status, trust (exit 3 when it is not running)
commands that work without it: check, key show, key install, log, daemon, demo

examples:
  sop-console check                      validate the configuration
  sop-console daemon                     run the tunnels (foreground; systemd-friendly)
  sop-console key show master            print master's public key and fingerprint
  sop-console key install master         put master's key on its server (asks the password once)
  sop-console status --json              units and forwards, machine-readable
  sop-console log -n 50 --follow         the tunnel log
  sop-console demo                       a loopback hub, demo services and both units, in the console
  sop-console                            the console: menu, units, ports, log (needs a terminal)
"""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $SOP_CONSOLE_CONFIG, else $XDG_CONFIG_HOME/sop-console/console.yaml)")
    common.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="keys, known_hosts, store, log, control socket "
                             "(default: $SOP_CONSOLE_STATE, else $XDG_STATE_HOME/sop-console)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="more logging")

    parser = argparse.ArgumentParser(
        prog="sop-console", parents=[common], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keep appliance units reachable over reverse SSH tunnels, and run them.")
    parser.add_argument("--version", action="version", version=f"sop-console {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    command("check", "validate the configuration; one line per problem, exit 2 when there are any")
    command("daemon", "run the engine in the foreground: tunnels, control socket (SIGHUP reloads the config)")
    p = command("status", "units, forwards, counters (from the daemon)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for name, text in (("start", "start a unit's tunnels (both units when none is named)"),
                       ("stop", "stop a unit's tunnels; it stays stopped across daemon restarts"),
                       ("restart", "stop and start a unit's tunnels")):
        p = command(name, text)
        p.add_argument("unit", nargs="?", metavar="UNIT", help="master or clone")
    p = command("log", "the tunnel log (works without the daemon)")
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="show the last N lines (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)")
    p = command("trust", "record the host key the unit's server presents (after you have verified it)")
    p.add_argument("unit", metavar="UNIT")
    p.add_argument("--fingerprint", metavar="SHA256:...", help="refuse unless the server presents this key")
    p.add_argument("--replace", action="store_true", help="replace a key we hold that the server no longer shows")
    key = command("key", "the units' SSH keys")
    key_sub = key.add_subparsers(dest="key_command", metavar="ACTION")
    p = key_sub.add_parser("show", parents=[common], help="print a unit's public key and SHA256 fingerprint")
    p.add_argument("unit", nargs="?", metavar="UNIT")
    p = key_sub.add_parser("install", parents=[common],
                           help="install a unit's key on its server with the user's password")
    p.add_argument("unit", nargs="?", metavar="UNIT")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--trust-host-key", metavar="SHA256:...",
                   help="accept this server host key fingerprint if the server is not known yet")
    p = command("demo", "run a loopback hub, demo services and both units in this process, with the console")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="print status and log instead of the console, and stop after this long")
    p.add_argument("--plain", action="store_true", help="print status and log instead of opening the console")
    clients = command("clients", "the hub's clients: add, list, change, remove, export-authorized-keys")
    csub = clients.add_subparsers(dest="clients_command", metavar="ACTION")
    p = csub.add_parser("add", parents=[common], help="register a client; without --pub-key, print a new private key")
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.add_argument("--pub-key", metavar="FILE", help="the customer's own public key")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing client's key (its sessions end)")
    p.add_argument("--quota", type=int, metavar="N", help="ports to reserve (default: hub.default_quota)")
    p = csub.add_parser("list", parents=[common], help="clients, their ports, what they forward now")
    p.add_argument("client_id", nargs="?", metavar="CLIENT_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = csub.add_parser("change", parents=[common], help="set a client's quota; 0 disables it at once")
    p.add_argument("quota", type=int, metavar="N")
    p.add_argument("client_id", metavar="CLIENT_ID")
    p = csub.add_parser("remove", parents=[common], help="remove a client: sessions end, ports return to the pool")
    p.add_argument("client_id", metavar="CLIENT_ID")
    csub.add_parser("export-authorized-keys", parents=[common],
                    help="authorized_keys lines that give a plain OpenSSH server the same limits")
    hub = command("hub", "the hub itself")
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="ACTION")
    hub_sub.add_parser("key", parents=[common], help="print the hub's host key and fingerprint (made on first use)")
    p = command("console", "open the console (also what `sop-console` with no command does)")
    p.add_argument("--theme", choices=("sop", "dark", "light"), help="override console.theme from the config")
    return parser


class _Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config_path = config_path(getattr(args, "config", None))
        self.paths = StatePaths(state_dir(getattr(args, "state_dir", None)))

    def config(self) -> Config:
        return load_config(self.config_path)

    def units(self, config: Config, name: str | None) -> list[str]:
        if name is not None:
            config.unit(name)
            return [name]
        if not config.units:
            raise UsageError(f"no units configured in {config.source}")
        return list(config.units)


# ---------------------------------------------------------------------- commands


def cmd_check(ctx: _Context) -> int:
    config = ctx.config()
    forwards = sum(len(u.forwards) for u in config.units.values())
    units = ", ".join(f"{u.name} ({u.username}@{u.server.address}, {len(u.forwards)} forwards)"
                      for u in config.units.values()) or "no units (hub-only)"
    print(f"{config.source}: ok: {units}; {forwards} forwards in all")
    return EXIT_OK


def cmd_daemon(ctx: _Context) -> int:
    from console.daemon import Daemon, setup_logging

    config = ctx.config()
    setup_logging()

    async def run() -> None:
        daemon = Daemon(config, ctx.paths, ctx.config_path)
        await daemon.run()

    asyncio.run(run())
    return EXIT_OK


async def _request(ctx: _Context, op: str, **args: Any) -> Any:
    from console.control.client import ControlClient

    async with ControlClient(ctx.paths.control_socket) as client:
        return await client.request(op, **args)


def cmd_status(ctx: _Context) -> int:
    status = asyncio.run(_request(ctx, "status"))
    if ctx.args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    from console.core.status import Status

    print(Status.from_json(status).render() if status["units"] else "no units configured")
    return EXIT_OK


def cmd_unit_action(ctx: _Context) -> int:
    op = ctx.args.command
    done = asyncio.run(_request(ctx, op, unit=ctx.args.unit))
    past = {"start": "started", "stop": "stopped", "restart": "restarted"}[op]
    for name in done:
        print(f"{name}: {past}")
    return EXIT_OK


def cmd_trust(ctx: _Context) -> int:
    result = asyncio.run(_request(ctx, "trust", unit=ctx.args.unit, fingerprint=ctx.args.fingerprint,
                                  replace=ctx.args.replace or None))
    print(f"{result['unit']}: host key {result['fingerprint']} of {result['server']}: {result['outcome']}")
    return EXIT_OK


def cmd_log(ctx: _Context) -> int:
    from console.core.tunnel_log import follow, tail

    path = ctx.paths.tunnel_log
    if ctx.args.lines < 0:
        raise UsageError("-n must be 0 or more")
    if not path.exists() and not ctx.args.follow:
        print(f"no tunnel log yet at {path}", file=sys.stderr)
        return EXIT_OK
    for line in tail(path, ctx.args.lines):
        print(line)
    if ctx.args.follow:
        sys.stdout.flush()
        try:
            for line in follow(path):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def cmd_key_show(ctx: _Context) -> int:
    from console.core.keys import unit_public_key

    config = ctx.config()
    for name in ctx.units(config, ctx.args.unit):
        unit = config.units[name]
        info = unit_public_key(ctx.paths, name)
        print(f"# {name}: {info.fingerprint} (user {unit.username} on {unit.server.address})")
        print(info.line)
    return EXIT_OK


def cmd_key_install(ctx: _Context) -> int:
    config = ctx.config()
    names = ctx.units(config, ctx.args.unit)
    if not ctx.args.password_stdin and not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: pipe it in with --password-stdin")
    return asyncio.run(_key_install(ctx, config, names))


async def _key_install(ctx: _Context, config: Config, names: list[str]) -> int:
    from console.control.client import report_key_install
    from console.tunnel.key_install import INSTALLED, install_key

    failed = 0
    for name in names:
        unit = config.units[name]

        async def password(unit=unit) -> str:
            if ctx.args.password_stdin:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    raise UsageError("--password-stdin: no password on standard input")
                return line.rstrip("\r\n")
            return await asyncio.to_thread(getpass.getpass, f"Password for {unit.username}@{unit.server.address}: ")

        try:
            result = await install_key(ctx.paths, unit, config.tunnel, password,
                                       trust_fingerprint=ctx.args.trust_host_key)
        except ConsoleError as exc:
            if isinstance(exc, UsageError):
                raise
            print(f"{name}: key install failed: {exc.message}", file=sys.stderr)
            failed += 1
            continue
        what = f"installed key {result.key.fingerprint}" if result.outcome == INSTALLED else "already authorized"
        print(f"{name}: {what} for {result.username} on {result.server}")
        warning = await report_key_install(ctx.paths, name, result.summary, getpass.getuser())
        if warning:
            print(f"{name}: {warning}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _has_terminal() -> bool:
    """A console can run here: a terminal both ways, or a Textual driver that serves it elsewhere."""
    return (sys.stdin.isatty() and sys.stdout.isatty()) or bool(os.environ.get("TEXTUAL_DRIVER"))


def _need_terminal() -> None:
    if not _has_terminal():
        raise UsageError("the console needs a terminal; for scripts use `sop-console status --json`")


def cmd_console(ctx: _Context) -> int:
    from console.ui.app import SopConsole

    _need_terminal()
    config_path = ctx.config_path if ctx.config_path.exists() else None
    theme = getattr(ctx.args, "theme", None)
    if theme is None and config_path is not None:
        theme = ctx.config().console.theme
    app = SopConsole(ctx.paths, config_path=config_path, theme_name=theme or "sop")
    app.run()
    if app.engine_here is not None:
        print("console closed; the engine it ran has stopped, and its tunnels with it")
    else:
        print("console closed; the tunnels keep running in the daemon")
    return app.return_code or EXIT_OK


async def _demo_console(paths: StatePaths) -> int:
    """The demo with the console on top, in one process: quitting the console ends the demo."""
    from console.demo import build_demo, demo_traffic
    from console.ui.app import SopConsole
    from console.ui.backend import DaemonBackend

    world = await build_demo(paths)
    traffic = asyncio.create_task(demo_traffic(world))
    try:
        app = SopConsole(paths, config=world.config, backend=DaemonBackend(paths.control_socket))
        app.sub_title = "demo: everything on loopback; quitting ends it"
        app.on_close.append(world.close)  # also when the terminal hangs up
        await app.run_async()
    finally:
        traffic.cancel()
        await world.close()
    return 0


def cmd_demo(ctx: _Context) -> int:
    from console.demo import run_demo

    explicit = getattr(ctx.args, "state_dir", None) or os.environ.get("SOP_CONSOLE_STATE")
    paths = StatePaths(Path(explicit) if explicit else ctx.paths.root / "demo")
    if ctx.args.plain or ctx.args.duration is not None or not _has_terminal():
        from console.daemon import setup_logging

        setup_logging()
        return asyncio.run(run_demo(paths, duration=ctx.args.duration))
    return asyncio.run(_demo_console(paths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    ctx = _Context(args)
    handlers = {
        "check": cmd_check, "daemon": cmd_daemon, "status": cmd_status, "start": cmd_unit_action,
        "stop": cmd_unit_action, "restart": cmd_unit_action, "trust": cmd_trust, "log": cmd_log,
        "demo": cmd_demo, "console": cmd_console, "clients": cmd_clients, "hub": cmd_hub,
    }
    try:
        if args.command == "key":
            if args.key_command == "show":
                return cmd_key_show(ctx)
            if args.key_command == "install":
                return cmd_key_install(ctx)
            parser.parse_args(["key", "--help"])
        if args.command is None:
            return cmd_console(ctx)
        return handlers[args.command](ctx)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except ConsoleError as exc:
        print(f"sop-console: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback for an operator; -v shows one
        if getattr(args, "verbose", False):
            raise
        print(f"sop-console: internal error: {type(exc).__name__}: {exc} (run with -v for details)", file=sys.stderr)
        return EXIT_FAILED


# ---------------------------------------------------------------------- the hub's clients


def _clients_call(ctx: _Context, **args: Any) -> Any:
    """Through the daemon when it runs (live sessions end at once), else on the store directly."""
    from console.control.client import ControlClient

    async def via_daemon() -> Any:
        async with ControlClient(ctx.paths.control_socket) as client:
            return await client.request("clients", **args)

    try:
        return asyncio.run(via_daemon())
    except DaemonNotRunning:
        pass
    from console.core.store import Store
    from console.hub.admin import ClientsAdmin
    from console.hub.registry import Registry

    config = ctx.config()
    if config.hub is None:
        raise UsageError(f"no hub: section in {config.source}")
    store = Store(ctx.paths.prepare().database)
    try:
        return ClientsAdmin(Registry(store, (config.hub.port_low, config.hub.port_high),
                                     config.hub.default_quota)).call(args)
    finally:
        store.close()


def cmd_clients(ctx: _Context) -> int:
    a = ctx.args
    if a.clients_command == "add":
        pub = None
        if a.pub_key:
            try:
                pub = Path(a.pub_key).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read {a.pub_key}: {exc.strerror or exc}") from None
        result = _clients_call(ctx, action="add", id=a.client_id, pub_key=pub, quota=a.quota, force=a.force or None)
        client = result["client"]
        print(f"client {client['id']}: quota {client['quota']}, ports {client['port_ranges'] or 'none'}, "
              f"key {client['fingerprint']}", file=sys.stderr)
        if result["private_key"]:
            print(f"# the private key of {client['id']}, shown this once: hand it over securely; "
                  "nothing keeps it", file=sys.stderr)
            print(result["private_key"], end="")
    elif a.clients_command == "list":
        result = _clients_call(ctx, action="list", id=a.client_id)
        if a.json:
            print(json.dumps(result, indent=2))
        else:
            from console.core.states import human_bytes

            for c in result["clients"]:
                state = "enabled" if c["enabled"] else "disabled"
                print(f"{c['id']:<16} {state:<8} quota {c['quota']:<3} ports {c['port_ranges'] or '-':<12} "
                      f"{'connected' if c['connected'] else 'offline':<9} forwarding {len(c['forwards'])}  "
                      f"last seen {c['last_seen'] or 'never'}")
                for f in c["forwards"]:  # what the customer proxies now, and where each port leads
                    print(f"  {f['port']:<5} {f['name'] or '-'} -> {f['destination'] or '(not announced)'}  "
                          f"open {f['open']} total {f['total']} in {human_bytes(f['bytes_in'])} "
                          f"out {human_bytes(f['bytes_out'])}  from {f['session']}")
            if not result["clients"]:
                print("no clients")
    elif a.clients_command == "change":
        c = _clients_call(ctx, action="change", quota=a.quota, id=a.client_id)
        print(f"{c['id']}: " + (f"quota {c['quota']}, ports {c['port_ranges']}" if c["enabled"]
                                 else "disabled (quota 0): sessions ended, record and key kept"))
    elif a.clients_command == "remove":
        c = _clients_call(ctx, action="remove", id=a.client_id)
        print(f"{c['id']} removed: sessions ended, ports {c['port_ranges'] or '-'} back in the pool")
    elif a.clients_command == "export-authorized-keys":
        for line in _clients_call(ctx, action="export"):
            print(line)
    else:
        raise UsageError("clients needs an action: add, list, change, remove, export-authorized-keys")
    return EXIT_OK


def cmd_hub(ctx: _Context) -> int:
    from console.core.keys import fingerprint, load_or_create_key, public_line

    key = load_or_create_key(ctx.paths.prepare().hub_key, "sop-console-hub")
    print("# the hub's host key: pin it in the clients' server.host_key")
    print(public_line(key))
    print(fingerprint(key))
    return EXIT_OK
