"""The SOP Console app: the appliance's subsystem menu over the daemon's live state."""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from console.control.client import report_key_install
from console.core.config import Config, load_config
from console.core.errors import ConsoleError, DaemonNotRunning
from console.core.events import ClientChanged, Reloaded
from console.core.paths import StatePaths
from console.ui.backend import DaemonBackend, StaticBackend, apply_event
from console.ui.screens import (MENU, ClientsScreen, ConfigureScreen, ConfirmScreen, InstallKeyScreen, LogScreen, MainScreen,
                                NoDaemonScreen, TrustScreen)
from console.ui.themes import THEME_NAMES, load_themes, stylesheet

TERMINAL_CHECK_SECONDS = 2.0
HANGUP_CLEANUP_SECONDS = 1.5


class SopConsole(App):
    TITLE = "SOP Console"
    CSS = stylesheet()
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("ctrl+p", "command_palette", "Commands", show=False, id="app.palette"),
    ]

    def __init__(self, paths: StatePaths, *, config: Config | None = None, config_path: Path | None = None,
                 backend: DaemonBackend | StaticBackend | None = None, theme_name: str = "sop",
                 poll_log: bool = True, watch_terminal: bool | None = None) -> None:
        super().__init__()
        self.paths = paths
        self.config = config
        self.config_path = config_path
        self.backend = backend or DaemonBackend(paths.control_socket)
        self.status: dict[str, Any] = {"units": []}
        self.selected_unit: str | None = None
        self.poll_log = poll_log
        self.engine_here = None  # a Daemon run inside the console when no daemon was running
        self.on_close: list = []  # async callables run when the console ends (the demo closes its world here)
        self._theme_name = theme_name
        self._watch_terminal = (sys.__stdin__ is not None and sys.__stdin__.isatty()
                                and not os.environ.get("TEXTUAL_DRIVER")) if watch_terminal is None else watch_terminal

    # ------------------------------------------------------------------ start-up

    def on_mount(self) -> None:
        for theme in load_themes():
            self.register_theme(theme)
        self.theme = self._theme_name if self._theme_name in THEME_NAMES else "sop"
        if self._watch_terminal:
            self.set_interval(TERMINAL_CHECK_SECONDS, self._check_terminal)
            # The operator's SSH session closing hangs up the terminal: clean up (an engine run inside the console
            # stops its tunnels properly) instead of dying of the signal.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
        self._attach()

    @work(exclusive=True, group="attach")
    async def _attach(self) -> None:
        try:
            status = await self.backend.connect()
        except DaemonNotRunning as exc:
            if await self.push_screen_wait(NoDaemonScreen(exc.message)):
                await self._start_engine_here()
            return
        self._show(status)
        self._pump()

    async def _start_engine_here(self) -> None:
        from console.daemon import Daemon

        try:
            config = self._config()
            if config is None:
                raise ConsoleError("no configuration to start the engine with (pass --config)")
            self.engine_here = Daemon(config, self.paths, self.config_path, echo_log=False)
            await self.engine_here.start()
            self.sub_title = "engine inside this console: quitting ends the tunnels"
            self.backend = DaemonBackend(self.paths.control_socket)
            status = await self.backend.connect()
        except ConsoleError as exc:
            self.notify(exc.message, severity="error", timeout=10)
            return
        self._show(status)
        self._pump()

    def _show(self, status: dict) -> None:
        self.status = status
        names = [u["name"] for u in status.get("units", [])]
        if self.selected_unit not in names:
            self.selected_unit = names[0] if names else None
        if not any(isinstance(screen, MainScreen) for screen in self.screen_stack):
            self.push_screen(MainScreen())
        else:
            self._refresh_main()

    @work(exclusive=True, group="events")
    async def _pump(self) -> None:
        """Engine events, as they happen: a number on screen changes because an event said so."""
        try:
            async for event in self.backend.events():
                if isinstance(event, Reloaded):  # units or forwards may have changed: take a fresh snapshot
                    self._show(await self.backend.request("status"))
                elif isinstance(event, ClientChanged):
                    for screen in self.screen_stack:
                        if isinstance(screen, ClientsScreen):
                            screen.client_changed(event.client)
                elif apply_event(self.status, event):
                    self._refresh_main()
        except ConsoleError as exc:
            self.notify(f"lost the daemon: {exc.message}", severity="error", timeout=10)
            return
        self.notify("the daemon went away; the console shows the last state it had", severity="error", timeout=30)

    def _refresh_main(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                screen.render_status()

    def unit_status(self, name: str | None) -> dict | None:
        return next((u for u in self.status.get("units", []) if u["name"] == name), None)

    # ------------------------------------------------------------------ the menu

    def run_menu_action(self, action: str) -> None:
        unit = self.selected_unit
        if unit is None and action not in ("view_log", "configure", "clients"):
            self.notify("no units configured", severity="warning")
            return
        handler: Callable[[str], Any] = getattr(self, f"_menu_{action}")
        handler(unit)

    def _menu_view_log(self, unit: str | None) -> None:
        self.push_screen(LogScreen())

    def _menu_clients(self, unit: str | None) -> None:
        self.push_screen(ClientsScreen())

    @work(group="menu")
    async def _menu_start(self, unit: str) -> None:
        await self._request("start", unit, f"{unit}: start requested")

    @work(group="menu")
    async def _menu_stop(self, unit: str) -> None:
        if await self.push_screen_wait(ConfirmScreen(
                f"Stop {unit}?", "Stopping cuts the operator's access to this unit until it is started again.")):
            await self._request("stop", unit, f"{unit}: stopped")

    async def _request(self, op: str, unit: str, done: str, **args: Any) -> Any:
        try:
            result = await self.backend.request(op, unit=unit, **args)
        except ConsoleError as exc:
            self.notify(exc.message, severity="error", timeout=10)
            return None
        self.notify(done)
        return result

    @work(group="menu")
    async def _menu_install_key(self, unit: str) -> None:
        config = self._config()
        if config is None or unit not in config.units:
            self.notify(f"no configuration for unit {unit}", severity="error")
            return
        from console.core.keys import unit_public_key  # asyncssh: 0.2 s of imports the first screen does not need

        info = await asyncio.to_thread(unit_public_key, self.paths, unit)
        target = f"{config.units[unit].username}@{config.units[unit].server.address}"
        await self.push_screen_wait(InstallKeyScreen(unit, info.line, info.fingerprint, target))

    async def install_key(self, unit: str, password: str) -> str:
        """The same code path as `sop-console key install`; returns the outcome in words."""
        from console.tunnel.key_install import INSTALLED, install_key

        config = self._config()
        assert config is not None

        async def ask() -> str:
            return password

        result = await install_key(self.paths, config.units[unit], config.tunnel, ask)
        warning = await report_key_install(self.paths, unit, result.summary, getpass.getuser())
        if warning:
            self.notify(warning, severity="warning")
        return f"installed {result.key.fingerprint}" if result.outcome == INSTALLED else "already authorized"

    @work(group="menu")
    async def _menu_trust(self, unit: str) -> None:
        status = self.unit_status(unit) or {}
        mismatch = status.get("state") == "host-key-mismatch"
        if not await self.push_screen_wait(TrustScreen(unit, status.get("server", "?"), status.get("server_key"),
                                                       mismatch)):
            return
        result = await self._request("trust", unit, f"{unit}: host key recorded",
                                     fingerprint=status.get("server_key"), replace=mismatch or None)
        if result:
            self.notify(f"{unit}: {result['fingerprint']} {result['outcome']}")

    def _menu_configure(self, unit: str | None) -> None:
        from console.core.config_form import form_from_config

        self.push_screen(ConfigureScreen(form_from_config(self._config()),
                                         str(self.config_path) if self.config_path else None))

    async def save_configuration(self, form) -> None:
        """Check as `check` does, write atomically (previous file kept as .bak), ask the daemon to reload."""
        from console.core.config_form import save_form

        assert self.config_path is not None
        self.config = await asyncio.to_thread(save_form, self.config_path, form)
        try:
            changes = await self.backend.request("reload")
        except ConsoleError as exc:
            self.notify(f"saved {self.config_path}, but the daemon did not reload: {exc.message}",
                        severity="warning", timeout=15)
            return
        summary = "; ".join(changes) if changes else "nothing changed"
        self.notify(f"saved {self.config_path} (previous kept as .bak); daemon reloaded: {summary}", timeout=10)

    def _config(self) -> Config | None:
        if self.config is None and self.config_path is not None:
            try:
                self.config = load_config(self.config_path)
            except ConsoleError as exc:
                self.notify(exc.message, severity="error", timeout=10)
        return self.config

    # ------------------------------------------------------------------ keys, palette, terminal

    def action_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, MainScreen):
            for key, action, text in MENU:
                yield SystemCommand(f"{key} {text}", f"{text} (selected unit)",
                                    lambda action=action: self.run_menu_action(action))
        for name in THEME_NAMES:
            yield SystemCommand(f"Theme: {name}", f"switch to the {name} theme",
                                lambda name=name: setattr(self, "theme", name))

    def _hangup(self) -> None:
        self._hangup_task = asyncio.create_task(self._leave_dead_terminal())

    async def _leave_dead_terminal(self) -> None:
        """No terminal is left to restore, and Textual 8.2.8's shutdown blocks for ever on one that hung up
        (its writer thread's queue fills): do our own cleanup within a deadline, then leave at once."""
        try:
            await asyncio.wait_for(self._cleanup(), HANGUP_CLEANUP_SECONDS)
        except Exception:  # noqa: BLE001 - leaving is all that is left to do
            pass
        finally:
            os._exit(1)

    async def _cleanup(self) -> None:
        await self.backend.close()
        if self.engine_here is not None:
            await self.engine_here.close()
            self.engine_here = None
        for hook in self.on_close:
            await hook()
        self.on_close = []

    def _check_terminal(self) -> None:
        """Leave when the operator's terminal is gone (Textual 8.2.8 would spin on a dead stdin)."""
        stdin = sys.__stdin__
        try:
            alive = stdin is not None and not stdin.closed and os.isatty(stdin.fileno())
        except (OSError, ValueError):
            alive = False
        if not alive:
            self.exit(return_code=1, message="the terminal went away")

    async def action_quit(self) -> None:
        self.exit()

    async def on_unmount(self) -> None:
        await self._cleanup()
