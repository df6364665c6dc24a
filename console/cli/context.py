"""What every command module shares: the parsed arguments with the config and state dir they name, the one way to
ask the daemon (`Context.request`), and `Commands`, through which a module declares its subcommands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from console.core.errors import UsageError
from console.core.paths import StatePaths, config_path, state_dir

if TYPE_CHECKING:  # the schema and its YAML load when a config is read, not at start
    from console.core.config import Config

Handler = Callable[["Context"], int]


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
