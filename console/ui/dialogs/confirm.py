"""Yes/no questions: ConfirmScreen (default No), and TrustScreen for a server's host key."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; No is the default (focused, and what esc answers)."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "No", id="confirm.no")]

    def __init__(self, question: str, detail: str = "", *, yes: str = "Yes", no: str = "No",
                 wide: bool = False) -> None:
        super().__init__()
        self.question, self.detail = question, detail
        self.yes_label, self.no_label, self.wide = yes, no, wide

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide" if self.wide else "dialog"):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-text")
            with Horizontal(classes="buttons"):
                yield Button(self.no_label, id="no", variant="primary")
                yield Button(self.yes_label, id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TrustScreen(ConfirmScreen):
    """Trust host key: the fingerprint the server presented, recorded only on confirmation (default Cancel)."""

    def __init__(self, unit: str, server: str, fingerprint: str | None, mismatch: bool) -> None:
        self.unit, self.server, self.fingerprint, self.mismatch = unit, server, fingerprint, mismatch
        if fingerprint:
            text = f"The server presents\n  {fingerprint}\nCompare it with the server's own " \
                   "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) before you trust it."
            if mismatch:
                text += "\nA changed key can mean an attack. Replace the recorded key only if you know why."
        else:
            text = "The unit has not been shown an untrusted key. Trusting fetches the key the server shows now."
        title = "HOST KEY CHANGED" if mismatch else "Trust host key"
        super().__init__(f"{title}: {unit} -> {server}", text, yes="Replace key" if mismatch else "Trust",
                         no="Cancel", wide=True)
