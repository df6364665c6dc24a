"""`sop-console demo` and `sop-console console`: the commands that open the console (Textual) or run the demo."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from console.cli.context import Commands, Context, has_terminal, need_terminal
from console.core.choices import THEMES
from console.core.errors import EXIT_OK
from console.core.paths import StatePaths

if TYPE_CHECKING:
    from console.demo import DemoWorld
    from console.ui.app import SopConsole


def register(commands: Commands) -> None:
    p = commands.add("demo", "run a loopback hub, demo services and both units in this process, with the console",
                     demo)
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="print status and log instead of the console, and stop after this long")
    p.add_argument("--plain", action="store_true", help="print status and log instead of opening the console")
    p = commands.add("console", "open the console (also what `sop-console` with no command does)", console)
    p.add_argument("--theme", choices=THEMES, help="override console.theme from the config")


def console_app(ctx: Context) -> SopConsole:
    """The console for this command line. A config file that does not check does not keep it shut (under sshd's
    ForceCommand it is the only way in): it opens on the daemon's live state, says every problem with its line,
    and Configure offers the file's text to put right. `check` and the other commands still exit 2."""
    from console.core.errors import ConfigError
    from console.ui.app import SopConsole

    config_path = ctx.config_path if ctx.config_path.exists() else None
    theme = getattr(ctx.args, "theme", None)
    config, problems = None, []
    if config_path is not None:
        try:
            config = ctx.config()
        except ConfigError as exc:
            problems = exc.problems
        else:
            theme = theme or config.console.theme
    return SopConsole(ctx.paths, config=config, config_path=config_path, theme_name=theme or "sop",
                      config_problems=problems)


def console(ctx: Context) -> int:
    need_terminal()
    app = console_app(ctx)
    app.run()
    print(app.closing_line())
    return app.return_code or EXIT_OK


def demo_app(paths: StatePaths, world: DemoWorld) -> SopConsole:
    """The console on the demo's world: it says, in Configure and above the keys, that quitting ends the demo and
    that its configuration (made in memory) cannot be saved; closing it closes the world."""
    from console.ui.app import SopConsole
    from console.ui.backend import DaemonBackend

    app = SopConsole(paths, config=world.config, backend=DaemonBackend(paths.control_socket), demo=True)
    app.sub_title = "demo: everything on loopback; quitting ends it"
    app.on_close.append(world.close)  # also when the terminal hangs up
    return app


async def _demo_console(paths: StatePaths) -> int:
    """The demo with the console on top, in one process: quitting the console ends the demo."""
    from console.demo import build_demo, demo_traffic

    world = await build_demo(paths)
    traffic = asyncio.create_task(demo_traffic(world))
    try:
        app = demo_app(paths, world)
        await app.run_async()
    finally:
        traffic.cancel()
        await world.close()
    print(app.closing_line())
    return 0


def demo(ctx: Context) -> int:
    from console.demo import run_demo

    explicit = getattr(ctx.args, "state_dir", None) or os.environ.get("SOP_CONSOLE_STATE")
    paths = StatePaths(Path(explicit) if explicit else ctx.paths.root / "demo")
    if ctx.args.plain or ctx.args.duration is not None or not has_terminal():
        from console.daemon import setup_logging

        setup_logging()
        return asyncio.run(run_demo(paths, duration=ctx.args.duration))
    return asyncio.run(_demo_console(paths))
