"""One entry of the operation log, whole, with `c` to copy it."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from console.core.dates import local_text
from console.core.status import OpEntry


class OpDetailsScreen(ModalScreen[None]):
    """Every field of one entry (its time local, the UTC one beside it). `c` copies the text shown through the
    terminal (OSC 52: Textual's copy_to_clipboard) and the dialog then says what it copied."""

    DEFAULT_CSS = """
    OpDetailsScreen { align: center middle; }
    OpDetailsScreen .dialog { max-height: 22; }
    #op-text { height: auto; max-height: 14; }
    #op-copied { height: auto; color: $success; }
    """

    BINDINGS = [
        Binding("c", "copy", "Copy (OSC 52)", tooltip="copy the text shown through the terminal (OSC 52)",
                id="op.copy"),
        Binding("escape,enter", "close", "Close", id="op.close"),
    ]

    def __init__(self, entry: OpEntry) -> None:
        super().__init__()
        self.entry = entry
        self.text = entry.text(local_text(entry.at))
        self.copied: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Operation {self.entry.id}: {self.entry.action}", classes="dialog-title")
            with VerticalScroll(id="op-text"):
                yield Static(self.text, markup=False)
            yield Static("", id="op-copied")
            with Horizontal(classes="buttons"):
                yield Button("Copy (c)", id="copy")
                yield Button("Close", id="close", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#op-text").focus()

    @on(Button.Pressed, "#copy")
    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.copied = self.text
        lines = self.text.count("\n") + 1
        self.query_one("#op-copied", Static).update(
            f"✔ copied these {lines} lines through the terminal (OSC 52; a terminal that does not allow it "
            "copies nothing)")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
