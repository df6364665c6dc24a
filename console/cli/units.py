"""The units' commands: check, daemon, status, start, stop, restart, trust."""

from __future__ import annotations

import asyncio
import json

from console.cli.context import Commands, Context
from console.core.errors import EXIT_OK
from console.core.words import counted


def register(commands: Commands) -> None:
    commands.add("check", "validate the configuration; one line per problem, exit 2 when there are any", check)
    commands.add("daemon", "run the engine in the foreground: tunnels, control socket (SIGHUP reloads the config)",
                 daemon)
    p = commands.add("status", "units, forwards, counters (from the daemon)", status)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for op, text in (("start", "start a unit's tunnels (both units when none is named)"),
                     ("stop", "stop a unit's tunnels; it stays stopped across daemon restarts"),
                     ("restart", "stop and start a unit's tunnels")):
        p = commands.add(op, text, unit_action)
        p.add_argument("unit", nargs="?", metavar="UNIT", help="master or clone")
        p.set_defaults(op=op)
    p = commands.add("trust", "record the host key the unit's server presents (after you have verified it)", trust)
    p.add_argument("unit", metavar="UNIT")
    p.add_argument("--fingerprint", metavar="SHA256:...", help="refuse unless the server presents this key")
    p.add_argument("--replace", action="store_true", help="replace a key we hold that the server no longer shows")
    p.add_argument("--check", action="store_true",
                   help="record nothing: show the key presented now, the one trusted and the server's software")


def check(ctx: Context) -> int:
    config = ctx.config()
    forwards = sum(len(u.forwards) for u in config.units.values())
    units = ", ".join(f"{u.name} ({u.username}@{u.server.address}, {counted(len(u.forwards), 'forward')})"
                      for u in config.units.values()) or "no units (hub-only)"
    print(f"{config.source}: ok: {units}; {counted(forwards, 'forward')} in all")
    return EXIT_OK


def daemon(ctx: Context) -> int:
    from console.core.malloc import keep_large_buffers
    from console.daemon import Daemon, setup_logging

    config = ctx.config()
    setup_logging()
    keep_large_buffers()  # glibc: the relay's buffers stay in the process (see console/core/malloc.py)

    async def run() -> None:
        await Daemon(config, ctx.paths, ctx.config_path).run()

    asyncio.run(run())
    return EXIT_OK


def status(ctx: Context) -> int:
    result = ctx.request("status")
    if ctx.args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    from console.core.status import Status

    status = Status.from_json(result)
    print(status.render() if status.units or status.notices else "no units configured")
    return EXIT_OK


PAST = {"start": "started", "stop": "stopped", "restart": "restarted"}


def unit_action(ctx: Context) -> int:
    for name in ctx.request(ctx.args.op, unit=ctx.args.unit):
        print(f"{name}: {PAST[ctx.args.op]}")
    return EXIT_OK


def trust(ctx: Context) -> int:
    result = ctx.request("trust", unit=ctx.args.unit, fingerprint=ctx.args.fingerprint, replace=ctx.args.replace,
                         check=ctx.args.check or None)
    print(f"{result['unit']}: host key {result['fingerprint']} of {result['server']}: {result['outcome']}")
    if ctx.args.check:
        held = ", ".join(result.get("trusted") or []) or "none yet"
        print(f"  trusted: {held}{' (pinned in the config)' if result.get('pinned') else ''}")
        print(f"  server software: {result.get('software') or 'unknown'}"
              + (" (our hub: `sop-console hub key` on it prints its fingerprint)" if result.get("hub") else ""))
    return EXIT_OK
