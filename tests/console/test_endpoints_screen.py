"""8 Endpoints, driven by keys at 80x24 against a real daemon (in-process) and, where a login is involved, real
OpenSSH servers: the list live from the daemon's events, delete (refused while used, done for unused runtime ones,
several marked at once), associate / unassociate (a refusal said in the dialog), check, set-up auth by password,
by key and by script, the sshd check and its Fix."""

from __future__ import annotations

import os
import subprocess

import pytest
from support import authorize_units, config_of, eventually, me, run
from test_console import app_for, rows
from textual.widgets import Button, Input, SelectionList, Static

from console.control.client import ControlClient
from console.core.keys import unit_public_key
from console.daemon import Daemon
from console.ui.dialogs.ask import AskScreen
from console.ui.dialogs.confirm import ConfirmScreen
from console.ui.screens.main import MainScreen

SIZE = (80, 24)
TUNNEL = "tunnel: {keepalive_interval: 1, keepalive_count_max: 2, retry_min: 0.05, retry_max: 1, connect_timeout: 3}\n"


def endpoint_yaml(name: str, port: int, user: str, host_key: str | None = None, extra: str = "") -> str:
    pin = f", host_key: '{host_key}'" if host_key else ""
    return f"  {name}: {{host: 127.0.0.1, port: {port}, username: {user}{pin}{extra}}}\n"


def one_endpoint_yaml(name: str, port: int, user: str, host_key: str) -> str:
    """A config with one endpoint `name` (pinned) and unit master on it, no forwards."""
    return (f"server: {{host: 127.0.0.1, port: {port}, host_key: '{host_key}'}}\nendpoints:\n"
            + endpoint_yaml(name, port, user, host_key) + TUNNEL
            + f"units:\n  master: {{username: {user}, endpoint: {name}, forwards: []}}\n")


async def start(state, text: str) -> Daemon:
    config = config_of(text)
    daemon = Daemon(config, state, None, echo_log=False)
    await daemon.start()
    return daemon


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def open_endpoints(app, pilot) -> None:
    from console.ui.screens.endpoints import EndpointsScreen

    await eventually(lambda: isinstance(app.screen, MainScreen))
    await pilot.press("8")
    await eventually(lambda: isinstance(app.screen, EndpointsScreen) and rows(app, "endpoints"))


def row(app, name: str) -> list[str]:
    """The endpoint's row by its name (the columns a FittedTable shows at 80: mark, state, name, ...)."""
    return next((r for r in rows(app, "endpoints") if r[2] == name), [])


async def open_setup_auth(app, pilot, name: str) -> None:
    """Endpoints, the cursor on `name`, then `s`: its set-up dialog."""
    from console.ui.dialogs.endpoint_auth import SetupAuthScreen

    await open_endpoints(app, pilot)
    await highlight(app, pilot, name)
    await pilot.press("s")
    await eventually(lambda: isinstance(app.screen, SetupAuthScreen))


async def highlight(app, pilot, name: str) -> None:
    """Move the cursor to `name`'s row with the arrows, as an operator does."""
    names = [r[2] for r in rows(app, "endpoints")]
    table = app.screen.query_one("#endpoints")
    while names[table.cursor_row] != name:
        await pilot.press("down" if names.index(name) > table.cursor_row else "up")
    await eventually(lambda: shown(app, "#endpoint-detail").startswith(f"{name} "))


# ---------------------------------------------------------------------------------------------- no login needed

def test_the_list_follows_the_daemon_and_delete_is_refused_while_used(state):
    """A config endpoint used by a unit, two runtime ones and one added while the screen is open (it appears from
    the daemon's event). Delete asks first (No by default); a used one is refused with who uses it, said in place;
    an unused runtime one goes; two marked with space go at once."""
    text = ("server: {host: 127.0.0.1, port: 9}\nendpoints:\n" + endpoint_yaml("lab", 9, me(), extra=", comment: rack")
            + TUNNEL + f"units:\n  master: {{username: {me()}, endpoint: lab, forwards: []}}\n")

    async def body():
        daemon = await start(state, text)
        try:
            for name in ("spare", "spare2"):
                daemon.engine.endpoints.add(name, "192.0.2.10", 2200, "sop", who="test")
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await open_endpoints(app, pilot)
                assert [r[2] for r in rows(app, "endpoints")] == ["default", "lab", "spare", "spare2"]
                assert row(app, "lab")[3] == "127.0.0.1:9"
                # as the daemon has it: unchecked, or unavailable once its own check (at start) has run
                await eventually(lambda: row(app, "lab")[1] == daemon.engine.endpoints.status("lab").state.label)
                await highlight(app, pilot, "lab")
                detail = shown(app, "#endpoint-detail")
                assert "used by: units master" in detail and "comment: rack" in detail

                async with ControlClient(state.control_socket) as cli:  # as `sop-console endpoints add` does
                    await cli.request("endpoints.add", name="late", host="192.0.2.11")
                await eventually(lambda: row(app, "late"), what="the endpoint added elsewhere, from the event")

                await pilot.press("d")  # lab: asks first, No is the default
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press("enter")
                await eventually(lambda: not isinstance(app.screen, ConfirmScreen))
                await pilot.pause(0.2)
                assert not shown(app, "#endpoints-said") and "lab" in daemon.engine.endpoints.endpoints

                await pilot.press("d")  # refused: a config endpoint, used by a unit; said in place
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press("y")
                await eventually(lambda: "nothing removed" in shown(app, "#endpoints-said"))
                said = " ".join(shown(app, "#endpoints-said").split())
                assert said.startswith("✖ nothing removed: lab is in") and "used by units master" in said, said
                assert row(app, "lab") and "lab" in daemon.engine.endpoints.endpoints

                await highlight(app, pilot, "late")
                await pilot.press("delete")
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press("y")
                await eventually(lambda: not row(app, "late"))
                assert shown(app, "#endpoints-said") == "● removed late"
                assert "late" not in daemon.engine.endpoints.endpoints

                await highlight(app, pilot, "spare")
                await pilot.press("space", "space")  # marks spare, then spare2 (space moves down)
                await eventually(lambda: row(app, "spare")[0] == row(app, "spare2")[0] == "✓")
                assert "2 marked" in shown(app, "#endpoints-title")
                await pilot.press("d")
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                assert "Remove 2 endpoints?" in screen_text(app)
                await pilot.press("y")
                await eventually(lambda: [r[2] for r in rows(app, "endpoints")] == ["default", "lab"])
                assert shown(app, "#endpoints-said") == "● removed spare, spare2"
                assert "marked" not in shown(app, "#endpoints-title")
        finally:
            await daemon.close()
    run(body())


def test_associate_then_unassociate_several_marked_a_refusal_said_in_place(state):
    from console.ui.dialogs.endpoint_scope import AssociateScreen, UnassociateScreen

    text = ("server: {host: 127.0.0.1, port: 9}\nvpcs: {prod: [10.0.0.0/16], lab-net: [10.8.0.0/16]}\n"
            "endpoints:\n" + endpoint_yaml("lab", 9, me(), extra=", subnet: 10.1.0.0/24, scope: {subnets: "
                                           "[10.2.0.0/24]}") + TUNNEL + "units: {}\n")

    async def body():
        daemon = await start(state, text)
        try:
            app = app_for(state, config=config_of(text))
            async with app.run_test(size=SIZE) as pilot:
                await open_endpoints(app, pilot)
                await highlight(app, pilot, "lab")
                await pilot.press("a")
                await eventually(lambda: isinstance(app.screen, AssociateScreen))
                assert "VPCs in the config: lab-net, prod" in screen_text(app)
                await pilot.press(*"nope", "enter")  # not a VPC of the config: said in the dialog, which stays
                await eventually(lambda: "no VPC named 'nope'" in shown(app, "#scope-error"))
                assert isinstance(app.screen, AssociateScreen)
                app.screen.query_one("#scope-input", Input).value = ""
                await pilot.press(*"10.9.0.0/24, prod 10.4.0.0/24", "enter")
                await eventually(lambda: not isinstance(app.screen, AssociateScreen))
                assert shown(app, "#endpoints-said") == \
                    "● lab: associated subnet 10.9.0.0/24, subnet 10.4.0.0/24, VPC prod"
                await eventually(lambda: "subnet 10.9.0.0/24 (runtime)" in shown(app, "#endpoint-detail"))
                assert daemon.engine.endpoints.endpoint("lab").added_subnets == ("10.9.0.0/24", "10.4.0.0/24")

                await pilot.press("u")
                await eventually(lambda: isinstance(app.screen, UnassociateScreen))
                entries = app.screen.query_one("#scope-entries", SelectionList)
                labels = [str(entries.get_option_at_index(i).prompt) for i in range(entries.option_count)]
                assert labels == ["subnet 10.1.0.0/24 (its own subnet)", "subnet 10.2.0.0/24 (in the config)",
                                  "subnet 10.9.0.0/24 (associated at run time)",
                                  "subnet 10.4.0.0/24 (associated at run time)", "VPC prod (associated at run time)"]
                await pilot.press("down", "space", "down", "space", "down", "down", "space")  # config, 10.9, prod
                await eventually(lambda: len(entries.selected) == 3)
                await pilot.pause()
                marks = screen_text(app)  # a mark is a glyph, not colour alone (NO_COLOR)
                assert "▐✓▌ subnet 10.2.0.0/24" in marks and "▐ ▌ subnet 10.1.0.0/24" in marks, marks
                await pilot.press("u")  # the config's entry is refused: nothing changes, said in place
                await eventually(lambda: "nothing unassociated" in shown(app, "#scope-error"))
                assert "subnet 10.2.0.0/24 of lab is set in" in " ".join(shown(app, "#scope-error").split())
                assert daemon.engine.endpoints.endpoint("lab").added_vpcs == ("prod",)
                await pilot.press("up", "up", "up", "space")  # unmark the config's entry
                await eventually(lambda: len(entries.selected) == 2)
                await pilot.press("u")
                await eventually(lambda: not isinstance(app.screen, UnassociateScreen))
                assert shown(app, "#endpoints-said") == "● lab: unassociated subnet 10.9.0.0/24, VPC prod"
                endpoint = daemon.engine.endpoints.endpoint("lab")
                assert (endpoint.added_subnets, endpoint.added_vpcs) == (("10.4.0.0/24",), ())
                await eventually(lambda: "10.9.0.0/24" not in shown(app, "#endpoint-detail"))
        finally:
            await daemon.close()
    run(body())


def test_the_list_follows_a_restarted_daemon(state):
    """The daemon goes (the bar says so, the list stays as it was); one comes back with an endpoint added
    meanwhile: the list shows it with no key pressed, and a remove goes to the new daemon."""
    text = "server: {host: 127.0.0.1, port: 9}\n" + TUNNEL + "units: {}\n"

    async def body():
        running = [await start(state, text)]
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await open_endpoints(app, pilot)
                assert [r[2] for r in rows(app, "endpoints")] == ["default"]
                await running.pop().close()
                bar = app.screen.query_one("#daemon-bar", Static)
                await eventually(lambda: bar.display, timeout=2, what="the daemon-gone bar")
                assert [r[2] for r in rows(app, "endpoints")] == ["default"]  # the last list known

                from console.core.endpoint_table import EndpointTable
                from console.core.store import Store

                EndpointTable(config_of(text), Store(state.database)).add("meanwhile", "192.0.2.7", who="test")
                running.append(await start(state, text))
                await eventually(lambda: not bar.display and row(app, "meanwhile"), timeout=3,
                                 what="the new daemon's list, with no key pressed")
                await highlight(app, pilot, "meanwhile")
                await pilot.press("d")
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press("y")
                await eventually(lambda: not row(app, "meanwhile"))
                assert "meanwhile" not in running[0].engine.endpoints.endpoints
        finally:
            for daemon in running:
                await daemon.close()
    run(body())


# ---------------------------------------------------------------------------------------------- with a login

def test_check_the_marked_endpoints_one_available_one_unavailable_with_its_hint(sshd, state):
    from sshd import free_port

    closed = free_port()
    text = (f"server: {{host: 127.0.0.1, port: {sshd.port}, host_key: '{sshd.host_public_key}'}}\nendpoints:\n"
            + endpoint_yaml("lab", sshd.port, me(), sshd.host_public_key) + endpoint_yaml("gone", closed, me())
            + TUNNEL + f"units:\n  master: {{username: {me()}, endpoint: lab, forwards: []}}\n"
            f"  clone: {{username: {me()}, endpoint: gone, forwards: []}}\n")

    async def body():
        daemon = await start(state, text)
        authorize_units(sshd, state, ["master"])
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await open_endpoints(app, pilot)
                await highlight(app, pilot, "lab")
                await pilot.press("space", "space")  # lab and gone
                await pilot.press("c")
                states = lambda: (row(app, "lab")[1], row(app, "gone")[1])  # noqa: E731
                await eventually(lambda: states() == ("● available", "✖ unavailable"), timeout=10)
                said = shown(app, "#endpoints-said")
                assert said.startswith("● lab available"), said
                assert f"✖ gone unavailable: connection refused by 127.0.0.1:{closed}" in said, said
                assert row(app, "lab")[0] == row(app, "gone")[0] == ""  # the marks go once checked
                await highlight(app, pilot, "gone")
                detail = " ".join(shown(app, "#endpoint-detail").split())
                assert "✖ unavailable (network): connection refused" in detail
                assert "hint: nothing listens there: start sshd, or check the endpoint's port" in detail
        finally:
            await daemon.close()
    run(body())


def test_set_up_auth_by_password_ends_available_in_the_dialog(password_sshd, local_user, state):
    user, password, home = local_user
    key = password_sshd.host_public_key
    text = one_endpoint_yaml("pw", password_sshd.port, user, key)

    async def body():
        daemon = await start(state, text)
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await open_setup_auth(app, pilot, "pw")
                await pilot.click("#method-password")
                await eventually(lambda: app.screen.query_one("#password-row").display)
                assert not app.screen.query_one("#identity-row").display
                await pilot.pause()
                chosen = screen_text(app)  # the chosen method is a glyph, not colour alone
                assert "▐●▌ password:" in chosen and "▐ ▌ key:" in chosen, chosen
                box = app.screen.query_one("#password", Input)
                assert box.password  # masked
                box.focus()
                await pilot.press(*"not-the-password", "enter")
                await eventually(lambda: "✖ failed" in shown(app, "#setup-state"), timeout=10)
                assert f"refused the password for {user}" in " ".join(shown(app, "#setup-state").split())
                assert box.value == ""
                await pilot.press(*password, "enter")
                await eventually(lambda: "now: ● available" in shown(app, "#setup-state"), timeout=10)
                said = " ".join(shown(app, "#setup-state").split())
                assert said.startswith("● installed the key of unit master") and box.value == ""
                assert shown(app, "#setup-status").startswith("● available")
                assert (home / ".ssh" / "authorized_keys").read_text().count("ssh-ed25519") == 1
                await pilot.press("escape")
                await eventually(lambda: row(app, "pw")[1] == "● available")
        finally:
            await daemon.close()
    run(body())


def test_set_up_auth_by_key_logs_in_as_root_with_the_operators_key(sshd, local_user, state, tmp_path):
    """The operator's own key, authorized for root: it logs in and installs our key for the endpoint's user; a key
    file that does not exist is said in the dialog."""
    user, _, home = local_user
    identity = tmp_path / "operator" / "id_ed25519"
    identity.parent.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    sshd.authorize("root", identity.with_suffix(".pub").read_text())
    key = sshd.host_public_key
    text = one_endpoint_yaml("edge", sshd.port, user, key)

    async def body():
        daemon = await start(state, text)
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await open_setup_auth(app, pilot, "edge")
                await pilot.click("#method-key")
                await eventually(lambda: app.screen.query_one("#identity-row").display)
                assert not app.screen.query_one("#password-row").display
                app.screen.query_one("#identity", Input).value = str(tmp_path / "no-such-key")
                app.screen.query_one("#login-user", Input).value = "root"
                await pilot.click("#setup")
                await eventually(lambda: "✖ failed" in shown(app, "#setup-state"), timeout=10)
                assert "no-such-key" in shown(app, "#setup-state")
                app.screen.query_one("#identity", Input).value = str(identity)
                # a Button ignores a click while it still shows the last one (Textual's 0.2 s "-active")
                await eventually(lambda: not app.screen.query_one("#setup").has_class("-active"))
                await pilot.click("#setup")
                await eventually(lambda: "now: ● available" in shown(app, "#setup-state"), timeout=10)
                said = " ".join(shown(app, "#setup-state").split())
                assert said.startswith("● installed the key of unit master") and "logged in as root" in said
                assert (home / ".ssh" / "authorized_keys").read_text().count("ssh-ed25519") == 1
        finally:
            await daemon.close()
    run(body())


def test_set_up_auth_by_script_shown_to_copy_and_save_then_checked(sshd, local_user, state, tmp_path):
    """The script on a page of its own: `c` copies it whole (OSC 52), `w` writes it 0600. Its key part run with
    sh as root (the sshd part would change this machine's own sshd: the sshd check's tests run that against a test
    sshd), then Check in the dialog says available."""
    from console.ui.dialogs.endpoint_auth import ScriptScreen, SetupAuthScreen

    user, _, home = local_user
    key = sshd.host_public_key
    text = one_endpoint_yaml("edge", sshd.port, user, key)

    async def body():
        daemon = await start(state, text)
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await open_setup_auth(app, pilot, "edge")
                await pilot.click("#method-script")
                await eventually(lambda: str(app.screen.query_one("#setup", Button).label) == "Show script")
                await pilot.click("#setup")
                await eventually(lambda: isinstance(app.screen, ScriptScreen), timeout=10)
                script = app.screen.text
                assert script.startswith("#!/bin/sh\n") and user in script
                assert unit_public_key(state, "master").line.split()[1] in script
                await pilot.press("c")
                assert app.clipboard == script
                saved = tmp_path / "setup.sh"
                await pilot.press("w")
                await eventually(lambda: isinstance(app.screen, AskScreen))
                app.screen.query_one("#answer", Input).value = str(saved)
                await pilot.press("enter")
                await eventually(lambda: isinstance(app.screen, ScriptScreen))
                assert saved.read_text() == script and os.stat(saved).st_mode & 0o777 == 0o600
                await pilot.press("escape")
                await eventually(lambda: isinstance(app.screen, SetupAuthScreen))

                key_part = saved.read_text().split("# 2. the sshd settings")[0] + 'echo "sop-console: done"\n'
                done = subprocess.run(["sh", "-s"], input=key_part, capture_output=True, text=True, timeout=30)
                assert done.returncode == 0, done.stderr
                await pilot.click("#check")
                await eventually(lambda: "now: ● available" in shown(app, "#setup-state"), timeout=10)
                assert (home / ".ssh" / "authorized_keys").read_text().count("ssh-ed25519") == 1
        finally:
            await daemon.close()
    run(body())


def test_sshd_check_lines_and_fix_with_confirmation(tmp_path, state):
    """A test sshd with `GatewayPorts no` and `ClientAliveInterval 0`, a unit whose forward binds beyond loopback:
    one line each, with the line to write; Fix asks first (No by default: nothing changes), then writes, reloads,
    and the dialog shows before and after; the reloaded sshd runs the new value."""
    from sshd import Sshd, find_sshd

    from console.ui.dialogs.sshd_check import SshdCheckScreen

    if find_sshd() is None or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the sshd check's Fix needs sshd and root in CI")
        pytest.skip("needs sshd and root (the fix reloads a real sshd)")
    sshd = Sshd(tmp_path / "sshd").start()
    key = sshd.host_public_key
    text = (f"server: {{host: 127.0.0.1, port: {sshd.port}, host_key: '{key}'}}\nendpoints:\n"
            + endpoint_yaml("gw", sshd.port, "root", key) + TUNNEL + "units:\n  master:\n    username: root\n"
            "    endpoint: gw\n"
            "    forwards: [{name: web, remote_port: 0, remote_bind: '0.0.0.0', local: '127.0.0.1:9'}]\n")

    async def body():
        daemon = await start(state, text)
        authorize_units(sshd, state, ["master"], user="root")
        try:
            app = app_for(state)
            async with app.run_test(size=SIZE) as pilot:
                await open_endpoints(app, pilot)
                await highlight(app, pilot, "gw")
                await pilot.press("x")
                await eventually(lambda: isinstance(app.screen, SshdCheckScreen))
                await eventually(lambda: "GatewayPorts" in shown(app, "#sshd-text"), timeout=10)
                lines = shown(app, "#sshd-text")
                assert any(line.startswith("✖ GatewayPorts") and line.rstrip().endswith("needs-change")
                           for line in lines.splitlines()), lines
                assert "write: GatewayPorts clientspecified" in lines and "Fix (f) writes these lines" in lines
                assert not app.screen.query_one("#fix", Button).disabled
                await pilot.press("f")
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press("enter")  # No
                await eventually(lambda: isinstance(app.screen, SshdCheckScreen))
                await pilot.pause(0.3)
                assert sshd.effective()["gatewayports"] == "no"
                await pilot.press("f")
                await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press("y")
                await eventually(lambda: "fix: " in shown(app, "#sshd-text"), timeout=20)
                after = shown(app, "#sshd-text")
                assert "GatewayPorts: no -> clientspecified (ok)" in after, after
                assert sshd.effective()["gatewayports"] == "clientspecified"
                assert app.screen.query_one("#fix", Button).disabled  # nothing left to fix
        finally:
            await daemon.close()
            sshd.stop()
    run(body())
