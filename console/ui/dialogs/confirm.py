"""Yes/no questions: ConfirmScreen (default No), and TrustScreen for a server's host key."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; No is the default (focused, and what esc answers). `yes=None`: nothing to ask, only a
    `no` button to close it (y answers No too)."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "No", id="confirm.no")]

    def __init__(self, question: str, detail: str = "", *, yes: str | None = "Yes", no: str = "No",
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
                if self.yes_label is not None:
                    yield Button(self.yes_label, id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes and self.yes_label is not None)


def compare_advice(offer: dict) -> str:
    """Where the operator reads the server's own fingerprint: our hub says it, an OpenSSH server's key file does."""
    if offer.get("hub"):
        return "On the hub, `sop-console hub key` prints its fingerprint."
    software = str(offer.get("software") or "")
    if "OpenSSH" in software:
        return "On the server, `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it (the key file of " \
               "the type shown)."
    return f"Ask the server's administrator for its host key fingerprint ({software or 'unknown software'})."


class TrustScreen(ConfirmScreen):
    """Trust host key: the fingerprint the server presents now beside the one we trust, and where to compare it;
    recorded only on confirmation (default Cancel). The key presented already trusted: nothing to ask, one Close
    button. `offer` is the trust operation's check answer."""

    def __init__(self, offer: dict) -> None:
        self.offer = offer
        outcome = offer["outcome"]
        trusted = ", ".join(offer.get("trusted") or []) or "none yet"
        held = "The config pins" if offer.get("pinned") else "Trusted now"
        lines = [f"{'The server presents':<20} {offer['fingerprint']}", f"{held:<20} {trusted}"]
        if outcome == "already trusted":
            lines.append("The key it presents is the one trusted: already trusted, nothing to do.")
        else:
            lines.append("Compare it with the server's own before you trust it. " + compare_advice(offer))
            if outcome == "changed" and offer.get("pinned"):
                lines.append("The config pins another key: fix the pin (Configure); nothing is recorded here.")
            elif outcome == "changed":
                lines.append("A changed key can mean an attack. Replace the recorded key only if you know why.")
        title = {"changed": "HOST KEY CHANGED", "already trusted": "Host key already trusted"}.get(
            outcome, "Trust host key")
        yes = {"changed": "Replace key", "already trusted": None}.get(outcome, "Trust")
        super().__init__(f"{title}: {offer['unit']} -> {offer['server']}", "\n".join(lines), yes=yes,
                         no="Close" if yes is None else "Cancel", wide=True)
