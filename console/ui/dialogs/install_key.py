"""Install ssh key: the unit's public key and fingerprint, a masked password, progress and the outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.core.errors import ConsoleError

if TYPE_CHECKING:
    from console.ui.session import KeyOffer, Session


class InstallKeyScreen(ModalScreen[None]):
    """The same path as `sop-console key install` (Session.install_key); the password is never kept."""

    BINDINGS = [Binding("escape", "close", "Close", id="install.close")]

    def __init__(self, session: Session, offer: KeyOffer) -> None:
        super().__init__()
        self.session = session
        self.offer = offer

    def compose(self) -> ComposeResult:
        offer = self.offer
        with Vertical(classes="dialog wide"):
            yield Label(f"Install ssh key: {offer.unit} -> {offer.target}", classes="dialog-title")
            yield Static(f"{offer.fingerprint}\n{offer.key_line}", id="key-text", classes="dialog-text")
            yield Input(placeholder="password on the server (not shown)", password=True, id="password")
            yield Static("Enter installs; if the key already works, no password is needed.", id="install-state")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close")
                yield Button("Install", id="install", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#password", Input).focus()

    @on(Input.Submitted, "#password")
    @on(Button.Pressed, "#install")
    def _install(self) -> None:
        box = self.query_one("#password", Input)
        password = box.value
        box.value = ""  # the secret lives no longer than the call that needs it
        self.query_one("#install-state", Static).update("◌ installing ...")
        self.query_one("#install", Button).disabled = True
        self._run_install(password)

    @work(exclusive=True, group="install")
    async def _run_install(self, password: str) -> None:
        try:
            outcome, warning = await self.session.install_key(self.offer.unit, password)
        except ConsoleError as exc:
            text = f"✖ failed: {exc.message}"
        else:
            text = f"● {outcome}"
            if warning:
                self.notify(warning, severity="warning")
        finally:
            password = ""
        self.query_one("#install-state", Static).update(text)
        self.query_one("#install", Button).disabled = False

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
