"""The subsystem menu in one table: key, action, text and handler. The main screen's bindings, list and one-line
bar, the help page and the command palette are all made from it; the App runs a handler when a MenuChosen message
arrives.

A handler runs in a worker (it may wait for a dialog) and gets the app and the selected unit. The screens and
dialogs behind the menu are imported when first chosen, not when the console starts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from console.core.errors import ConsoleError

if TYPE_CHECKING:
    from console.ui.app import SopConsole

Handler = Callable[["SopConsole", "str | None"], Awaitable[None]]


async def install_key(app: SopConsole, unit: str | None) -> None:
    from console.ui.dialogs.install_key import InstallKeyScreen

    assert unit is not None
    offer = await app.session.key_offer(unit)
    await app.push_screen_wait(InstallKeyScreen(app.session, offer))


async def start(app: SopConsole, unit: str | None) -> None:
    assert unit is not None
    await app.session.start_unit(unit)
    app.notify(f"{unit}: start requested")


async def stop(app: SopConsole, unit: str | None) -> None:
    from console.ui.dialogs.confirm import ConfirmScreen

    assert unit is not None
    if await app.push_screen_wait(ConfirmScreen(
            f"Stop {unit}?", "Stopping cuts the operator's access to this unit until it is started again.")):
        await app.session.stop_unit(unit)
        app.notify(f"{unit}: stopped")


async def view_log(app: SopConsole, unit: str | None) -> None:
    from console.ui.screens.log import LogScreen

    await app.push_screen(LogScreen(app.session.paths.tunnel_log, poll=app.poll_log))


async def configure(app: SopConsole, unit: str | None) -> None:
    from console.ui.screens.configure import ConfigureScreen

    session = app.session
    if session.config_path is not None:  # read the file again: it may have been broken, or put right, meanwhile
        problems = await session.check_config_file()
        text = await asyncio.to_thread(session.config_text) if problems else None
        if text is not None:  # the form cannot read it: the file's own text, checked on save by the same parser
            from console.ui.messages import StatusChanged
            from console.ui.screens.config_text import ConfigTextScreen

            app.status_signal.publish(StatusChanged())  # the main screen's banner says the same problems
            await app.push_screen(ConfigTextScreen(session, text, problems))
            return
    try:
        form = session.configuration_form()
    except ConsoleError as exc:  # a file that cannot be read: say why, and offer a blank form to write a good one
        app.notify(exc.message, severity="error", timeout=10)
        form = session.configuration_form(blank=True)
    await app.push_screen(ConfigureScreen(session, form))


async def trust(app: SopConsole, unit: str | None) -> None:
    from console.ui.dialogs.confirm import TrustScreen

    assert unit is not None
    offer = await app.session.host_key_check(unit)  # the key the server presents now, beside the one we trust
    if not await app.push_screen_wait(TrustScreen(offer)):
        return  # cancelled, or already trusted (the dialog said so, with a Close button alone)
    result = await app.session.trust(unit, offer["fingerprint"], offer["outcome"] == "changed")
    app.notify(f"{unit}: host key {result['fingerprint']} {result['outcome']}")


async def clients(app: SopConsole, unit: str | None) -> None:
    from console.ui.screens.clients import ClientsScreen

    await app.push_screen(ClientsScreen(app.session, app.clients_signal, app.status_signal))


async def endpoints(app: SopConsole, unit: str | None) -> None:
    from console.ui.screens.endpoints import EndpointsScreen

    await app.push_screen(EndpointsScreen(app.session, app.endpoints_signal, app.status_signal))


async def operations(app: SopConsole, unit: str | None) -> None:
    from console.ui.screens.operations import OperationsScreen

    await app.push_screen(OperationsScreen(app.session, app.operations_signal, app.status_signal))


async def rules(app: SopConsole, unit: str | None) -> None:
    from console.ui.screens.rules import RulesScreen

    await app.push_screen(RulesScreen(app.session, app.rules_signal, app.status_signal))


@dataclass(frozen=True)
class MenuItem:
    key: str
    action: str
    text: str
    handler: Handler
    short: str               # the word in the one-line menu of a narrow terminal
    needs_unit: bool = True  # False: shown and run with no unit configured; the palette names no unit for it
    does: str = ""           # what it does, for the palette; "{unit}" is the selected unit


MENU: tuple[MenuItem, ...] = (
    MenuItem("1", "install_key", "Install ssh key", install_key, "Key",
             does="put {unit}'s public key on its server (asks the server password)"),
    MenuItem("2", "start", "Start", start, "Start", does="start {unit}'s tunnels"),
    MenuItem("3", "stop", "Stop", stop, "Stop", does="stop {unit}'s tunnels (asks first)"),
    MenuItem("4", "view_log", "View log", view_log, "Log", needs_unit=False,
             does="the tunnel log: every unit and the hub"),
    MenuItem("5", "configure", "Configure", configure, "Conf", needs_unit=False,
             does="edit the configuration file: the server, both units, the hub"),
    MenuItem("6", "trust", "Trust host key", trust, "Trust", does="check and trust the host key of {unit}'s server"),
    MenuItem("7", "clients", "Clients", clients, "Clients", needs_unit=False,
             does="the hub's clients: their ports and what each forwards"),
    MenuItem("8", "endpoints", "Endpoints", endpoints, "Endpts", needs_unit=False,
             does="the SSH servers units go through: auth status, set-up, sshd check, scope"),
    MenuItem("9", "rules", "Rules", rules, "Rules", needs_unit=False,
             does="the proxy rules and gateway plans: where each listens, its destinations, counters; add, remove"),
    MenuItem("o", "operations", "Operations", operations, "Ops", needs_unit=False,
             does="the operation log: who did what, from where, how it went; details, export"),
)
BY_ACTION = {item.action: item for item in MENU}


async def run(app: SopConsole, action: str) -> None:
    """Run a menu action for the selected unit; a failure is said in a notification."""
    item = BY_ACTION[action]
    unit = app.session.selected_unit
    if unit is None and item.needs_unit:
        app.notify("no units configured", severity="warning")
        return
    try:
        await item.handler(app, unit)
    except ConsoleError as exc:
        app.notify(exc.message, severity="error", timeout=10)
