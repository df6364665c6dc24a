"""One line asked of the operator (AskScreen), and a secret shown to the operator once (SecretScreen)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from console.core.errors import os_reason


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
    """A private key, shown this once: the whole screen, the key's lines with nothing beside them (no border, no
    screen behind), so a mouse copy picks up the key alone. `c` copies it through the terminal (OSC 52), `s` saves
    it to a new file (0600) whose path the operator types."""

    BINDINGS = [
        Binding("c", "copy", "Copy (OSC 52)", id="secret.copy"),
        Binding("s", "save", "Save to file", id="secret.save"),
        Binding("escape,enter", "close", "Close", id="secret.close"),
    ]

    def __init__(self, title: str, secret: str) -> None:
        super().__init__()
        self.title_text, self.secret = title, secret.strip() + "\n"

    def compose(self) -> ComposeResult:
        with Vertical(classes="secret-page"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static("Hand it over securely: it is shown this once and nothing keeps it. Select it with the "
                         "mouse, or c copies it (through the terminal: OSC 52), s saves it to a new file.",
                         classes="dialog-text")
            yield Static(self.secret.rstrip("\n"), id="secret")
            with Horizontal(classes="buttons"):
                yield Button("I have it", id="close", variant="primary")
        yield Footer()

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.secret)
        self.notify("copied through the terminal (OSC 52): a terminal that does not allow it copies nothing "
                    "(tmux: set -g set-clipboard on)", timeout=8)

    def action_save(self) -> None:
        self.app.push_screen(AskScreen("Save the private key to a new file (0600)", "e.g. ~/acme_key",
                                       refuse=self._save))

    def _save(self, answer: str) -> str | None:
        """Write the key to a file that does not exist yet, readable by its owner only; None when done, else why
        not (the dialog stays and says so)."""
        path = Path(answer).expanduser().absolute()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return f"{path} exists: not overwritten; name a new file"
        except OSError as exc:
            return f"cannot write {path}: {os_reason(exc)}"
        try:
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o600)  # whatever the umask
                out.write(self.secret)
        except OSError as exc:
            path.unlink(missing_ok=True)
            return f"cannot write {path}: {os_reason(exc)}"
        self.notify(f"saved to {path} (0600)")
        return None

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.secret = ""
        self.dismiss(None)
