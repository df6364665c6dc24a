"""The bar that says the daemon is gone, on every screen that shows the daemon's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.widgets import Static

from console.ui.messages import StatusChanged, follow

if TYPE_CHECKING:
    from textual.signal import Signal

    from console.ui.session import Session


class DaemonBar(Static):
    """Hidden while the console is attached; while the daemon is gone, `✖ daemon gone, reconnecting… the states
    below are as of HH:MM:SS`. It follows the status signal: the App publishes a StatusChanged when the daemon
    goes and when it is back."""

    def __init__(self, session: Session, changes: Signal[StatusChanged]) -> None:
        super().__init__("", id="daemon-bar")
        self.session = session
        self._changes = changes

    def on_mount(self) -> None:
        follow(self._changes, self)
        self.show_connection()

    @on(StatusChanged)
    def _status_changed(self) -> None:
        self.show_connection()

    def show_connection(self) -> None:
        stale = self.session.stale_since is not None
        if stale:
            self.update(f"✖ daemon gone, reconnecting… the states below are as of {self.session.as_of()}")
        self.display = stale
