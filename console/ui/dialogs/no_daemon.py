"""Shown when no daemon runs: quit, or run the engine inside the console (clearly labelled). When that engine
could not start, the same screen says why and offers Retry and Quit; when the config file is why, also Edit (its
text, in Configure's editor: with no daemon, a broken file would otherwise keep the operator out)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Label, Static


class NoDaemonScreen(Screen[bool | str]):
    """Dismissed with True to start (or retry starting) the engine here, "edit" to edit the config file; quitting
    leaves the console. `failure`: why the last start failed (None: none was tried yet); `editable`: the config
    file is why, and its text can be edited here."""

    BINDINGS = [Binding("s", "start_here", "Start engine here", id="nodaemon.start"),
                Binding("r", "retry", "Retry", id="nodaemon.retry"),
                Binding("e", "edit", "Edit the config file", id="nodaemon.edit"),
                Binding("q,escape", "app.quit", "Quit", id="nodaemon.quit")]

    def __init__(self, reason: str, failure: str | None = None, editable: bool = False) -> None:
        super().__init__()
        self.reason = reason
        self.failure = failure
        self.editable = editable and failure is not None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            if self.failure is None:
                yield Label("No daemon is running", classes="dialog-title")
                yield Static(f"{self.reason}\n\nStart it as a service (`sop-console daemon`), or press s to run the "
                             "engine inside this console.\nCareful: then the tunnels end when you quit the console.",
                             classes="dialog-text")
            else:
                yield Label("The engine could not start here", classes="dialog-title")
                fix = ("press e to edit the config file here" if self.editable
                       else "put right what is said above")
                yield Static(f"{self.failure}\n\nNothing is running: no daemon, and no engine in this console. "
                             f"First {fix} (the file is read again), then press r to retry, or q to quit.",
                             classes="dialog-text")
            with Horizontal(classes="buttons"):
                yield Button("Quit", id="quit", variant="primary")
                if self.failure is None:
                    yield Button("Start engine here", id="start", variant="warning")
                else:
                    if self.editable:
                        yield Button("Edit the config file", id="edit")
                    yield Button("Retry", id="retry", variant="warning")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start_here":
            return self.failure is None
        if action == "retry":
            return self.failure is not None
        if action == "edit":
            return self.editable
        return True

    @on(Button.Pressed, "#start")
    def action_start_here(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#retry")
    def action_retry(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#edit")
    def action_edit(self) -> None:
        self.dismiss("edit")

    @on(Button.Pressed, "#quit")
    def _quit(self) -> None:
        self.dismiss(False)
