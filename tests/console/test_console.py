"""The console, driven by keys at 80x24 against a real engine (daemon in-process) and a real sshd."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

from rich.cells import cell_len
from support import EchoServer, authorize_units, config_of, eventually, run, unit_yaml
from textual.widgets import DataTable, Input, Static

from console.core.errors import DaemonNotRunning
from console.core.keys import fingerprint, parse_public_key
from console.core.paths import StatePaths
from console.daemon import Daemon
from console.ui.app import SopConsole
from console.ui.dialogs.confirm import ConfirmScreen, TrustScreen
from console.ui.dialogs.install_key import InstallKeyScreen
from console.ui.dialogs.no_daemon import NoDaemonScreen
from console.ui.menu import MENU
from console.ui.screens.log import LogScreen
from console.ui.screens.main import MainScreen
from console.ui.widgets.log_view import LogView

SIZE = (80, 24)


def rows(app: SopConsole, table: str) -> list[list[str]]:
    grid = app.screen.query_one(f"#{table}", DataTable)
    return [[str(c) for c in grid.get_row_at(i)] for i in range(grid.row_count)]


def unit_row(app: SopConsole, unit: str) -> list[str]:
    return next((r for r in rows(app, "units") if r[0] == unit), [""] * 4)


def port_row(app: SopConsole, unit: str, fwd: str) -> list[str]:
    return next((r for r in rows(app, "ports") if r[0] == unit and r[1] == fwd), [""] * 10)


async def start_daemon(sshd, state: StatePaths, text: str, *, authorize: bool = True, path=None) -> Daemon:
    """A daemon in this process on the config `text`; with `path`, the text written there first and the daemon
    reading it again on reload (as `sop-console --config PATH daemon` runs)."""
    if path is not None:
        path.write_text(text)
    cfg = config_of(text)
    if authorize:
        authorize_units(sshd, state, cfg.units)
    daemon = Daemon(cfg, state, path, echo_log=False)
    await daemon.start()
    return daemon


def app_for(state: StatePaths, **kwargs) -> SopConsole:
    return SopConsole(state, poll_log=True, watch_terminal=False, **kwargs)


def test_menu_drives_stop_start_and_the_log(sshd, state):
    async def body():
        async with EchoServer() as echo:
            daemon = await start_daemon(sshd, state, unit_yaml(sshd, {"master": [f"ssh 0 127.0.0.1:{echo.port}"],
                                                                      "clone": [f"ssh 0 127.0.0.1:{echo.port}"]}))
            try:
                app = app_for(state)
                async with app.run_test(size=SIZE) as pilot:
                    await eventually(lambda: isinstance(app.screen, MainScreen))
                    await eventually(lambda: unit_row(app, "master")[1] == "● up" and unit_row(app, "clone")[1] == "● up")
                    assert port_row(app, "master", "ssh")[2] == "● listening"
                    assert "unit: master" in str(app.screen.query_one("#menu-title", Static).render())

                    await pilot.press("3")  # Stop asks first; No is the default
                    await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                    await pilot.press("enter")
                    await eventually(lambda: isinstance(app.screen, MainScreen))
                    await pilot.pause(0.3)
                    assert unit_row(app, "master")[1] == "● up"

                    await pilot.press("3", "y")  # yes: the daemon stops it, the screen says so from the event
                    await eventually(lambda: unit_row(app, "master")[1] == "■ stopped", timeout=3)
                    assert daemon.engine.status().units[0].state == "stopped"
                    assert port_row(app, "master", "ssh")[2] == "■ stopped"

                    await pilot.press("2")
                    await eventually(lambda: unit_row(app, "master")[1] == "● up", timeout=5)

                    await pilot.press("u")  # actions follow the selected unit, named in the menu's title
                    await eventually(lambda: "unit: clone" in str(app.screen.query_one("#menu-title", Static).render()))
                    # Idle means idle: table updates once made the two unit rows select each other forever.
                    cpu = time.process_time()
                    await asyncio.sleep(1.0)
                    assert time.process_time() - cpu < 0.3, "the console burns CPU while nothing happens"
                    assert app.session.selected_unit == "clone"
                    await pilot.press("3", "y")
                    await eventually(lambda: unit_row(app, "clone")[1] == "■ stopped", timeout=3)
                    assert unit_row(app, "master")[1] == "● up"

                    await pilot.press("4")
                    await eventually(lambda: isinstance(app.screen, LogScreen))
                    badge = app.screen.query_one("#log-badge", Static)
                    view = app.screen.query_one(LogView)
                    await eventually(lambda: view.index.count > 3)
                    assert str(badge.render()).startswith("FOLLOW")
                    # Following shows the tail: the last line on screen is the log's last line.
                    await eventually(lambda: view.bottom_row == view.index.count - 1, what="tail on screen")
                    await pilot.press("k")
                    await eventually(lambda: str(badge.render()).startswith("PAUSED"))
                    await pilot.press("end")
                    await eventually(lambda: str(badge.render()).startswith("FOLLOW"))
                    await pilot.press("slash")
                    await pilot.press(*"Starting", "enter")
                    await eventually(lambda: view.row_count >= 1 and view.filter_text == "Starting")
                    assert all("Starting" in view.index.line(view._line_of_row(r)) for r in range(view.row_count))
                    await pilot.press("escape")  # clears the filter
                    assert view.filter_text == "" and view.row_count == view.index.count
                    await pilot.press("escape")  # back
                    await eventually(lambda: isinstance(app.screen, MainScreen))
                    await pilot.press("q")
            finally:
                await daemon.close()
    run(body())


def test_a_forward_killed_on_the_server_shows_down_within_a_second(sshd, state):
    async def body():
        async with EchoServer() as echo:
            daemon = await start_daemon(sshd, state, unit_yaml(sshd, {"master": [f"ssh 0 127.0.0.1:{echo.port}"]}))
            try:
                app = app_for(state)
                async with app.run_test(size=SIZE):
                    await eventually(lambda: isinstance(app.screen, MainScreen)
                                     and port_row(app, "master", "ssh")[2] == "● listening")
                    for pid in sshd.session_pids():
                        os.kill(pid, signal.SIGKILL)
                    started = time.monotonic()
                    await eventually(lambda: port_row(app, "master", "ssh")[2] != "● listening", timeout=1.0,
                                     what="forward shown down")
                    # The unit's own event follows the forward's: both must be on screen within the second.
                    await eventually(lambda: unit_row(app, "master")[1] != "● up",
                                     timeout=max(0.0, 1.0 - (time.monotonic() - started)), what="unit shown down")
                    assert time.monotonic() - started < 1.0
            finally:
                await daemon.close()
    run(body())


def test_install_key_dialog_against_a_real_sshd(password_sshd, local_user, state):
    user, password, home = local_user

    async def body():
        text = unit_yaml(password_sshd, {"master": []}, users={"master": user})
        daemon = await start_daemon(password_sshd, state, text, authorize=False)
        try:
            app = app_for(state, config=config_of(text))
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen)
                                 and unit_row(app, "master")[1] == "✖ auth-failed", timeout=5)
                await pilot.press("1")
                await eventually(lambda: isinstance(app.screen, InstallKeyScreen))
                key_text = str(app.screen.query_one("#key-text", Static).render())
                assert key_text.startswith("SHA256:") and "ssh-ed25519 " in key_text
                box = app.screen.query_one("#password", Input)
                assert box.password  # masked
                await pilot.press(*"wrong-one", "enter")
                state_line = app.screen.query_one("#install-state", Static)
                await eventually(lambda: "failed" in str(state_line.render()), timeout=10)
                assert "refused the password" in str(state_line.render())
                await pilot.press(*password, "enter")
                await eventually(lambda: "● installed SHA256:" in str(state_line.render()), timeout=10)
                assert box.value == ""
                await pilot.press("escape")
                # The daemon was told: the unit connects at once, not after retry_max.
                await eventually(lambda: unit_row(app, "master")[1] == "● up", timeout=5)
                assert (home / ".ssh" / "authorized_keys").read_text().count("ssh-ed25519") == 1
        finally:
            await daemon.close()
    run(body())


def test_trust_host_key_from_the_menu(sshd, state):
    async def body():
        daemon = await start_daemon(sshd, state, unit_yaml(sshd, {"master": []}, pin=False))
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen)
                                 and unit_row(app, "master")[1] == "? host-key-unknown", timeout=5)
                shown = daemon.engine.status().units[0].server_key
                await pilot.press("6")
                await eventually(lambda: isinstance(app.screen, TrustScreen))
                assert shown in str(app.screen.query_one(".dialog-text", Static).render())
                await pilot.press("y")
                await eventually(lambda: unit_row(app, "master")[1] == "● up", timeout=5)
        finally:
            await daemon.close()
    run(body())


def notifications(app: SopConsole) -> list[str]:
    return [n.message for n in app._notifications]


def test_trust_host_key_already_trusted_shows_both_keys_and_one_close_button(sshd, state):
    """The key a real sshd presents is the one trusted: the dialog shows both fingerprints and says there is
    nothing to do, with one Close button (no OK / Cancel to choose between); closing it (enter, y, esc) asks the
    daemon nothing more and adds no toast."""
    from textual.widgets import Button

    async def body():
        daemon = await start_daemon(sshd, state, unit_yaml(sshd, {"master": []}))  # the real key, pinned
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen)
                                 and unit_row(app, "master")[1] == "● up", timeout=5)
                held = fingerprint(parse_public_key(sshd.host_public_key))
                recorded = state.known_hosts.read_bytes() if state.known_hosts.exists() else b""
                for close in ("enter", "y", "escape"):
                    before = len(notifications(app))
                    await pilot.press("6")
                    await eventually(lambda: isinstance(app.screen, TrustScreen), timeout=5)
                    text = str(app.screen.query_one(".dialog-text", Static).render())
                    assert text.count(held) == 2, text  # presented now, and the one trusted
                    assert "already trusted, nothing to do" in text
                    assert "Host key already trusted" in str(app.screen.query_one(".dialog-title").render())
                    buttons = [str(b.label) for b in app.screen.query(Button)]
                    assert buttons == ["Close"], buttons
                    assert app.focused is app.screen.query_one(Button)
                    await pilot.press(close)
                    await eventually(lambda: isinstance(app.screen, MainScreen))
                    await pilot.pause(0.3)
                    assert notifications(app)[before:] == [], close
                assert (state.known_hosts.read_bytes() if state.known_hosts.exists() else b"") == recorded
        finally:
            await daemon.close()
    run(body())


def test_trust_host_key_advice_fits_the_server_kind():
    """OpenSSH: ssh-keygen -lf on the server's host key; our hub: `sop-console hub key` on the hub."""
    offer = {"unit": "master", "server": "127.0.0.1:22", "fingerprint": "SHA256:new", "trusted": [],
             "pinned": False, "outcome": "not trusted yet"}
    hub = str(TrustScreen(offer | {"software": "SSH-2.0-SOPConsoleHub_1", "hub": True}).detail)
    openssh = str(TrustScreen(offer | {"software": "SSH-2.0-OpenSSH_9.2p1 Debian-2", "hub": False}).detail)
    assert "sop-console hub key" in hub and "ssh-keygen" not in hub
    assert "ssh-keygen -lf" in openssh and "hub key" not in openssh
    assert "none yet" in hub


def test_no_daemon_offers_the_engine_inside_the_console(sshd, state, tmp_path):
    async def body():
        config = tmp_path / "console.yaml"
        config.write_text(unit_yaml(sshd, {"master": []}))
        authorize_units(sshd, state, ["master"])
        app = app_for(state, config_path=config)
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, NoDaemonScreen))
            assert "tunnels end when you quit" in str(app.screen.query_one(".dialog-text", Static).render())
            await pilot.press("s")
            await eventually(lambda: isinstance(app.screen, MainScreen)
                             and unit_row(app, "master")[1] == "● up", timeout=5)
            assert app.engine_here is not None
        assert not state.control_socket.exists()  # the engine ended with the console
    run(body())


def test_log_view_opens_on_the_tail_of_a_large_log(state):
    """No polling, so nothing but the first layout can bring the tail into view."""
    from console.ui.backend import StaticBackend

    state.tunnel_log.write_text("".join(f"2026-11-22T10:00:00Z master event {i}\n" for i in range(50_000)))

    async def body():
        app = SopConsole(state, backend=StaticBackend({"units": []}), poll_log=False, watch_terminal=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            await eventually(lambda: isinstance(app.screen, LogScreen))
            view = app.screen.query_one(LogView)
            await eventually(lambda: view.index.complete and view.bottom_row == view.index.count - 1,
                             what="tail on screen")
            assert view.index.line(view.bottom_row) == "2026-11-22T10:00:00Z master event 49999"
    run(body())


def test_log_view_searches_with_s_and_leaves_question_mark_to_help(state):
    """`?` is the help everywhere; in the log view `s` searches and `n` / `N` go from hit to hit."""
    from console.ui.backend import StaticBackend

    state.tunnel_log.write_text("".join(f"2026-11-22T10:00:00Z master event {i}\n" for i in range(500)))

    async def body():
        app = SopConsole(state, backend=StaticBackend({"units": []}), poll_log=False, watch_terminal=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            await eventually(lambda: isinstance(app.screen, LogScreen))
            view = app.screen.query_one(LogView)
            await pilot.press("question_mark")
            await eventually(lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.press("question_mark")
            await eventually(lambda: isinstance(app.screen, LogScreen))
            await pilot.press("s", *"event 12", "enter")
            await eventually(lambda: view._current >= 0, what="a search hit")
            first = view._current
            assert "event 12" in view.index.line(first)
            await pilot.press("n")
            await eventually(lambda: view._current not in (-1, first), what="the next hit")
            assert "event 12" in view.index.line(view._current)
            await pilot.press("N")
            await eventually(lambda: view._current == first, what="back to the first hit")
            assert not view.following
    run(body())


def test_help_palette_and_no_color(state, monkeypatch):
    """? shows the bindings; ctrl+p finds every menu action and the themes; NO_COLOR still shows states."""
    from textual.command import CommandPalette

    from console.ui.backend import StaticBackend

    monkeypatch.setenv("NO_COLOR", "1")
    status = {"units": [{"name": "master", "state": "degraded", "since": "2026-11-22T10:00:00Z",
                         "server": "203.0.113.7:22", "username": "root", "last_error": "ssh refused: held",
                         "next_retry": None, "server_key": None, "forwards": []}]}
    backend = StaticBackend(status)

    async def body():
        app = SopConsole(state, backend=backend, poll_log=False, watch_terminal=False)
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "master")[1])
            assert unit_row(app, "master")[1] == "◐ degraded"  # a word and a glyph, not a colour alone
            await pilot.press("question_mark")
            await eventually(lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.press("question_mark")
            await eventually(lambda: isinstance(app.screen, MainScreen))
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for wanted in ("1 Install ssh key", "2 Start", "3 Stop", "4 View log", "5 Configure",
                           "6 Trust host key", "Theme: sop", "Theme: dark", "Theme: light"):
                assert wanted in titles
            await pilot.press("ctrl+p")
            await eventually(lambda: isinstance(app.screen, CommandPalette))
            await pilot.press(*"Start", "enter")
            await eventually(lambda: ("start", {"unit": "master"}) in backend.requests)
    run(body())


def test_palette_says_what_each_command_does_and_offers_only_our_themes(state):
    """Per-unit wording (naming the unit) only on the per-unit actions; the themes are the product's three, not
    Textual's twenty (which the stylesheet does not cover)."""
    from console.core.choices import THEMES
    from console.ui.backend import StaticBackend

    status = {"units": [{"name": "clone", "state": "up", "since": "2026-11-22T10:00:00Z", "server": "203.0.113.7:22",
                         "username": "root", "last_error": None, "next_retry": None, "server_key": None,
                         "forwards": []}]}

    async def body():
        app = SopConsole(state, backend=StaticBackend(status), poll_log=False, watch_terminal=False)
        async with app.run_test(size=SIZE):
            await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "clone")[1])
            commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
            for title in ("1 Install ssh key", "2 Start", "3 Stop", "6 Trust host key"):
                assert "clone" in commands[title], (title, commands[title])
            for title in ("4 View log", "5 Configure", "7 Clients", "9 Rules", "o Operations"):
                assert "selected unit" not in commands[title] and "clone" not in commands[title], \
                    (title, commands[title])
            assert sorted(t for t in commands if t.lower().startswith("theme")) == \
                sorted(f"Theme: {name}" for name in THEMES)
    run(body())


def test_configure_checks_saves_keeps_a_backup_and_reloads(sshd, state, tmp_path):
    from sshd import free_port

    async def body():
        async with EchoServer() as echo:
            path = tmp_path / "console.yaml"
            original = unit_yaml(sshd, {"master": [f"ssh 0 127.0.0.1:{echo.port}"]})
            daemon = await start_daemon(sshd, state, original, path=path)
            try:
                app = app_for(state, config_path=path)
                async with app.run_test(size=SIZE) as pilot:
                    await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "master")[1] == "● up")
                    await pilot.press("5")
                    await eventually(lambda: type(app.screen).__name__ == "ConfigureScreen")
                    http = app.screen.query_one("#master-http_port", Input)
                    http.value = "70000"
                    await pilot.press("ctrl+s")
                    errors = app.screen.query_one("#form-errors", Static)
                    await eventually(lambda: "not saved" in str(errors.render()))
                    assert "units.master.http.remote_port: must be 1-65535 or 0, got 70000" in str(errors.render())
                    assert path.read_text() == original and not (tmp_path / "console.yaml.bak").exists()
                    port = free_port()
                    http.value = str(port)
                    app.screen.query_one("#master-target", Input).value = "127.0.0.1"
                    await pilot.press("ctrl+s")
                    await eventually(lambda: isinstance(app.screen, MainScreen), what="form closed")
                    assert (tmp_path / "console.yaml.bak").read_text() == original
                    # The daemon reloaded: the new forward listens, and the screen shows it.
                    await eventually(lambda: port_row(app, "master", "http")[2] == "● listening", timeout=5)
                    assert port_row(app, "master", "http")[3] == f"*:{port}"
                    # The forward the form did not touch kept its local service and its bind.
                    assert port_row(app, "master", "ssh")[4] == f"127.0.0.1:{echo.port}"
                    assert "remote_bind: 127.0.0.1" in path.read_text()
                    # The save is in the operation log: a reload from the console, with what changed.
                    from console.core.oplog import OpQuery

                    (saved,) = daemon.engine.oplog.page(OpQuery(action="reload"))["entries"]
                    assert (saved.via, saved.outcome) == ("console", "ok") and "master" in saved.details["changes"]
            finally:
                await daemon.close()
    run(body())


def test_clients_screen_runs_the_customer_life_cycle(state, tmp_path):
    """add (the key shown once) -> the customer connects with that key (the screen hears it from the hub's events,
    it does not poll) -> quota -> disable (No first) -> remove."""
    from sshd import free_port

    from console.demo import _free_range
    from console.ui.dialogs.ask import SecretScreen
    from console.ui.screens.clients import ClientsScreen

    async def body():
        low, high = _free_range(8)
        hub_port = free_port()
        cfg = config_of(f"hub: {{listen: '127.0.0.1:{hub_port}', ports: '{low}-{high}', default_quota: 3}}\n")
        daemon = Daemon(cfg, state, None, echo_log=False)
        await daemon.start()
        ssh = None
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen))
                await pilot.press("7")
                await eventually(lambda: isinstance(app.screen, ClientsScreen))
                await pilot.press("a")
                await pilot.press(*"acme", "enter")
                await eventually(lambda: isinstance(app.screen, SecretScreen), timeout=5)
                private = str(app.screen.query_one("#secret", Static).render())
                assert "BEGIN OPENSSH PRIVATE KEY" in private
                await pilot.press("enter")
                await eventually(lambda: isinstance(app.screen, ClientsScreen))
                await eventually(lambda: rows(app, "clients") and rows(app, "clients")[0][:5] ==
                                 ["acme", "● enabled", "3", f"{low}-{low + 2}", "○ no"], timeout=5)
                key = tmp_path / "acme_key"
                key.write_text(private.strip() + "\n")
                key.chmod(0o600)
                ssh = await asyncio.create_subprocess_exec(
                    "ssh", "-N", "-i", str(key), "-p", str(hub_port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path}/kh",
                    "-R", f"127.0.0.1:{low + 1}:127.0.0.1:9", "acme@127.0.0.1",
                    stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                await eventually(lambda: rows(app, "clients")[0][4:6] == ["● yes", "1"], timeout=5,
                                 what="the client online, from the hub's event")
                assert rows(app, "client-forwards") == [[str(low + 1), "-", "0", "0", "0 B", "0 B", "(not announced)"]]
                await pilot.press("c", *"5", "enter")
                await eventually(lambda: rows(app, "clients")[0][2] == "5", timeout=5)
                await pilot.press("d")
                await pilot.press("enter")  # the default answer is No
                await pilot.pause(0.3)
                assert rows(app, "clients")[0][1] == "● enabled"
                await pilot.press("d", "y")
                await eventually(lambda: rows(app, "clients")[0][1] == "■ disabled", timeout=5)
                assert daemon.engine.clients.registry.get("acme").quota == 0
                await asyncio.wait_for(ssh.wait(), 2)  # its session ended at once
                await eventually(lambda: rows(app, "clients")[0][4] == "○ no" and rows(app, "client-forwards") == [],
                                 timeout=5)
                await pilot.press("x", "y")
                await eventually(lambda: rows(app, "clients") == [], timeout=5)
                assert daemon.engine.clients.registry.get("acme") is None
        finally:
            if ssh is not None and ssh.returncode is None:
                ssh.kill()
                await ssh.wait()
            await daemon.close()
    run(body())


def test_a_cell_that_grows_widens_its_column():
    """Counters updated in place: "54 B" becoming "108 B" must not show as "108 " (its column grows)."""
    from textual.app import App

    from console.ui.widgets.tables import fill

    class Table(App):
        def compose(self):
            yield DataTable()

    async def body():
        app = Table()
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one(DataTable)
            table.add_columns("port", "out")
            fill(table, {"a": ("2200", "54 B")})
            await pilot.pause()
            fill(table, {"a": ("2200", "108 B")})
            await pilot.pause()
            assert table.ordered_columns[1].content_width >= len("108 B")
            assert "108 B" in "".join(strip.text for strip in table.render_lines(table.region.reset_offset))
    run(body())


def test_clients_screen_whose_widgets_are_gone_when_a_fetch_ends(state):
    """Found as a flaky end of the life-cycle test: the console quit, its screens' widgets were taken down, and
    an answer that arrived just then was drawn onto widgets no longer there (NoMatches, WorkerFailed). The same
    state, made on purpose: the widgets removed, then a hub event starts a fetch."""
    from console.ui.backend import StaticBackend
    from console.ui.screens.clients import ClientsScreen

    async def body():
        app = app_for(state, backend=StaticBackend({"units": []}, {"clients.list": {"clients": []}}))
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen))
            await pilot.press("7")
            await eventually(lambda: isinstance(app.screen, ClientsScreen))
            screen = app.screen
            await screen.query_one("#clients", DataTable).remove()
            screen.client_changed("acme")
            await eventually(lambda: not screen._loading, what="the fetch ended")
            await pilot.pause()
            assert app.return_code is None  # still running: no worker failed
    run(body())


def test_a_long_reason_is_shown_whole_wrapped_not_cut(state):
    """A refused forward's reason at 80 columns wraps under the ports table instead of ending mid-sentence."""
    from console.core.states import ForwardState, UnitState
    from console.core.status import ForwardStatus, Status, UnitStatus
    from console.ui.backend import StaticBackend

    reason = ("server refused to listen on *:10081 (Failed to create remote TCP listener): the port is held by "
              "another session (often a dead one of ours), in use, or not allowed (PermitListen, AllowTcpForwarding)")
    status = Status([UnitStatus("master", UnitState.DEGRADED, "2026-11-22T10:00:00Z", "203.0.113.7:2222", "sop001",
                                last_error=f"http refused: {reason}",
                                forwards=[ForwardStatus("http", "*:10081", "127.0.0.1:80", ForwardState.REFUSED,
                                                        reason)])])

    async def body():
        app = app_for(state, backend=StaticBackend(status.to_json()))
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen))
            await pilot.pause()
            for box in ("#port-detail", "#unit-detail"):
                widget = app.screen.query_one(box, Static)
                shown = " ".join(line.text.strip() for line in widget.render_lines(widget.region.reset_offset))
                assert "AllowTcpForwarding)" in shown, (box, shown)  # the reason's last words are on screen
    run(body())


def test_a_unit_whose_endpoint_is_unavailable_says_so_in_its_error_line(sshd, state):
    """The endpoint's check goes unavailable while the console watches: the unit's detail says it, from the
    event alone (no refetch), and says nothing once a check finds it available again."""
    def detail(app: SopConsole) -> str:
        return str(app.screen.query_one("#unit-detail", Static).render())

    async def body():
        quiet = "  endpoint_check_interval: 0\n"   # only the checks this test asks for
        daemon = await start_daemon(sshd, state, unit_yaml(sshd, {"master": []}, tunnel=quiet))
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE):
                await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "master")[1] == "● up")
                assert detail(app).endswith("\nno error")
                sshd.stop()
                await daemon.engine.logins.check(["default"], "test")
                problem = f"endpoint default unavailable: connection refused by 127.0.0.1:{sshd.port}"
                await eventually(lambda: problem in detail(app), what="the endpoint's problem on screen")
                sshd.start()
                await daemon.engine.logins.check(["default"], "test")
                await eventually(lambda: "endpoint default" not in detail(app), what="the problem gone")
        finally:
            await daemon.close()
    run(body())


def test_the_console_reconnects_to_a_restarted_daemon(sshd, state):
    """The daemon stops: a bar says so and the states shown are marked stale; it comes back: live again, with no
    key pressed (fresh status, the event stream followed again, requests answered by the new daemon)."""
    async def body():
        async with EchoServer() as echo:
            text = unit_yaml(sshd, {"master": [f"ssh 0 127.0.0.1:{echo.port}"]})
            running = [await start_daemon(sshd, state, text)]
            try:
                app = app_for(state)
                async with app.run_test(size=SIZE) as pilot:
                    await eventually(lambda: isinstance(app.screen, MainScreen))
                    bar = app.screen.query_one("#daemon-bar", Static)
                    units = app.screen.query_one("#units", DataTable)
                    await eventually(lambda: unit_row(app, "master")[1] == "● up", timeout=5)
                    assert not bar.display and not units.has_class("-stale")

                    await running.pop().close()
                    await eventually(lambda: bar.display and "reconnecting" in str(bar.render()), timeout=1,
                                     what="the daemon-gone bar")
                    assert "as of" in str(bar.render())
                    assert units.has_class("-stale") and "as of" in str(units.border_title)
                    assert unit_row(app, "master")[1] == "● up"  # the last state known, marked as such
                    await pilot.pause(0.5)  # still gone: still saying so
                    assert bar.display

                    running.append(await start_daemon(sshd, state, text))
                    await eventually(lambda: not bar.display, timeout=1.5, what="live again within a second")
                    assert not units.has_class("-stale") and "as of" not in str(units.border_title or "")
                    await eventually(lambda: unit_row(app, "master")[1] == "● up", timeout=5)
                    await pilot.press("3", "y")  # a request the new daemon carries out; its event reaches the screen
                    await eventually(lambda: unit_row(app, "master")[1] == "■ stopped", timeout=3)
                    assert running[0].engine.status().units[0].state == "stopped"
            finally:
                for daemon in running:
                    await daemon.close()
    run(body())


def _hub_yaml(port: int) -> str:
    return f"hub:\n  listen: 127.0.0.1:{port}\n  ports: 47100-47120\n"


def test_start_engine_here_that_fails_says_why_and_offers_retry(sshd, state, tmp_path):
    async def body():
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "console.yaml"
        config.write_text(unit_yaml(sshd, {"master": []}) + _hub_yaml(port))
        authorize_units(sshd, state, ["master"])
        app = app_for(state, config_path=config)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, NoDaemonScreen))
                await pilot.press("s")
                await eventually(lambda: isinstance(app.screen, NoDaemonScreen) and app.screen.query("#retry"),
                                 timeout=5, what="the failure in the dialog")
                text = str(app.screen.query_one(".dialog-text", Static).render())
                assert f"cannot listen on 127.0.0.1:{port}" in text and "Address already in use" in text
                assert app.engine_here is None and not state.control_socket.exists()
                busy.close()
                await pilot.press("r")  # the port is free now: retry starts the engine
                await eventually(lambda: isinstance(app.screen, MainScreen)
                                 and unit_row(app, "master")[1] == "● up", timeout=5)
                assert app.engine_here is not None
                assert "the tunnels end" in str(app.screen.query_one("#quit-note", Static).render())
                await pilot.press("q")
        finally:
            busy.close()
        assert not state.control_socket.exists()
        assert app.closing_line() == "console closed; the engine it ran has stopped, and its tunnels with it"
    run(body())


def test_start_engine_here_with_a_bad_config_then_quit_says_nothing_ran(state, tmp_path):
    async def body():
        config = tmp_path / "console.yaml"
        config.write_text("server: {host: 127.0.0.1, port: 70000}\nunits: {}\n")
        app = app_for(state, config_path=config)
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, NoDaemonScreen))
            await pilot.press("s")
            await eventually(lambda: isinstance(app.screen, NoDaemonScreen) and app.screen.query("#retry"),
                             timeout=5, what="the failure in the dialog")
            assert "70000" in str(app.screen.query_one(".dialog-text", Static).render())
            await pilot.press("q")
        assert app.engine_here is None
        assert app.closing_line() == "console closed; no daemon was running and no engine ran here"
    run(body())


def test_the_closing_line_says_what_ran(state):
    from console.ui.session import DAEMON, ENGINE_HERE, Session

    session = Session(state)
    assert session.closing_line() == "console closed; no daemon was running and no engine ran here"
    session.ran = ENGINE_HERE
    assert session.closing_line() == "console closed; the engine it ran has stopped, and its tunnels with it"
    session.ran = DAEMON
    assert session.closing_line() == "console closed; the tunnels keep running in the daemon"
    session.stale_since = time.mktime((2026, 11, 30, 12, 1, 2, 0, 0, -1))
    assert session.closing_line() == "console closed; the daemon had gone away (last seen at 12:01:02) and was not back"


def test_the_daemon_gone_bar_shows_on_the_clients_screen_too(state):
    from console.core.status import Status
    from console.ui.backend import StaticBackend
    from console.ui.messages import StatusChanged
    from console.ui.screens.clients import ClientsScreen

    async def body():
        app = app_for(state, backend=StaticBackend(Status().to_json(), {"clients.list": {"clients": []}}))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("7")
            await eventually(lambda: isinstance(app.screen, ClientsScreen))
            bar = app.screen.query_one("#daemon-bar", Static)
            assert not bar.display
            app.session.lost()  # what the App does when the daemon's connection ends
            app.status_signal.publish(StatusChanged())
            await eventually(lambda: bar.display and bar.region.y == 0 and "reconnecting" in str(bar.render()))
            try:  # a request says at once that the daemon is gone
                await app.session.clients_list()
            except DaemonNotRunning as exc:
                assert "the daemon is gone; the console is reconnecting" in exc.message
            else:
                raise AssertionError("a request while the daemon is gone was sent")
    run(body())


# ---------------------------------------------------------------------- what q and Configure say, in each mode

def _quit_note(app: SopConsole) -> str:
    return str(app.screen.query_one("#quit-note", Static).render())


def _configure_title(app: SopConsole) -> str:
    return str(app.screen.query_one("#form-title", Static).render())


def test_attached_to_the_daemon_q_and_configure_say_the_daemon_keeps_running_and_reloads(sshd, state, tmp_path):
    async def body():
        path = tmp_path / "console.yaml"
        path.write_text(unit_yaml(sshd, {"master": []}))
        daemon = await start_daemon(sshd, state, path.read_text())
        try:
            app = app_for(state, config_path=path)
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "master")[0])
                assert _quit_note(app) == "q quits the console; the tunnels keep running"
                await pilot.press("5")
                await eventually(lambda: type(app.screen).__name__ == "ConfigureScreen")
                title = _configure_title(app)
                assert str(path) in title and "the daemon reloads it" in title and ".bak" in title
                await pilot.press("escape", "q")
            assert app.closing_line() == "console closed; the tunnels keep running in the daemon"
        finally:
            await daemon.close()
    run(body())


def test_engine_here_q_and_configure_say_the_tunnels_end_with_the_console(sshd, state, tmp_path):
    async def body():
        path = tmp_path / "console.yaml"
        path.write_text(unit_yaml(sshd, {"master": []}))
        app = app_for(state, config_path=path)
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, NoDaemonScreen))
            await pilot.press("s")
            await eventually(lambda: isinstance(app.screen, MainScreen) and app.engine_here is not None, timeout=5)
            assert _quit_note(app) == "q quits the console and the engine it runs: the tunnels end"
            await pilot.press("5")
            await eventually(lambda: type(app.screen).__name__ == "ConfigureScreen")
            title = _configure_title(app)
            assert str(path) in title and "the engine here reloads it" in title
            assert "daemon" not in title
            await pilot.press("escape", "q")
        assert app.closing_line() == "console closed; the engine it ran has stopped, and its tunnels with it"
    run(body())


def test_demo_q_and_configure_say_what_the_demo_does(tmp_path):
    from console.cli.demo import demo_app
    from console.demo import build_demo
    from console.ui.screens.configure import ConfigureScreen

    async def body():
        paths = StatePaths(tmp_path / "demo")
        world = await build_demo(paths)
        try:
            app = demo_app(paths, world)
            app.poll_log = False
            app._watch_terminal = False
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "master")[0])
                assert _quit_note(app) == "q ends the demo: its hub, services and tunnels stop"
                await pilot.press("5")
                await eventually(lambda: isinstance(app.screen, ConfigureScreen))
                title = _configure_title(app)
                assert "demo" in title and "Saving rewrites" not in title and "nothing is saved" in title
                await pilot.press("ctrl+s")  # says why, and writes nothing
                errors = app.screen.query_one("#form-errors", Static)
                await eventually(lambda: "not saved" in str(errors.render()))
                assert "demo" in str(errors.render()) and "--config" not in str(errors.render())
                await pilot.press("escape", "q")
            assert app.closing_line() == "demo closed; its hub, services and tunnels have stopped"
        finally:
            await world.close()
    run(body())


def test_no_config_file_configure_says_it_cannot_save(state):
    from console.core.status import Status
    from console.ui.backend import StaticBackend

    async def body():
        app = app_for(state, backend=StaticBackend(Status().to_json()))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("5")
            await eventually(lambda: type(app.screen).__name__ == "ConfigureScreen")
            title = _configure_title(app)
            assert "no file" in title and "Saving rewrites" not in title and "--config FILE" in title
    run(body())


# ---------------------------------------------------------------------- a config file that does not check

def _console_app(path, state: StatePaths) -> SopConsole:
    """The console as `sop-console --config PATH` opens it (the command line's own code)."""
    from console.cli import parser
    from console.cli.context import Context
    from console.cli.demo import console_app

    app = console_app(Context(parser().parse_args(["--config", str(path), "--state-dir", str(state.root)])))
    app.poll_log = False
    return app


def test_a_typo_in_the_config_file_opens_the_console_with_a_banner_and_configure_fixes_it(sshd, state, tmp_path):
    """Under ForceCommand the console is the only way in: a broken file must not lock the operator out."""
    from textual.widgets import TextArea

    async def body():
        async with EchoServer() as echo:
            path = tmp_path / "console.yaml"
            good = unit_yaml(sshd, {"master": [f"ssh 0 127.0.0.1:{echo.port}"]})
            daemon = await start_daemon(sshd, state, good, path=path)
            try:
                broken = good.replace("    username:", "    usernme:")
                path.write_text(broken)  # broken on disk; the daemon keeps its last good config
                line = broken.splitlines().index(next(x for x in broken.splitlines() if "usernme" in x)) + 1
                app = _console_app(path, state)
                async with app.run_test(size=SIZE) as pilot:
                    await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "master")[1] == "● up",
                                     what="the daemon's live units")
                    banner = app.screen.query_one("#config-banner", Static)
                    assert banner.display
                    text = str(banner.render())
                    assert f"{path}:{line}: units.master.usernme: unknown key (did you mean 'username'?)" in text
                    assert "5 Configure" in text and "daemon" in text

                    await pilot.press("5")  # the form cannot read the file: its text, to edit
                    await eventually(lambda: type(app.screen).__name__ == "ConfigTextScreen")
                    editor = app.screen.query_one("#config-text", TextArea)
                    assert editor.text == broken
                    title = str(app.screen.query_one("#text-title", Static).render())
                    assert str(path) in title and "as it is" in title and "the daemon reloads it" in title
                    errors = app.screen.query_one("#form-errors", Static)
                    assert f"{line}: units.master.usernme" in str(errors.render())
                    editor.text = broken + "tunnel: {retry_max: 0}\n"  # still wrong (and a duplicate key): not saved
                    await pilot.press("ctrl+s")
                    await eventually(lambda: "not saved" in str(errors.render()))
                    assert "usernme" in str(errors.render()) and path.read_text() == broken
                    assert not (tmp_path / "console.yaml.bak").exists()

                    editor.text = broken.replace("usernme:", "username:")
                    await pilot.press("ctrl+s")
                    await eventually(lambda: isinstance(app.screen, MainScreen), what="the editor closed")
                    assert path.read_text() == good and (tmp_path / "console.yaml.bak").read_text() == broken
                    await eventually(lambda: not banner.display, what="the banner gone after the reload")
                    assert unit_row(app, "master")[1] == "● up"
                    await pilot.press("5")  # the file checks again: the form
                    await eventually(lambda: type(app.screen).__name__ == "ConfigureScreen")
            finally:
                await daemon.close()
    run(body())


def test_a_reload_the_daemon_refuses_shows_the_banner_at_once_and_a_good_one_takes_it_away(sshd, state, tmp_path):
    """The daemon refuses a SIGHUP reload of a broken file: the open console says so within a second (FILE:LINE),
    not only when Configure opens; the file put right and reloaded, the banner goes. Both with the console
    started on the same file and with none of its own (the daemon's events alone)."""
    import signal

    async def body(with_file: bool):
        async with EchoServer() as echo:
            path = tmp_path / f"console-{with_file}.yaml"
            good = unit_yaml(sshd, {"master": [f"ssh 0 127.0.0.1:{echo.port}"]})
            daemon = await start_daemon(sshd, state, good, path=path)
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, daemon._on_sighup)  # as Daemon.run does
            try:
                app = _console_app(path, state) if with_file else app_for(state)
                async with app.run_test(size=SIZE):
                    await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "master")[1] == "● up",
                                     what="the daemon's live units")
                    banner = app.screen.query_one("#config-banner", Static)
                    assert not banner.display

                    broken = good.replace("    username:", "    usernme:")
                    line = broken.splitlines().index(next(x for x in broken.splitlines() if "usernme" in x)) + 1
                    path.write_text(broken)
                    os.kill(os.getpid(), signal.SIGHUP)
                    sent = time.monotonic()
                    await eventually(lambda: banner.display, timeout=1, interval=0.01, what="the banner within a second")
                    print(f"banner after {time.monotonic() - sent:.3f} s")
                    text = str(banner.render())
                    assert f"{path}:{line}: units.master.usernme: unknown key" in text, text
                    assert "the daemon keeps the configuration it last loaded" in text
                    assert (str(path) if with_file else "the config file") in text.splitlines()[0]
                    assert unit_row(app, "master")[1] == "● up"  # the last good configuration runs on

                    path.write_text(good)
                    os.kill(os.getpid(), signal.SIGHUP)
                    await eventually(lambda: not banner.display, timeout=1, interval=0.01,
                                     what="the banner gone within a second")
                    assert app.session.config_problems == []
            finally:
                loop.remove_signal_handler(signal.SIGHUP)
                await daemon.close()

    for with_file in (True, False):
        run(body(with_file))


def test_the_config_text_editor_asks_before_esc_discards_edits(state, tmp_path):
    """Configure's text editor (a file the form cannot read): esc with no edits goes back at once; with edits not
    saved it asks "Discard your changes?", default No (enter, n, esc keep the edits), y discards them; the file on
    disk is never touched by going back."""
    from textual.widgets import Button, TextArea

    from console.ui.backend import StaticBackend

    path = tmp_path / "console.yaml"
    broken = "units:\n  master: {usernme: sop001, server: {host: 203.0.113.7}}\n"
    path.write_text(broken)

    async def body():
        app = app_for(state, backend=StaticBackend({"units": []}), config_path=path)
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen))

            async def open_editor() -> TextArea:
                await pilot.press("5")
                await eventually(lambda: type(app.screen).__name__ == "ConfigTextScreen")
                return app.screen.query_one("#config-text", TextArea)

            await open_editor()
            await pilot.press("escape")  # nothing typed: back at once
            await eventually(lambda: isinstance(app.screen, MainScreen))

            editor = await open_editor()
            await pilot.press("end", *"# a note")
            await eventually(lambda: editor.text != broken)
            for keep in ("enter", "n", "escape"):
                await pilot.press("escape")
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                assert str(app.screen.query_one(".dialog-title").render()) == "Discard your changes?"
                assert isinstance(app.focused, Button) and app.focused.id == "no"  # the default: keep editing
                await pilot.press(keep)
                await eventually(lambda: type(app.screen).__name__ == "ConfigTextScreen")
                assert app.screen.query_one("#config-text", TextArea).text == editor.text != broken, keep
            await pilot.press("escape")
            await eventually(lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await eventually(lambda: isinstance(app.screen, MainScreen))
            assert path.read_text() == broken

            editor = await open_editor()  # the file's own text again: what was typed is gone
            assert editor.text == broken
    run(body())


def test_a_broken_config_file_opens_the_console_but_check_still_fails(tmp_path, monkeypatch, capsys):
    from console.cli import main

    path = tmp_path / "console.yaml"
    path.write_text("server: {host: 127.0.0.1}\nunits:\n  master: {usernme: x}\n")
    seen = []
    monkeypatch.setenv("TEXTUAL_DRIVER", "test")  # the console needs a terminal: pretend one serves it
    monkeypatch.setattr(SopConsole, "run", lambda self, *a, **k: seen.append(self))
    assert main(["--config", str(path), "--state-dir", str(tmp_path / "state")]) == 0
    assert seen and seen[0].session.config_problems == [
        f"{path}:3: units.master.usernme: unknown key (did you mean 'username'?)"]
    assert main(["--config", str(path), "check"]) == 2
    assert "usernme: unknown key" in capsys.readouterr().err


def test_no_daemon_and_a_broken_config_file_the_dialog_offers_the_files_text(sshd, state, tmp_path):
    """The daemon could not start on the broken file (systemd does not restart an exit 2): the engine here
    cannot either; the dialog offers the file's text, and once it is saved, Retry starts the engine."""
    from textual.widgets import TextArea

    async def body():
        path = tmp_path / "console.yaml"
        good = unit_yaml(sshd, {"master": []})
        broken = good.replace("    username:", "    usernme:")
        path.write_text(broken)
        authorize_units(sshd, state, ["master"])
        app = _console_app(path, state)
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, NoDaemonScreen))
            await pilot.press("s")
            await eventually(lambda: isinstance(app.screen, NoDaemonScreen) and app.screen.query("#edit"),
                             timeout=5, what="the failure, with the file to edit")
            assert "usernme" in str(app.screen.query_one(".dialog-text", Static).render())
            await pilot.press("e")
            await eventually(lambda: type(app.screen).__name__ == "ConfigTextScreen")
            title = str(app.screen.query_one("#text-title", Static).render())
            assert "no daemon" in title and "r starts the engine here" in title
            app.screen.query_one("#config-text", TextArea).text = good
            await pilot.press("ctrl+s")
            await eventually(lambda: isinstance(app.screen, NoDaemonScreen), what="back to the dialog")
            assert path.read_text() == good and (tmp_path / "console.yaml.bak").read_text() == broken
            await pilot.press("r")
            await eventually(lambda: isinstance(app.screen, MainScreen) and app.engine_here is not None
                             and unit_row(app, "master")[1] == "● up", timeout=5)
            assert not app.screen.query_one("#config-banner", Static).display
            await pilot.press("q")


# ---------------------------------------------------------------------- small and large terminals, and help

FINGERPRINT = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
LONG_STATUS = {"units": [
    {"name": "master", "state": "up", "since": "2026-11-22T10:00:00Z", "server": "203.0.113.7:2222",
     "username": "sop001", "last_error": None, "next_retry": None, "server_key": None, "forwards": [
         {"name": name, "remote": remote, "local": local, "state": "listening", "error": None, "open": 0,
          "total": 3, "bytes_in": 48_213, "bytes_out": 1_204_551}
         for name, remote, local in (("ssh", "*:10022", "127.0.0.1:22"), ("http", "*:10080", "127.0.0.1:80"),
                                     ("app", "*:10090", "127.0.0.1:8443"))]},
    {"name": "clone", "state": "host-key-unknown", "since": "2026-11-22T09:58:12Z", "server": "203.0.113.7:2222",
     "username": "sop002", "next_retry": "2026-11-22T10:05:00Z", "server_key": FINGERPRINT,
     "last_error": f"host key {FINGERPRINT} of 203.0.113.7:2222 is not trusted yet: verify it and run "
                   "`sop-console trust clone`", "forwards": []},
]}


def screen_text(app: SopConsole) -> str:
    """What the terminal shows, as plain text."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, force_terminal=True,
                      legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def visible_columns(table: DataTable) -> list[str]:
    """The columns shown whole inside the table's region (not cut at its right edge)."""
    shown, x = [], 0
    for column in table.ordered_columns:
        x += column.get_render_width(table)
        if x <= table.scrollable_content_region.width:
            shown.append(str(column.label))
    return shown


def long_state_app(state: StatePaths) -> SopConsole:
    from console.ui.backend import StaticBackend

    return SopConsole(state, backend=StaticBackend(LONG_STATUS), poll_log=False, watch_terminal=False)


def test_small_terminals_keep_both_units_the_local_column_and_the_whole_detail(state):
    """A long state (`? host-key-unknown`) at 60x20 and 80x24: both unit rows inside the units table's region,
    the next retry and the ports' local column whole, the detail wrapped (the fingerprint whole), the menu one
    line above the tables; at 200x50 the menu is the box on the left."""
    async def body(size):
        app = long_state_app(state)
        async with app.run_test(size=size) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "clone")[1])
            await pilot.pause()
            units = app.screen.query_one("#units", DataTable)
            assert units.region.bottom <= app.size.height
            assert units.scrollable_content_region.height - units.header_height >= units.row_count == 2, size
            assert "state" in visible_columns(units)
            ports = app.screen.query_one("#ports", DataTable)
            for column in ("unit", "fwd", "state", "local"):
                assert column in visible_columns(ports), (size, column, visible_columns(ports))
            assert app.focused is not None and app.focused.region.area > 0, (size, app.focused)  # not the hidden menu
            await pilot.press("slash", "escape")
            await pilot.pause()
            assert app.focused is not None and app.focused.region.area > 0, (size, app.focused)
            await pilot.press("u")  # the clone, with its fingerprint and error
            await eventually(lambda: app.session.selected_unit == "clone")
            await pilot.pause()
            text = screen_text(app)
            assert FINGERPRINT in text, text
            assert "`sop-console trust clone`" in " ".join(text.split()), text
            menu_box = app.screen.query_one("#menu-box")
            if size[0] < 90:
                assert not menu_box.display and app.screen.query_one("#menu-bar").display
                assert "next retry" in visible_columns(units) or size[0] < 70, visible_columns(units)
                # the unit the menu acts on: in the bar when it fits there, and always at the head of the detail line
                assert "unit: clone" in text or "clone: sop002@" in text
                bar = str(app.screen.query_one("#menu-bar").render())  # every key, its word readable, none cut off
                assert all(f"{item.key} {item.short[:3]}" in bar for item in MENU), bar
                assert all(cell_len(line) <= size[0] - 2 for line in bar.splitlines()), bar
                assert "7 Clients" in text or size[0] < 70
            else:
                assert menu_box.display and not app.screen.query_one("#menu-bar").display
                assert visible_columns(ports) == [str(c.label) for c in ports.ordered_columns]
                assert visible_columns(units) == ["unit", "state", "since", "next retry"]

    for size in ((60, 20), (80, 24), (200, 50)):
        run(body(size))


def test_clients_at_60x20_drop_columns_whole_and_keep_last_seen_and_leads_to(tmp_path):
    """Issue 11 item 4 on Clients: at 60x20 the tables drop their least important columns whole (the quota, the
    forwards' count, their counters) instead of cutting `last seen` and `leads to` at the edge; every client in
    view; what is left out is in the line under the tables. At 200x50 every column is shown."""
    from test_snapshots import _app

    from console.ui.screens.clients import CLIENT_COLUMNS, FORWARD_COLUMNS, ClientsScreen

    async def body(size):
        app = _app(tmp_path / f"{size[0]}", "sop")
        async with app.run_test(size=size) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen))
            await pilot.press("7")
            await eventually(lambda: isinstance(app.screen, ClientsScreen) and rows(app, "clients"))
            await pilot.pause(0.1)
            clients = app.screen.query_one("#clients", DataTable)
            forwards = app.screen.query_one("#client-forwards", DataTable)
            for table in (clients, forwards):  # nothing cut at the edge: every column shown is whole
                assert visible_columns(table) == [str(c.label) for c in table.ordered_columns], (size, table.id)
                assert table.virtual_size.width <= table.scrollable_content_region.width, (size, table.id)
            assert clients.scrollable_content_region.height - clients.header_height >= clients.row_count == 3
            text = screen_text(app)
            if size[0] < 70:
                assert visible_columns(clients) == ["client", "state", "ports", "online", "last seen"]
                assert visible_columns(forwards) == ["port", "name", "open", "leads to"]
                assert "never" in text and "webdav+http://webdav.example.com:80/" in text, text
                assert "quota 20, ports 2200-2219" in text, text
            else:
                assert visible_columns(clients) == [c.label for c in CLIENT_COLUMNS]
                assert visible_columns(forwards) == [c.label for c in FORWARD_COLUMNS]

    for size in ((60, 20), (200, 50)):
        run(body(size))


def test_help_stands_its_groups_side_by_side_from_120_columns(state):
    """At 200x50 the groups of keys are in two columns, in order (the main screen's first, top left), and the whole
    page fits without scrolling; under 120 columns, one column; a resize lays the page out again."""
    async def body():
        app = long_state_app(state)
        async with app.run_test(size=(200, 50)) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "clone")[1])
            await pilot.press("question_mark")
            await eventually(lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.pause()
            columns = list(app.screen.query(".help-column"))
            assert len(columns) == 2 and columns[0].region.y == columns[1].region.y
            assert columns[0].region.right <= columns[1].region.x
            titles = [str(group.render()) for column in columns for group in column.query(".help-group")]
            assert titles[0].startswith("Main screen") and titles[-1] == "Textual's own keys", titles
            page = app.screen.query_one("#help")
            assert page.max_scroll_y == 0, "the page scrolls at 200x50"
            assert "Quit the app" in screen_text(app)  # the last row of the last group, on screen
            await pilot.resize_terminal(100, 30)
            await eventually(lambda: len(app.screen.query(".help-column")) == 1)
            await pilot.resize_terminal(240, 50)
            await eventually(lambda: len(app.screen.query(".help-column")) == 3)
            await pilot.press("escape")
            await eventually(lambda: isinstance(app.screen, MainScreen))
    run(body())


def test_help_is_a_full_screen_page_of_the_apps_keys_that_esc_and_question_mark_close(state):
    """? opens a screen of its own: the keys of the screen it came from first (the menu's 1-7 with what they do),
    then the others grouped by screen; esc and ? close it, from the main screen and from the log view."""
    async def body():
        app = long_state_app(state)
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen) and unit_row(app, "clone")[1])
            await pilot.press("question_mark")
            await eventually(lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.pause()
            assert app.screen.region.size == app.size
            lines = screen_text(app).splitlines()
            for item in ("1", "2", "3", "4", "5", "6", "7", "9"):
                assert any(line.lstrip().startswith(f"{item} ") for line in lines[:20]), (item, lines)
            text = "\n".join(lines)
            assert "Install ssh key" in text and "View log" in text
            await pilot.press("escape")
            await eventually(lambda: isinstance(app.screen, MainScreen))
            await pilot.press("f1")
            await eventually(lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.press("question_mark")
            await eventually(lambda: isinstance(app.screen, MainScreen))

            await pilot.press("4")
            await eventually(lambda: isinstance(app.screen, LogScreen))
            await pilot.press("question_mark")
            await eventually(lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.pause()
            first = screen_text(app).split("Main screen")[0]
            assert "Follow" in first or "follow" in first, first  # the log view's keys come first from there
            await pilot.press("escape")
            await eventually(lambda: isinstance(app.screen, LogScreen))
    run(body())
