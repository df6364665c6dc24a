"""The SOP Console app: the appliance's subsystem menu over the daemon's live state.

The App owns the Session (what the console knows and asks, no Textual in it), turns the engine's events into
StatusChanged / ClientChanged / EndpointChanged / RuleChanged on Signals the screens follow, and runs the
menu's handlers on MenuChosen.
Only the main screen is imported at start; every other screen and dialog when first shown."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.events import Event as TextualEvent, Key
from textual.screen import Screen
from textual.signal import Signal

from console.core import events
from console.core.errors import ConfigError, ConsoleError, DaemonNotRunning, os_reason
from console.core.paths import StatePaths
from console.ui import menu
from console.ui.backend import DaemonBackend, StaticBackend
from console.ui.messages import (ClientChanged, EndpointChanged, MenuChosen, OperationRecorded, RuleChanged,
                                 StatusChanged)
from console.ui.screens.main import MainScreen
from console.ui.session import Session
from console.core.choices import THEMES
from console.ui.themes import load_themes, stylesheet
from console.ui.widgets.burst import EndOfBurst, KeyHold

TERMINAL_CHECK_SECONDS = 2.0
HANGUP_CLEANUP_SECONDS = 1.5
RECONNECT_FIRST_SECONDS = 0.2  # the daemon gone: the first try to reconnect, then 1.5 times longer each time
RECONNECT_MAX_SECONDS = 0.8    # ...up to this: a daemon that comes back is followed again within a second
RECONNECT_TRY_SECONDS = 5.0    # one try's bound (a daemon that accepts but does not answer)

if TYPE_CHECKING:  # the schema and its YAML load when a config is read, not at start
    from console.core.config import Config


class SopConsole(App):
    TITLE = "SOP Console"
    CSS = stylesheet()
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="quit the console (the line above the keys says what keeps running)",
                id="app.quit"),
        Binding("question_mark,f1", "help", "Help", tooltip="this help: every key, this screen's first",
                id="app.help"),
        Binding("ctrl+p", "command_palette", "Commands", show=False,
                tooltip="the command palette: every menu action, saying what it does, and the themes",
                id="app.palette"),
    ]

    async def on_event(self, event: TextualEvent) -> None:
        """A key fresh from the terminal is held while a text box opens (widgets/burst.py), else sent on."""
        if isinstance(event, Key) and not event.is_forwarded and self.keys.raw(event):
            return
        await super().on_event(event)

    def _on_key(self, event: Key) -> None:
        """Before App._on_key (the bindings), which runs after this unless the key is held for a text box
        (prevent_default)."""
        self.keys.bubbled(event)

    def hold_keys(self) -> None:
        """A binding opens a text box: the keys typed after it, in the same burst, go there (widgets/burst.py)."""
        self.keys.hold()

    @on(EndOfBurst)
    def _end_of_burst(self, message: EndOfBurst) -> None:
        self.keys.end_of_burst(message)

    def on_descendant_focus(self) -> None:
        self.keys.check()

    def __init__(self, paths: StatePaths, *, config: Config | None = None, config_path: Path | None = None,
                 backend: DaemonBackend | StaticBackend | None = None, theme_name: str = "sop",
                 poll_log: bool = True, watch_terminal: bool | None = None, demo: bool = False,
                 config_problems: list[str] | None = None) -> None:
        super().__init__()
        self.keys = KeyHold(self)  # keys typed in one burst with the key that opens a text box go into the box
        self.session = Session(paths, config=config, config_path=config_path, backend=backend, demo=demo,
                               config_problems=config_problems)
        self.status_signal: Signal[StatusChanged] = Signal(self, "status")
        self.clients_signal: Signal[ClientChanged] = Signal(self, "clients")
        self.endpoints_signal: Signal[EndpointChanged] = Signal(self, "endpoints")
        self.operations_signal: Signal[OperationRecorded] = Signal(self, "operations")
        self.rules_signal: Signal[RuleChanged] = Signal(self, "rules")
        self.poll_log = poll_log
        self.on_close: list = []  # async callables run when the console ends (the demo closes its world here)
        self._hangup_task: asyncio.Task | None = None  # leaving a terminal that hung up, once
        self._apply_theme(theme_name if theme_name in THEMES else "sop")
        self._watch_terminal = (sys.__stdin__ is not None and sys.__stdin__.isatty()
                                and not os.environ.get("TEXTUAL_DRIVER")) if watch_terminal is None else watch_terminal

    @property
    def engine_here(self):
        """The Daemon run inside this console when none was running (None: the tunnels are the daemon's)."""
        return self.session.engine_here

    # ------------------------------------------------------------------ start-up

    def _apply_theme(self, name: str) -> None:
        """The theme, in place before any CSS is parsed. (Set in on_mount, as usual, Textual parsed the whole
        stylesheet a second time for the new variables: 10-20 ms of a start that should take little more than
        Textual's own.) What App._watch_theme does, minus that reparse; later changes go through `theme`."""
        for theme in load_themes():
            self.register_theme(theme)
        self.set_reactive(SopConsole.theme, name)
        dark = self.current_theme.dark
        self.update_classes({f"-theme-{name}": True, "-dark-mode": dark, "-light-mode": not dark}, update=False)
        self._refresh_truecolor_filter(self.ansi_theme)
        self.stylesheet.set_variables(self.get_css_variables())

    def get_default_screen(self) -> MainScreen:
        """The main screen at once, drawn while the daemon is asked for its status; the units follow."""
        return MainScreen(self.session, self.status_signal)

    def on_mount(self) -> None:
        if self._watch_terminal:
            self.set_interval(TERMINAL_CHECK_SECONDS, self._check_terminal)
            # The operator's SSH session closing hangs up the terminal: clean up (an engine run inside the console
            # stops its tunnels properly) instead of dying of the signal.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
        self._attach()

    @work(exclusive=True, group="attach")
    async def _attach(self) -> None:
        try:
            await self.session.connect()
        except DaemonNotRunning as exc:
            if not await self._start_engine_here(exc.message):
                self.exit()
                return
        self.status_signal.publish(StatusChanged())
        self._pump()

    async def _start_engine_here(self, reason: str) -> bool:
        """No daemon: offer the engine inside the console; when it fails to start, say why, with Retry and Quit.
        True once the engine runs here; False when the operator quits."""
        from console.ui.dialogs.no_daemon import NoDaemonScreen

        failure: str | None = None
        editable = False  # the config file is why it failed, and its text can be edited here
        while choice := await self.push_screen_wait(NoDaemonScreen(reason, failure, editable)):
            if choice == "edit":
                text = await asyncio.to_thread(self.session.config_text)
                if text is not None:
                    from console.ui.screens.config_text import ConfigTextScreen

                    await self.push_screen_wait(ConfigTextScreen(self.session, text, self.session.config_problems))
                continue
            try:
                await self.session.start_engine_here()
            except ConfigError as exc:
                failure = exc.message
                self.session.config_problems = list(exc.problems)
                editable = await asyncio.to_thread(self.session.config_text) is not None
            except ConsoleError as exc:
                failure, editable = exc.message, False
            except OSError as exc:
                failure, editable = os_reason(exc), False
            else:
                self.sub_title = "engine inside this console: quitting ends the tunnels"
                return True
        return False

    def closing_line(self) -> str:
        """What to print once the console has closed (see Session.closing_line)."""
        return self.session.closing_line()

    @work(exclusive=True, group="events")
    async def _pump(self) -> None:
        """Engine events, as they happen: a number on screen changes because an event said so. When the daemon
        goes away (stopped, restarted, or the stream cut), the screens show the last state as stale while the
        console reconnects; once it is back they show its fresh status and follow its events again."""
        while True:
            try:
                async for event in self.session.changes():
                    if isinstance(event, events.ClientChanged):
                        self.clients_signal.publish(ClientChanged(event.client))
                    elif isinstance(event, events.EndpointChanged):  # the main screen says a unit's endpoint problem
                        self.endpoints_signal.publish(EndpointChanged(event.endpoint))
                        self.status_signal.publish(StatusChanged())
                    elif isinstance(event, events.OperationRecorded):
                        self.operations_signal.publish(OperationRecorded(event.id))
                    elif isinstance(event, events.RuleChanged):
                        self.rules_signal.publish(RuleChanged(event.rule, event.change))
                    else:
                        self.status_signal.publish(StatusChanged())
            except (ConsoleError, OSError, ValueError):
                pass  # the connection broke, or the stream was cut: reconnect all the same
            self.session.lost()
            self.status_signal.publish(StatusChanged())
            await self._reconnect()
            self.status_signal.publish(StatusChanged())
            self.clients_signal.publish(ClientChanged(None))
            self.endpoints_signal.publish(EndpointChanged(None))
            self.operations_signal.publish(OperationRecorded(None))
            self.rules_signal.publish(RuleChanged(None))

    async def _reconnect(self) -> None:
        """Try the daemon's socket until it answers: soon at first, then every RECONNECT_MAX_SECONDS at most.
        Each try is bounded, and waits without blocking the screen."""
        delay = RECONNECT_FIRST_SECONDS
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.wait_for(self.session.reconnect(), RECONNECT_TRY_SECONDS)
                return
            except (ConsoleError, OSError, ValueError, TimeoutError):
                delay = min(delay * 1.5, RECONNECT_MAX_SECONDS)

    # ------------------------------------------------------------------ the menu, keys, palette

    @on(MenuChosen)
    def _menu_chosen(self, message: MenuChosen) -> None:
        self.run_worker(menu.run(self, message.action), group="menu")

    def action_help(self) -> None:
        """A page of its own with every key, the current screen's first (imported when first shown)."""
        from console.ui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen(self.screen, self.session.selected_unit))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Textual's "Theme" offers its twenty themes, which our stylesheet does not cover: ours are below.
        yield from (c for c in super().get_system_commands(screen) if c.title != "Theme")
        if isinstance(screen, MainScreen):
            unit = self.session.selected_unit or "the selected unit"
            for item in menu.MENU:
                yield SystemCommand(f"{item.key} {item.text}", item.does.format(unit=unit),
                                    lambda action=item.action: self.post_message(MenuChosen(action)))
        for name in THEMES:
            yield SystemCommand(f"Theme: {name}", f"switch to the {name} theme",
                                lambda name=name: setattr(self, "theme", name))

    # ------------------------------------------------------------------ the terminal, and leaving

    def _hangup(self) -> None:
        """The terminal is gone (SIGHUP, a dead stdin, or Textual's input thread failing on it): leave quickly.
        A watchdog thread ends the process even if the event loop is stuck in a write to the dead terminal."""
        if self._hangup_task is not None:
            return
        watchdog = threading.Timer(HANGUP_CLEANUP_SECONDS + 0.5, os._exit, args=(1,))
        watchdog.daemon = True
        watchdog.start()
        self._hangup_task = asyncio.create_task(self._leave_dead_terminal())

    def panic(self, *renderables) -> None:
        # Textual's input thread raises on a hung-up terminal and asks for a panic, whose graceful exit would
        # block for ever writing to that terminal: a dead terminal is a hangup, not a crash to print.
        if not _terminal_alive():
            self._hangup()
            return
        super().panic(*renderables)

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
        await self.session.close()
        for hook in self.on_close:
            await hook()
        self.on_close = []

    def _check_terminal(self) -> None:
        """Leave when the operator's terminal is gone (Textual 8.2.8 would spin on a dead stdin)."""
        if not _terminal_alive():
            self._hangup()

    async def action_quit(self) -> None:
        self.exit()

    async def on_unmount(self) -> None:
        await self._cleanup()


def _terminal_alive() -> bool:
    stdin = sys.__stdin__
    try:
        return stdin is not None and not stdin.closed and os.isatty(stdin.fileno())
    except (OSError, ValueError):
        return False
