"""`sop-console key show|install`: the units' own SSH keys (files and the unit's server; no daemon needed, but a
running daemon is told of an install so the unit retries at once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import getpass
import sys

from console.cli.context import Commands, Context
from console.core.errors import EXIT_FAILED, EXIT_OK, ConsoleError, UsageError

if TYPE_CHECKING:  # the schema and its YAML load when a config is read, not at start
    from console.core.config import Config


def register(commands: Commands) -> None:
    key = commands.group("key", "the units' SSH keys")
    p = key.add("show", "print a unit's public key and SHA256 fingerprint", show)
    p.add_argument("unit", nargs="?", metavar="UNIT")
    p = key.add("install", "install a unit's key on its server with the user's password", install)
    p.add_argument("unit", nargs="?", metavar="UNIT")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--trust-host-key", metavar="SHA256:...",
                   help="accept this server host key fingerprint if the server is not known yet")


def show(ctx: Context) -> int:
    from console.core.keys import unit_public_key

    config = ctx.config()
    for name in ctx.units(config, ctx.args.unit):
        unit = config.units[name]
        info = unit_public_key(ctx.paths, name)
        print(f"# {name}: {info.fingerprint} (user {unit.username} on {unit.server.address})")
        print(info.line)
    return EXIT_OK


def install(ctx: Context) -> int:
    config = ctx.config()
    names = ctx.units(config, ctx.args.unit)
    if not ctx.args.password_stdin and not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: pipe it in with --password-stdin")
    return asyncio.run(_install(ctx, config, names))


async def _install(ctx: Context, config: Config, names: list[str]) -> int:
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
            warning = await report_key_install(ctx.paths, name, f"key install to {unit.username}@"
                                               f"{unit.server.address}", getpass.getuser(), "cli", config,
                                               failed=exc.message)
            if warning:
                print(f"{name}: {warning}", file=sys.stderr)
            continue
        what = f"installed key {result.key.fingerprint}" if result.outcome == INSTALLED else "already authorized"
        print(f"{name}: {what} for {result.username} on {result.server}")
        warning = await report_key_install(ctx.paths, name, result.summary, getpass.getuser(), "cli", config)
        if warning:
            print(f"{name}: {warning}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
