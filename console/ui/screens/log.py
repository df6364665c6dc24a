"""View log: the tunnel log, followed like `tail -F`, filtered and searched."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from console.ui.messages import FollowChanged
from console.ui.widgets.log_view import LogView


class LogScreen(Screen):
    """View log: follow (FOLLOW / PAUSED badge), / filter (esc clears), s search with n / N. (`?` stays the
    app's help here too.)"""

    BINDINGS = [
        Binding("escape", "back", "Back", id="log.back"),
        Binding("slash", "filter", "Filter", id="log.filter"),
        Binding("s", "search", "Search", show=False, id="log.search"),
    ]
    _mode = "filter"  # what the input line asks for: "filter" or "search"

    def __init__(self, path: Path, *, poll: bool = True) -> None:
        super().__init__()
        self.path = path
        self.poll = poll

    def compose(self) -> ComposeResult:
        with Horizontal(id="log-bar"):
            yield Static("tunnel log", id="log-title")
            yield Static("", id="log-badge")
        yield LogView(self.path, poll=self.poll, id="log")
        yield Input(placeholder="", id="log-input", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self._badge(True)
        self.query_one(LogView).focus()

    def _badge(self, following: bool) -> None:
        view = self.query_one(LogView)
        text = "FOLLOW" if following else "PAUSED"
        if view.filter_text:
            text += f"  filter: {view.filter_text}"
        if view.hit is not None:
            text += f"  hit {view.hit[0]} of {view.hit[1]}"
        self.query_one("#log-badge", Static).update(text)

    @on(FollowChanged)
    def _follow_changed(self, event: FollowChanged) -> None:
        self._badge(event.following)

    @on(LogView.HitMoved)
    def _hit_moved(self) -> None:
        self._badge(self.query_one(LogView).following)

    def _ask(self, mode: str) -> None:
        box = self.query_one("#log-input", Input)
        box.placeholder = "show only lines containing (empty: all)" if mode == "filter" else "search for"
        self._mode = mode
        box.value = self.query_one(LogView).filter_text if mode == "filter" else ""
        box.remove_class("hidden")
        self.app.hold_keys()  # the keys typed right after `/` or `s`, in the same burst, belong in the box
        self.set_focus(box)

    def action_filter(self) -> None:
        self._ask("filter")

    def action_search(self) -> None:
        self._ask("search")

    @on(Input.Submitted, "#log-input")
    def _submitted(self, event: Input.Submitted) -> None:
        view = self.query_one(LogView)
        if self._mode == "filter":
            view.set_filter(event.value.strip())
        else:
            view.set_search(event.value.strip())
        event.input.add_class("hidden")
        view.focus()
        self._badge(view.following)

    def action_back(self) -> None:
        box = self.query_one("#log-input", Input)
        view = self.query_one(LogView)
        if not box.has_class("hidden"):
            box.add_class("hidden")
            view.focus()
        elif view.filter_text:
            view.set_filter("")  # esc clears the filter first, then leaves
            self._badge(view.following)
        else:
            self.dismiss()
