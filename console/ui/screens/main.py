"""The main screen: SOP Shell > Subsystems > 3rd Party Connection, with the units and their ports, live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from console.core.states import human_bytes
from console.ui.menu import MENU
from console.ui.messages import MenuChosen, StatusChanged, follow
from console.ui.widgets.daemon_bar import DaemonBar
from console.ui.widgets.tables import fill, short_time

if TYPE_CHECKING:
    from textual.signal import Signal

    from console.ui.session import Session

QUIT_NOTE = "q quits the console; the tunnels keep running"
QUIT_NOTE_ENGINE_HERE = "q quits the console and the engine it runs: the tunnels end"


class MainScreen(Screen):
    """The menu for the selected unit; the units and the ports tables, redrawn on each StatusChanged."""

    BINDINGS = [
        *(Binding(item.key, f"menu('{item.action}')", item.text, show=False, id=f"menu.{item.action}")
          for item in MENU),
        Binding("u", "next_unit", "Unit", id="main.unit"),
        Binding("slash", "filter", "Filter", id="main.filter"),
        Binding("escape", "clear_filter", "Clear", show=False, id="main.clear"),
        Binding("j", "cursor('down')", "Down", show=False, id="main.down"),
        Binding("k", "cursor('up')", "Up", show=False, id="main.up"),
    ]

    def __init__(self, session: Session, changes: Signal[StatusChanged]) -> None:
        super().__init__()
        self.session = session
        self._changes = changes

    def compose(self) -> ComposeResult:
        yield DaemonBar(self.session, self._changes)  # shown only while the daemon is gone
        with Horizontal(id="body"):
            with Vertical(id="menu-box"):
                yield Static("", id="menu-title")
                yield OptionList(*(Option(f"{item.key} {item.text}", id=item.action) for item in MENU), id="menu")
            with Vertical(id="tables"):
                yield DataTable(id="units", cursor_type="row", zebra_stripes=False)
                yield Static("", id="unit-detail")
                yield DataTable(id="ports", cursor_type="row")
                yield Static("", id="port-detail")
                yield Input(placeholder="filter ports (esc clears)", id="port-filter", classes="hidden")
        yield Static(QUIT_NOTE, id="quit-note")
        yield Footer()

    def on_mount(self) -> None:
        units = self.query_one("#units", DataTable)
        units.add_columns("unit", "state", "since", "next retry")
        ports = self.query_one("#ports", DataTable)
        ports.add_columns("unit", "fwd", "state", "remote", "local", "open", "total", "in", "out", "reason")
        follow(self._changes, self)  # before the first drawing: no change falls between the two
        self.render_status()
        self.query_one("#menu", OptionList).focus()

    @on(StatusChanged)
    def _status_changed(self) -> None:
        self.render_status()

    # ------------------------------------------------------------------ rendering

    def render_status(self) -> None:
        session = self.session
        selected = session.selected_unit
        self.query_one("#menu-title", Static).update(f"3rd Party Connection\nunit: {selected or 'none'}")
        unit_rows = {unit.name: (unit.name, unit.state.label, short_time(unit.since),
                                 short_time(unit.next_retry) or "-") for unit in session.units()}
        units = self.query_one("#units", DataTable)
        if fill(units, unit_rows) and selected in unit_rows:
            units.move_cursor(row=list(unit_rows).index(selected))
        unit = session.unit_status(selected)
        detail = ""
        if unit is not None:
            detail = f"{unit.name}: {unit.username}@{unit.server}  "
            if unit.server_key:
                detail += f"server key {unit.server_key}: "
            detail += unit.last_error or "no error"
        self.query_one("#unit-detail", Static).update(detail)
        self._render_ports()
        self._render_connection()
        note = QUIT_NOTE if session.engine_here is None else QUIT_NOTE_ENGINE_HERE
        quit_note = self.query_one("#quit-note", Static)
        if str(quit_note.render()) != note:
            quit_note.update(note)

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
        ports = self.query_one("#ports", DataTable)
        fill(ports, port_rows)
        self._render_port_detail(ports)

    def _render_port_detail(self, ports: DataTable) -> None:
        """The highlighted forward in full: at 80 columns its counters and reason are off the table's edge."""
        text = ""
        if ports.row_count:
            cells = ports.get_row_at(ports.cursor_row)
            unit, fwd, state, remote, local, open_, total, bytes_in, bytes_out, reason = cells
            text = (f"{unit}/{fwd} {state} {remote} -> {local}  open {open_} total {total} "
                    f"in {bytes_in} out {bytes_out}" + (f"\n{reason}" if reason else ""))
        self.query_one("#port-detail", Static).update(text)

    @on(DataTable.RowHighlighted, "#ports")
    def _port_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._render_port_detail(event.data_table)

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
        self.set_focus(box)  # now, not deferred as focus() is: the keys typed right after `/` belong in the box

    def action_clear_filter(self) -> None:
        box = self.query_one("#port-filter", Input)
        box.value = ""
        box.add_class("hidden")
        self._render_ports()
        self.query_one("#menu", OptionList).focus()

    @on(Input.Changed, "#port-filter")
    def _filter_changed(self) -> None:
        self._render_ports()

    @on(Input.Submitted, "#port-filter")
    def _filter_done(self) -> None:
        self.query_one("#ports", DataTable).focus()
