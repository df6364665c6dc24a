"""Set up auth for an endpoint (the seed's three ways): by key (a key of the operator's that logs in as root or a
user with password-less sudo), by password (once; it is not kept), or by script (shown ready to copy, run on the
server as root). Each ends with the endpoint's new status in the dialog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioSet, Static

from console.core.errors import ConsoleError
from console.core.states import EndpointReason
from console.ui.dialogs.ask import CopyPage
from console.ui.widgets.marks import Choice, Tick

if TYPE_CHECKING:
    from console.core.status import EndpointCheck, EndpointStatus
    from console.ui.session import Session

METHODS = (  # the ways, in the order the CLI offers them (console/tunnel/auth_setup.METHODS)
    ("key", "key: your own key logs in (root, or a user with password-less sudo)"),
    ("password", "password: log in once with a password (used for that login only)"),
    ("script", "script: a script to run on the server as root, shown to copy"),
)
WITH_PASSWORD = {"password", "keyboard-interactive"}  # what a server offers that set-up by password can use


class ScriptScreen(CopyPage):
    """The set-up script, the whole screen and nothing beside its lines: `c` copies it (OSC 52), `w` writes it
    to a new file (0600); the arrows scroll it."""

    BINDINGS = [
        Binding("c", "copy", "Copy (OSC 52)", id="script.copy"),
        Binding("w", "save", "Write to file", id="script.save"),
        Binding("escape,enter", "close", "Close", id="script.close"),
    ]
    INTRO = ("Run it on the server as root (sh FILE): it authorizes the key and sets sshd up, with a backup and "
             "sshd -t before it reloads. c copies it (OSC 52), w writes it to a new file; ↑ ↓ scroll.")
    SAVE_AS = "the script to a new file"
    SAVE_EXAMPLE = "e.g. ~/sop-setup.sh"
    DONE = "Done: check it"


class SetupAuthScreen(ModalScreen[None]):
    """One endpoint's set-up: the method, what it needs (identity file, login user, password), a host key to
    trust when the last check found it unknown, and the outcome with the new status. Nothing typed is kept: the
    password is cleared from its box as it is sent."""

    BINDINGS = [Binding("escape", "close", "Close", id="setup.close")]

    def __init__(self, session: Session, endpoint: EndpointStatus) -> None:
        super().__init__()
        self.session = session
        self.endpoint = endpoint
        check = endpoint.last_check
        offered = set(check.methods) if check is not None else set()
        self.method = "password" if offered & WITH_PASSWORD else "key"
        self.unknown_key = check.fingerprint if check is not None and check.fingerprint and \
            check.reason == EndpointReason.HOST_KEY_UNKNOWN else None

    def compose(self) -> ComposeResult:
        e = self.endpoint
        # the body scrolls when a long status or outcome does not fit; the buttons stay (docked at the bottom)
        with VerticalScroll(classes="dialog wide tall", id="setup-dialog"):
            yield Label(f"Set up auth: {e.name} ({e.username}@{e.address})", classes="dialog-title")
            yield Static(Content(status_text(e.last_check)), id="setup-status")
            with RadioSet(id="method", compact=True):
                for method, text in METHODS:
                    yield Choice(text, value=method == self.method, id=f"method-{method}", compact=True)
            with Horizontal(classes="form-row", id="identity-row"):
                yield Label("identity file", classes="setup-label")
                yield Input(placeholder="your private key, e.g. ~/.ssh/id_ed25519", id="identity", compact=True)
            with Horizontal(classes="form-row", id="login-row"):
                yield Label("log in as", classes="setup-label")
                yield Input(placeholder=f"{e.username} (or root, or a user with password-less sudo)",
                            id="login-user", compact=True)
            with Horizontal(classes="form-row", id="password-row"):
                yield Label("password", classes="setup-label")
                yield Input(placeholder="of the login user (not shown, not kept)", password=True, id="password",
                            compact=True)
            if self.unknown_key:
                yield Tick(f"trust its host key {self.unknown_key}", id="trust", compact=True)
            yield Static("", id="setup-state")
            with Horizontal(classes="buttons docked"):
                yield Button("Close", id="close")
                yield Button("Check", id="check")
                yield Button("Set up", id="setup", variant="primary")

    def on_mount(self) -> None:
        self._show_method()
        self.query_one("#method", RadioSet).focus()

    @on(RadioSet.Changed, "#method")
    def _method_changed(self, event: RadioSet.Changed) -> None:
        self.method = (event.pressed.id or "method-key").removeprefix("method-")
        self._show_method()

    def _show_method(self) -> None:
        """The fields the chosen method needs, and what Set up does with it."""
        self.query_one("#identity-row").display = self.method == "key"
        self.query_one("#login-row").display = self.method in ("key", "password")
        self.query_one("#password-row").display = self.method == "password"
        self.query_one("#setup", Button).label = "Show script" if self.method == "script" else "Set up"
        says = {"key": "Enter sets up: our key installed for {user} by your login.",
                "password": "Enter sets up: our key installed for {user}; nothing asked if it works already.",
                "script": "Show script, run it on the server as root, then Check."}
        self.say(says[self.method].format(user=self.endpoint.username))

    def say(self, text: str) -> None:
        self.query_one("#setup-state", Static).update(Content(text))

    @on(Input.Submitted)
    @on(Button.Pressed, "#setup")
    def _setup(self) -> None:
        if self.method == "script":
            self._show_script()
            return
        box = self.query_one("#password", Input)
        password = box.value if self.method == "password" else None
        box.value = ""  # the secret lives no longer than the call that needs it
        identity = self.query_one("#identity", Input).value.strip() if self.method == "key" else None
        if self.method == "key" and not identity:
            self.say("✖ name your private key file (identity file): it logs in to install ours")
            return
        self._busy(True)
        self.say("◌ setting up …")
        self._run_setup(self.method, password, identity, self.query_one("#login-user", Input).value.strip() or None,
                        self._trusted())

    def _trusted(self) -> str | None:
        trust = self.query(Tick).first() if self.unknown_key else None
        return self.unknown_key if trust is not None and trust.value else None

    @work(exclusive=True, group="setup")
    async def _run_setup(self, method: str, password: str | None, identity: str | None, login_user: str | None,
                         trust: str | None) -> None:
        try:
            outcome, check = await self.session.endpoint_setup_auth(
                self.endpoint.name, method, password=password, identity=identity, login_user=login_user,
                trust_fingerprint=trust)
        except ConsoleError as exc:
            self.say(f"✖ failed: {exc.message}")
        else:
            self._checked(check, f"● {outcome}")
        finally:
            password = None
            self._busy(False)

    @work(exclusive=True, group="setup")
    async def _show_script(self) -> None:
        self._busy(True)
        try:
            script = await self.session.endpoint_setup_script(self.endpoint.name)
        except ConsoleError as exc:
            self.say(f"✖ {exc.message}")
            return
        finally:
            self._busy(False)
        await self.app.push_screen_wait(ScriptScreen(f"Set-up script for {self.endpoint.name}", script))
        self.say("Ran it on the server as root? Check says whether it worked.")
        self.query_one("#check", Button).focus()

    @on(Button.Pressed, "#check")
    def _check_pressed(self) -> None:
        self._busy(True)
        self.say(f"◌ checking {self.endpoint.name} …")
        self._run_check()

    @work(exclusive=True, group="setup")
    async def _run_check(self) -> None:
        try:
            checks = await self.session.endpoints_check([self.endpoint.name])
        except ConsoleError as exc:
            self.say(f"✖ {exc.message}")
        else:
            self._checked(checks[0] if checks else None, "")
        finally:
            self._busy(False)

    def _checked(self, check: EndpointCheck | None, outcome: str) -> None:
        """The outcome, and the status the check after it found (in full in the dialog's status line)."""
        now = "not checked"
        if check is not None:
            self.endpoint.last_check, self.endpoint.state = check, check.state
            self.query_one("#setup-status", Static).update(Content(status_text(check)))
            now = check.state.label + ("" if check.available else f" ({check.reason}): see above")
        self.say("\n".join(part for part in (outcome, f"now: {now}") if part))

    def _busy(self, busy: bool) -> None:
        for button in self.query("#setup, #check").results(Button):
            button.disabled = busy

    @on(Button.Pressed, "#close")
    def _close_pressed(self) -> None:
        self.action_close()

    def action_close(self) -> None:
        self.query_one("#password", Input).value = ""
        self.dismiss(None)


def status_text(check: EndpointCheck | None) -> str:
    """The endpoint's status as its last check found it, with why and the hint when unavailable."""
    if check is None:
        return "· unchecked: Check tells whether units can log in"
    if check.available:
        return f"{check.state.label}: {check.username} logs in at {check.address}" \
               + (f" with {check.unit}'s key" if check.unit else "")
    return f"{check.state.label} ({check.reason}): {check.message}" + (f"\nhint: {check.hint}" if check.hint else "")
