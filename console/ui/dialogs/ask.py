"""One line asked of the operator (AskScreen); text for the operator to take away (CopyPage): a secret shown once
(SecretScreen), a script (the endpoints' set-up)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.content import Content
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


class CopyPage(ModalScreen[None]):
    """Text for the operator to take away (a private key, a script): the whole screen, the text's lines with
    nothing beside them (no border, no scroll bar, no screen behind), so a mouse copy picks up the text alone; a
    long line is not wrapped (left / right scroll to its end). `c` copies it all through the terminal (OSC 52), the
    save key writes it to a new file (0600) whose path the operator types. A subclass names its keys and words."""

    BINDINGS = [
        Binding("c", "copy", "Copy (OSC 52)", id="page.copy"),
        Binding("s", "save", "Save to file", id="page.save"),
        Binding("escape,enter", "close", "Close", id="page.close"),
    ]
    INTRO = ""                # what the operator does with it, under the title
    SAVE_AS = "a new file"    # the save dialog's question: "Save {SAVE_AS} (0600)"
    SAVE_EXAMPLE = ""         # its placeholder
    DONE = "Close"            # the button that closes the page

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text.strip() + "\n"

    def compose(self) -> ComposeResult:
        with Vertical(classes="secret-page"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.INTRO, classes="dialog-text")
            with ScrollableContainer(id="secret-scroll"):
                yield Static(Content(self.text.rstrip("\n")), id="secret")
            with Horizontal(classes="buttons"):
                yield Button(self.DONE, id="close", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#secret-scroll").focus()  # up / down / page keys scroll a text longer than the screen

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify("copied through the terminal (OSC 52): a terminal that does not allow it copies nothing "
                    "(tmux: set -g set-clipboard on)", timeout=8)

    def action_save(self) -> None:
        self.app.push_screen(AskScreen(f"Save {self.SAVE_AS} (0600)", self.SAVE_EXAMPLE, refuse=self._save))

    def _save(self, answer: str) -> str | None:
        """Write the text to a file that does not exist yet, readable by its owner only; None when done, else why
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
                out.write(self.text)
        except OSError as exc:
            path.unlink(missing_ok=True)
            return f"cannot write {path}: {os_reason(exc)}"
        self.notify(f"saved to {path} (0600)")
        return None

    @on(Button.Pressed, "#close")
    def _close_pressed(self) -> None:
        self.action_close()

    def action_close(self) -> None:
        self.dismiss(None)


class SecretScreen(CopyPage):
    """A private key, shown this once (CopyPage): `c` copies it (OSC 52), `s` saves it to a new file (0600);
    nothing keeps it once the page is closed."""

    BINDINGS = [
        Binding("c", "copy", "Copy (OSC 52)", id="secret.copy"),
        Binding("s", "save", "Save to file", id="secret.save"),
        Binding("escape,enter", "close", "Close", id="secret.close"),
    ]
    INTRO = ("Hand it over securely: it is shown this once and nothing keeps it. Select it with the mouse, or c "
             "copies it (through the terminal: OSC 52), s saves it to a new file.")
    SAVE_AS = "the private key to a new file"
    SAVE_EXAMPLE = "e.g. ~/acme_key"
    DONE = "I have it"

    def action_close(self) -> None:
        self.text = ""
        super().action_close()
