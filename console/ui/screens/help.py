"""Help: a page of its own with the console's keys, grouped by screen, the one it was opened from first; then the
keys that work everywhere, the other screens, and Textual's own last. Built from the screens' bindings and the
menu table, so a key is written once. `esc`, `?`, `f1` and `q` close it (q here does not quit the console)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations, pairwise

from rich.table import Table
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from console.ui.menu import BY_ACTION, MENU
from console.ui.screens.clients import ClientsScreen
from console.ui.screens.configure import ConfigureScreen
from console.ui.screens.endpoints import EndpointsScreen
from console.ui.screens.log import LogScreen
from console.ui.screens.main import MainScreen
from console.ui.screens.operations import OperationsScreen
from console.ui.screens.rules import RulesScreen
from console.ui.widgets.log_view import LogView

Row = tuple[str, str]  # the keys as shown, what they do
TWO_COLUMNS_FROM = 120  # terminal columns: from here the groups stand side by side
COLUMN_WIDTH = 80       # ... one more column of groups for each this many terminal columns (3 from 240)


class HelpScreen(Screen):
    """Every key of the console, the current screen's first."""

    BINDINGS = [
        Binding("escape,question_mark,f1,q", "close", "Close", id="help.close"),
        Binding("j", "scroll('down')", "Down", show=False, id="help.down"),
        Binding("k", "scroll('up')", "Up", show=False, id="help.up"),
    ]

    def __init__(self, shown_over: Screen, unit: str | None) -> None:
        super().__init__()
        self.shown_over = type(shown_over)
        self.unit = unit

    def compose(self) -> ComposeResult:
        yield Static("Help: the console's keys   esc or ? closes", id="help-title")
        groups = [(title, rows) for title, rows in self.groups() if rows]
        width = max(len(keys) for _, rows in groups for keys, _ in rows)  # one column of keys for all
        self._columns = columns_for(self.app.size.width)
        with VerticalScroll(id="help"), Horizontal(id="help-columns"):
            for column in _split(groups, self._columns, self.app.size.width // self._columns - 4, width):
                with Vertical(classes="help-column"):
                    for title, rows in column:
                        yield Static(title, classes="help-group")
                        yield Static(_table(rows, width), classes="help-keys")

    def on_mount(self) -> None:
        self.query_one("#help").focus()

    def on_resize(self, event: events.Resize) -> None:
        if columns_for(event.size.width) != self._columns:
            self.refresh(recompose=True)
            self.call_after_refresh(self.on_mount)

    def action_close(self) -> None:
        self.dismiss()

    def action_scroll(self, direction: str) -> None:
        help_ = self.query_one("#help", VerticalScroll)
        help_.scroll_down() if direction == "down" else help_.scroll_up()

    # ------------------------------------------------------------------ the groups, from the bindings

    def groups(self) -> list[tuple[str, list[Row]]]:
        from console.ui.app import SopConsole

        screens = {
            MainScreen: ("Main screen: 3rd Party Connection", self._menu_rows() + self._rows(
                b for b in MainScreen.BINDINGS if not b.id.startswith("menu."))),
            LogScreen: (_titled("view_log"), self._rows([*LogView.BINDINGS, *LogScreen.BINDINGS])),
            ClientsScreen: (_titled("clients"), self._rows(ClientsScreen.BINDINGS)),
            RulesScreen: (_titled("rules"), self._rows(RulesScreen.BINDINGS)),
            ConfigureScreen: (_titled("configure"), self._rows(ConfigureScreen.BINDINGS)),
            EndpointsScreen: (_titled("endpoints"), self._rows(EndpointsScreen.BINDINGS)),
            OperationsScreen: (_titled("operations"), self._rows(OperationsScreen.BINDINGS)),
        }
        first = screens.pop(self.shown_over, None)
        if first is None:  # a dialog: its own keys, if it has any, then the main screen's
            first = ("This dialog", self._rows(getattr(self.shown_over, "BINDINGS", [])))
        textual = [*Screen.BINDINGS, *App.BINDINGS]
        return [first, ("Everywhere", self._rows(SopConsole.BINDINGS)), *screens.values(),
                ("Textual's own keys", self._rows(textual))]

    def _menu_rows(self) -> list[Row]:
        unit = self.unit or "the selected unit"
        return [(item.key, f"{item.text}: {item.does.format(unit=unit)}") for item in MENU]

    def _rows(self, bindings: Iterable[Binding | tuple]) -> list[Row]:
        rows = []
        for binding in bindings:
            if not isinstance(binding, Binding) or not (binding.tooltip or binding.description):
                continue
            keys = " / ".join(self.app.get_key_display(binding.with_key(key.strip()))
                              for key in binding.key.split(",") if not key.startswith("super+"))  # a Mac's key
            rows.append((keys, binding.tooltip or binding.description))
        return rows


def columns_for(width: int) -> int:
    """Side by side from TWO_COLUMNS_FROM columns of terminal, one more for each COLUMN_WIDTH beyond."""
    return 1 if width < TWO_COLUMNS_FROM else max(2, width // COLUMN_WIDTH)


def _split(groups: list[tuple[str, list[Row]]], columns: int, width: int,
           keys: int) -> list[list[tuple[str, list[Row]]]]:
    """The groups in `columns` columns, in order (down the first, then the next), the tallest column as short as
    it can be; a group is never split. `width`: a column's room for text, to count the lines a row wraps to."""
    room = max(width - keys - 2, 10)
    heights = [2 + sum(max(1, -(-len(what) // room)) for _, what in rows) for _, rows in groups]  # + title, margin
    best: tuple[int, list[int]] | None = None
    for cuts in combinations(range(1, len(groups)), min(columns, len(groups)) - 1):
        bounds = [0, *cuts, len(groups)]
        tallest = max(sum(heights[a:b]) for a, b in pairwise(bounds))
        if best is None or tallest < best[0]:
            best = (tallest, bounds)
    bounds = best[1] if best else [0, len(groups)]
    return [groups[a:b] for a, b in pairwise(bounds)]


def _titled(action: str) -> str:
    item = BY_ACTION[action]
    return f"{item.key} {item.text}"


def _table(rows: list[Row], width: int) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, min_width=width, style="bold")
    table.add_column(ratio=1)
    for keys, what in rows:
        table.add_row(keys, what)
    return table
