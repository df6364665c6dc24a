"""The main screen: SOP Shell > Subsystems > 3rd Party Connection, with the units and their ports, live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from rich.cells import cell_len
from textual import events
from textual.widgets import DataTable, Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from console.core.states import human_bytes
from console.ui.menu import MENU
from console.ui.messages import MenuChosen, StatusChanged, follow
from console.ui.widgets.daemon_bar import DaemonBar
from console.ui.widgets.fitted_table import Col, FittedTable
from console.ui.widgets.tables import short_time

if TYPE_CHECKING:
    from textual.signal import Signal

    from console.ui.session import Session

BANNER_PROBLEMS = 5  # the config file's problems listed on the main screen; Configure lists them all
MENU_FOLDS_BELOW = 90  # columns: narrower, the menu is one line above the tables instead of a box beside them

# The tables' columns, with the order they are dropped in when the width is short (the highest rank first).
UNIT_COLUMNS = (Col("unit", 0), Col("state", 0), Col("since", 2), Col("next retry", 1))
PORT_COLUMNS = (Col("unit", 0), Col("fwd", 0), Col("state", 0), Col("remote", 2), Col("local", 1), Col("open", 5),
                Col("total", 6), Col("in", 3), Col("out", 4), Col("reason", 7))


class MainScreen(Screen):
    """The menu for the selected unit; the units and the ports tables, redrawn on each StatusChanged."""

    BINDINGS = [
        *(Binding(item.key, f"menu('{item.action}')", item.text, show=False, id=f"menu.{item.action}")
          for item in MENU),
        Binding("u", "next_unit", "Unit", tooltip="the next unit: the menu acts on it", id="main.unit"),
        Binding("slash", "filter", "Filter", tooltip="show only the ports matching a text", id="main.filter"),
        Binding("escape", "clear_filter", "Clear", show=False, tooltip="clear the ports filter", id="main.clear"),
        Binding("j", "cursor('down')", "Down", show=False, tooltip="down (as the arrow)", id="main.down"),
        Binding("k", "cursor('up')", "Up", show=False, tooltip="up (as the arrow)", id="main.up"),
    ]

    def __init__(self, session: Session, changes: Signal[StatusChanged]) -> None:
        super().__init__()
        self.session = session
        self._changes = changes

    def compose(self) -> ComposeResult:
        yield DaemonBar(self.session, self._changes)  # shown only while the daemon is gone
        yield Static("", id="config-banner")  # shown only while the config file does not check
        yield Static("", id="menu-bar")  # the menu folded into one line, on a narrow terminal
        with Horizontal(id="body"):
            with Vertical(id="menu-box"):
                yield Static("", id="menu-title")
                yield OptionList(*(Option(f"{item.key} {item.text}", id=item.action) for item in MENU), id="menu")
            with Vertical(id="tables"):
                yield FittedTable(UNIT_COLUMNS, id="units", cursor_type="row", zebra_stripes=False)
                yield Static("", id="unit-detail")
                yield FittedTable(PORT_COLUMNS, id="ports", cursor_type="row")
                yield Static("", id="port-detail")
                yield Input(placeholder="filter ports (esc clears)", id="port-filter", classes="hidden")
        yield Static(self.session.quit_note(), id="quit-note")
        yield Footer()

    def on_mount(self) -> None:
        follow(self._changes, self)  # before the first drawing: no change falls between the two
        self.render_status()
        self._focus_home()

    def _focus_home(self) -> None:
        """The menu when it is the box; when it is folded into the bar (not focusable), the units table."""
        self.query_one("#units" if self.has_class("-narrow") else "#menu").focus()

    @on(StatusChanged)
    def _status_changed(self) -> None:
        self.render_status()

    def on_resize(self, event: events.Resize) -> None:
        self._fold_menu(event.size.width)

    def on_screen_resume(self) -> None:
        self._fold_menu(self.app.size.width)  # the terminal may have changed size under another screen
        self.render_status()  # back from Configure: a saved file may have put the config right

    def _fold_menu(self, width: int) -> None:
        """Under MENU_FOLDS_BELOW columns the menu box gives its room to the tables: one line above them."""
        narrow = width < MENU_FOLDS_BELOW
        if narrow != self.has_class("-narrow"):
            self.set_class(narrow, "-narrow")
            if narrow and self.focused is self.query_one("#menu"):
                self._focus_home()
        self._render_menu_bar(width)

    def _render_menu_bar(self, width: int | None = None) -> None:
        """The selected unit and the menu's keys in one line: the full words when they fit, else shorter ones;
        when even the words' first three letters do not fit one line, two lines (every key, its word at least three
        letters long: "2 St…" and "3 St…" would say nothing). Each item a link (a click chooses it, as its key
        does)."""
        width = (width if width is not None else self.app.size.width) - 2  # the bar's padding
        unit = self.session.selected_unit or "none"
        for with_unit, gap in ((True, "  "), (True, " "), (False, "  "), (False, " ")):
            head = f"unit: {unit} │ " if with_unit else ""
            if cell_len(head + gap.join(f"{i.key} {i.short}" for i in MENU)) <= width:
                lines = [_menu_line(MENU, [i.short for i in MENU], gap)]
                break
        else:  # not even one space apart: every key stays, the longest words cut short (…) until they fit
            lines = [_menu_line(items, _cut_to_fit([i.short for i in items], width - _keys_width(items)), " ")
                     for items in _menu_rows(width)]
        self.query_one("#menu-bar", Static).update((f"[b]{head}[/b]" if head else "") + "\n".join(lines))

    # ------------------------------------------------------------------ rendering

    def render_status(self) -> None:
        session = self.session
        selected = session.selected_unit
        self.query_one("#menu-title", Static).update(f"3rd Party Connection\nunit: {selected or 'none'}")
        self._render_menu_bar()
        unit_rows = {unit.name: (unit.name, unit.state.label, short_time(unit.since),
                                 short_time(unit.next_retry) or "-") for unit in session.units()}
        units = self.query_one("#units", FittedTable)
        units.show(unit_rows)
        if selected in unit_rows and units.cursor_row != list(unit_rows).index(selected):
            units.move_cursor(row=list(unit_rows).index(selected))  # `u` moves the cursor too
        unit = session.unit_status(selected)
        detail = ""
        if unit is not None:  # wrapped whole: the key on a line of its own, the error below
            detail = f"{unit.name}: {unit.username}@{unit.server}"
            if unit.server_key and unit.server_key not in (unit.last_error or ""):
                detail += f"  server key {unit.server_key}"
            problems = [p for p in (unit.last_error, unit.endpoint_problem and
                                    f"endpoint {unit.endpoint} {unit.endpoint_problem}") if p]
            detail += "\n" + ("\n".join(problems) or "no error")
        self.query_one("#unit-detail", Static).update(Content(detail))  # plain text: an error is no markup
        self._render_ports()
        self._render_connection()
        self._render_config_problems()
        note = session.quit_note()
        quit_note = self.query_one("#quit-note", Static)
        if str(quit_note.render()) != note:
            quit_note.update(note)

    def _render_config_problems(self) -> None:
        """The config file does not check: every problem with its line, what runs meanwhile, and the way out."""
        session = self.session
        problems = session.config_problems
        banner = self.query_one("#config-banner", Static)
        if problems:
            runs = ("the engine here runs the configuration it started with" if session.engine_here is not None
                    else "the daemon keeps the configuration it last loaded")
            shown = problems if len(problems) <= BANNER_PROBLEMS else problems[:BANNER_PROBLEMS - 1]
            more = len(problems) - len(shown)
            text = (f"✖ {session.config_path or 'the config file'} does not check: {runs}. 5 Configure to fix it.\n"
                    + "\n".join(shown) + (f"\n… and {more} more (5 Configure lists them all)" if more else ""))
            if str(banner.render()) != text:
                banner.update(text)
        banner.display = bool(problems)

    def _render_connection(self) -> None:
        """While the daemon is gone (the DaemonBar says so): the tables dimmed, with the time their state is from."""
        stale = self.session.stale_since is not None
        as_of = self.session.as_of()
        for widget in self.query("#units, #unit-detail, #ports, #port-detail"):
            widget.set_class(stale, "-stale")
        for table in self.query("#units, #ports").results(DataTable):
            title = f"stale: as of {as_of}" if stale else None
            if table.border_title != title:
                table.border_title = title

    def _render_ports(self) -> None:
        needle = self.query_one("#port-filter", Input).value.strip().lower()
        port_rows = {}
        for unit in self.session.units():
            for fwd in unit.forwards:
                cells = (unit.name, fwd.name, fwd.state.label, fwd.remote, fwd.local, str(fwd.open), str(fwd.total),
                         human_bytes(fwd.bytes_in), human_bytes(fwd.bytes_out), fwd.error or "")
                if not needle or any(needle in c.lower() for c in cells):
                    port_rows[f"{unit.name}/{fwd.name}"] = cells
        ports = self.query_one("#ports", FittedTable)
        ports.show(port_rows)
        self._render_port_detail(ports)

    def _render_port_detail(self, ports: FittedTable) -> None:
        """The highlighted forward in full: every column, the ones a narrow table leaves out too."""
        text = ""
        if ports.row_count:
            cells = ports.row(ports.ordered_rows[ports.cursor_row].key.value)
            unit, fwd, state, remote, local, open_, total, bytes_in, bytes_out, reason = cells
            text = (f"{unit}/{fwd} {state} {remote} -> {local}  open {open_} total {total} "
                    f"in {bytes_in} out {bytes_out}" + (f"\n{reason}" if reason else ""))
        self.query_one("#port-detail", Static).update(Content(text))

    @on(DataTable.RowHighlighted, "#ports")
    def _port_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._render_port_detail(self.query_one("#ports", FittedTable))

    # ------------------------------------------------------------------ actions

    @on(DataTable.RowHighlighted, "#units")
    def _unit_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and self.session.select_unit(event.row_key.value):
            self.render_status()

    @on(OptionList.OptionSelected, "#menu")
    def _menu_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_menu(event.option.id or "")

    def action_menu(self, action: str) -> None:
        self.post_message(MenuChosen(action))

    def action_next_unit(self) -> None:
        self.session.next_unit()
        self.render_status()

    def action_cursor(self, direction: str) -> None:
        widget = self.focused
        method = getattr(widget, f"action_cursor_{direction}", None)
        if method is not None:
            method()

    def action_filter(self) -> None:
        box = self.query_one("#port-filter", Input)
        box.remove_class("hidden")
        self.app.hold_keys()  # the keys typed right after `/`, in the same burst, belong in the box
        self.set_focus(box)

    def action_clear_filter(self) -> None:
        box = self.query_one("#port-filter", Input)
        box.value = ""
        box.add_class("hidden")
        self._render_ports()
        self._focus_home()

    @on(Input.Changed, "#port-filter")
    def _filter_changed(self) -> None:
        self._render_ports()

    @on(Input.Submitted, "#port-filter")
    def _filter_done(self) -> None:
        self.query_one("#ports", DataTable).focus()


def _cut_to_fit(words: list[str], room: int) -> list[str]:
    """The words, the longest cut to one length (ending in …) so that together they take at most `room` cells."""
    for longest in range(max(map(len, words)), 1, -1):
        cut = [w if len(w) <= longest else w[:longest - 1] + "…" for w in words]
        if sum(map(cell_len, cut)) <= room:
            return cut
    return [w[:1] for w in words]


def _keys_width(items) -> int:
    """The cells a menu line takes besides its words: each key, the space after it, one space between items."""
    return sum(cell_len(i.key) + 2 for i in items) - 1


def _menu_rows(width: int) -> list[tuple]:
    """The menu's items on one line when their first three letters fit there, else on two."""
    def fits(items) -> bool:
        return _keys_width(items) + sum(min(len(i.short), 4) for i in items) <= width  # "Sta…" or "Ops"

    if fits(MENU):
        return [MENU]
    half = (len(MENU) + 1) // 2
    return [MENU[:half], MENU[half:]]


def _menu_line(items, words: list[str], gap: str) -> str:
    return gap.join(f"[@click=screen.menu('{i.action}')][b]{i.key}[/b] {word}[/]" for i, word in zip(items, words))
