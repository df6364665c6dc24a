"""Shown when no daemon runs: quit, or run the engine inside the console (clearly labelled)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Label, Static


class NoDaemonScreen(Screen[bool]):
    """Dismissed with True to start the engine here; quitting leaves the console."""

    BINDINGS = [Binding("s", "start_here", "Start engine here", id="nodaemon.start"),
                Binding("q,escape", "app.quit", "Quit", id="nodaemon.quit")]

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("No daemon is running", classes="dialog-title")
            yield Static(f"{self.reason}\n\nStart it as a service (`sop-console daemon`), or press s to run the "
                         "engine inside this console.\nCareful: then the tunnels end when you quit the console.",
                         classes="dialog-text")
            with Horizontal(classes="buttons"):
                yield Button("Quit", id="quit", variant="primary")
                yield Button("Start engine here", id="start", variant="warning")

    @on(Button.Pressed, "#start")
    def action_start_here(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#quit")
    def _quit(self) -> None:
        self.dismiss(False)
