"""One line asked of the operator (AskScreen), and a secret shown to the operator once (SecretScreen)."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class AskScreen(ModalScreen[str | None]):
    """One line of input (a client_id, a quota); esc cancels. `refuse(answer)` says why an answer cannot be
    taken (None: it can): the dialog then stays, says so under the line, and the operator corrects it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="ask.cancel")]

    def __init__(self, question: str, placeholder: str = "",
                 refuse: Callable[[str], str | None] | None = None) -> None:
        super().__init__()
        self.question, self.placeholder, self.refuse = question, placeholder, refuse

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            yield Input(placeholder=self.placeholder, id="answer")
            yield Static("", id="ask-error")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    @on(Input.Submitted, "#answer")
    def _submitted(self, event: Input.Submitted) -> None:
        answer = event.value.strip()
        reason = self.refuse(answer) if answer and self.refuse is not None else None
        if reason:
            self.query_one("#ask-error", Static).update(f"✖ {reason}")
            return
        self.dismiss(answer or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SecretScreen(ModalScreen[None]):
    """A private key, shown this once."""

    BINDINGS = [Binding("escape,enter", "close", "Close", id="secret.close")]

    def __init__(self, title: str, secret: str) -> None:
        super().__init__()
        self.title_text, self.secret = title, secret

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static("Copy it now with your terminal (select, copy) and hand it over securely: it is shown "
                         "this once and nothing keeps it.", classes="dialog-text")
            yield Static(self.secret.strip(), id="secret")
            with Horizontal(classes="buttons"):
                yield Button("I have copied it", id="close", variant="primary")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.secret = ""
        self.dismiss(None)
