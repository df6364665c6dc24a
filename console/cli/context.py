"""What every command module shares: the parsed arguments with the config and state dir they name, the one way to
ask the daemon (`Context.request`), the way to ask it or, with none, do the same on the store
(`daemon_or_store`), and `Commands`, through which a module declares its subcommands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from console.core.errors import EXIT_NO_DAEMON, ConsoleError, DaemonNotRunning, UsageError
from console.core.paths import StatePaths, config_path, state_dir

if TYPE_CHECKING:  # the schema and its YAML load when a config is read, not at start
    from console.control.operations import Call
    from console.core.config import Config
    from console.core.store import Store

Handler = Callable[["Context"], int]
SOCKET_GRACE = 2.0  # seconds a daemon that holds the lock gets to open its socket (it may be starting)


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config_path = config_path(getattr(args, "config", None))
        self.paths = StatePaths(state_dir(getattr(args, "state_dir", None)))

    def config(self) -> Config:
        from console.core.config import load_config

        return load_config(self.config_path)

    def units(self, config: Config, name: str | None) -> list[str]:
        if name is not None:
            config.unit(name)
            return [name]
        if not config.units:
            raise UsageError(f"no units configured in {config.source}")
        return list(config.units)

    def request(self, op: str, **args: Any) -> Any:
        """One control operation through the daemon (console/control/operations.py has them all)."""
        from console.control.client import ControlClient

        async def ask() -> Any:
            async with ControlClient(self.paths.control_socket) as client:
                return await client.request(op, **args)

        return asyncio.run(ask())


def daemon_or_store(ctx: Context, op: str, args: dict[str, Any], make_call: Callable[[Context, Store], Call]) -> Any:
    """An operation through the daemon when it runs; with no daemon at all, on the store, with the same checks
    (the operation table) and a Call that `make_call` builds on it. A change holds the daemon's lock meanwhile,
    so no daemon starts on a half-changed store; a daemon that holds the lock but cannot be reached (its control
    socket is gone) is reported, exit 3, and nothing is changed: otherwise the store would say one thing while the
    running daemon enforces another. Reading may fall back to the store at any time."""
    from console.control.operations import OPERATIONS

    try:
        return ctx.request(op, **args)
    except DaemonNotRunning:
        pass
    if OPERATIONS[op].read_only:
        return _on_store(ctx, op, args, make_call)

    from console.core.state_lock import DaemonLock, StateDirBusy

    action = getattr(ctx.args, f"{ctx.args.command}_command", None)
    lock = DaemonLock(ctx.paths.prepare().daemon_lock, role=" ".join(filter(None, (ctx.args.command, action))))
    try:
        lock.acquire()
    except StateDirBusy as busy:
        if busy.role != "daemon":
            raise
        return _through_a_daemon_without_socket(ctx, busy.pid, op, args)
    try:
        return _on_store(ctx, op, args, make_call)
    finally:
        lock.release()


def _through_a_daemon_without_socket(ctx: Context, pid: int | None, op: str, args: dict[str, Any]) -> Any:
    """A daemon holds the state dir: if it is only starting, its socket comes within moments; else, refuse."""
    deadline = time.monotonic() + SOCKET_GRACE
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if ctx.paths.control_socket.exists():
            try:
                return ctx.request(op, **args)
            except DaemonNotRunning:
                pass
    who = f"the daemon (pid {pid})" if pid else "a daemon"
    raise ConsoleError(f"{who} holds state dir {ctx.paths.root} but its control socket is gone: restart it; "
                       "nothing was changed", exit_code=EXIT_NO_DAEMON)


def _on_store(ctx: Context, op: str, args: dict[str, Any], make_call: Callable[[Context, Store], Call]) -> Any:
    """Run the operation on the store, with the same checks as the daemon's (the operation table)."""
    from console.control.client import ssh_client_address
    from console.control.operations import OPERATIONS, perform
    from console.core.oplog import recorder_for
    from console.core.status import json_default
    from console.core.store import Store

    store = Store(ctx.paths.prepare().database)
    recorder = None
    try:
        call = make_call(ctx, store)
        if not OPERATIONS[op].read_only:  # recorded here as the daemon would have (reading writes nothing)
            recorder = recorder_for(ctx.paths.oplog, ctx.config())
        call.via, call.ssh_from, call.recorder = "cli", ssh_client_address(), recorder
        result = asyncio.run(perform(call, op, {k: v for k, v in args.items() if v is not None}))
        return json.loads(json.dumps(result, default=json_default))  # the daemon's answer has this form too
    finally:
        store.close()
        if recorder is not None:
            recorder.close()


class Commands:
    """A level of subcommands: `add` one with its handler, or a `group` with subcommands of its own."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser, prefix: str = "") -> None:
        self.sub = sub
        self.common = common
        self.prefix = prefix

    def add(self, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        parser = self.sub.add_parser(name, parents=[self.common], help=help_text, description=help_text)
        parser.set_defaults(handler=handler)
        return parser

    def group(self, name: str, help_text: str) -> Commands:
        """A command with actions (`key show`, `clients add`); without one it says which there are."""
        parser = self.sub.add_parser(name, parents=[self.common], help=help_text, description=help_text)
        actions = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
        full = f"{self.prefix}{name}"

        def needs_action(ctx: Context) -> int:
            print(parser.format_help(), file=sys.stderr)
            raise UsageError(f"{full} needs an action: {', '.join(actions.choices)}")

        parser.set_defaults(handler=needs_action)
        return Commands(actions, self.common, prefix=f"{full} ")


def has_terminal() -> bool:
    """A console can run here: a terminal both ways, or a Textual driver that serves it elsewhere."""
    return (sys.stdin.isatty() and sys.stdout.isatty()) or bool(os.environ.get("TEXTUAL_DRIVER"))


def need_terminal() -> None:
    if not has_terminal():
        raise UsageError("the console needs a terminal; for scripts use `sop-console status --json`")
