"""Operations: the operation log, newest first, 20 at a time; a start and end date; one entry's details; export."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from console.core.dates import local_text, local_zone, parse_when, to_ms, utc_text
from console.core.errors import ConsoleError
from console.core.status import OpEntry
from console.ui.messages import OperationRecorded, StatusChanged, follow
from console.ui.widgets.daemon_bar import DaemonBar
from console.ui.widgets.fitted_table import Col, FittedTable

if TYPE_CHECKING:
    from textual.signal import Signal

    from console.ui.session import Session

PAGE = 20
MORE = "more"   # the key of the "load more" row at the end
COLUMNS = (Col("time", 0), Col("who", 2), Col("from", 3), Col("action", 0), Col("target", 1), Col("outcome", 0),
           Col("ms", 4))


class OperationsScreen(Screen):
    """The operation log: 20 entries, `l` (or enter on the last row) the next 20; a start / end date (a date
    that is not one is refused in place, saying why); enter shows an entry's details (c copies them); e exports
    the entries shown. While it shows the newest entries, a new operation appears at the top as it happens."""

    DEFAULT_CSS = """
    #ops-title { height: 1; padding: 0 1; text-style: bold; color: $accent; }
    #ops-dates { height: 1; padding: 0 1; }
    #ops-dates Label { width: auto; padding: 0 1 0 0; }
    #ops-dates Input { width: 26; margin-right: 2; }
    #ops-date-error { height: auto; padding: 0 1; color: $error; display: none; }
    #ops { height: 1fr; border: round $primary; overflow-x: hidden; }
    #ops-detail { height: 2; padding: 0 1; }
    """

    BINDINGS = [
        Binding("l", "more", "Load more", tooltip="the next 20 entries (also enter on the last row)",
                id="ops.more"),
        Binding("e", "export", "Export", tooltip="write the entries shown to a file: columns, CSV or JSON",
                id="ops.export"),
        Binding("d", "dates", "Dates", tooltip="the start and end date (enter applies; esc back to the list)",
                id="ops.dates"),
        Binding("escape", "back", "Back", tooltip="back to the main screen (from the date bar: back to the list)",
                id="ops.back"),
        Binding("j", "cursor('down')", "Down", show=False, tooltip="down (as the arrow)", id="ops.down"),
        Binding("k", "cursor('up')", "Up", show=False, tooltip="up (as the arrow)", id="ops.up"),
    ]

    def __init__(self, session: Session, changes: Signal[OperationRecorded], status: Signal[StatusChanged]) -> None:
        super().__init__()
        self.session = session
        self._changes = changes
        self._status = status  # followed by the bar that says when the daemon is gone
        self.entries: list[OpEntry] = []     # what is shown, newest first
        self.next_before: int | None = None  # where the next page starts (None: no more)
        self.since: str | None = None        # the date bar, as UTC text (None: open)
        self.until: str | None = None
        self._until_ms: int | None = None
        self._busy = asyncio.Lock()          # one fetch at a time: load more, a new date range, a new entry
        self._generation = 0                 # a new date range makes what older fetches bring stale
        self.loaded = asyncio.Event()        # the first page is on screen

    def compose(self) -> ComposeResult:
        yield DaemonBar(self.session, self._status)
        yield Static(f"Operations: newest first, times in {local_zone()}", id="ops-title")
        with Horizontal(id="ops-dates"):
            yield Label("from")
            yield Input(placeholder="2026-11-20, -7d", id="ops-since", compact=True)
            yield Label("to")
            yield Input(placeholder="now", id="ops-until", compact=True)
        yield Static("", id="ops-date-error")
        yield FittedTable(COLUMNS, id="ops", cursor_type="row")
        yield Static("", id="ops-detail")
        yield Footer()

    def on_mount(self) -> None:
        follow(self._changes, self)
        self.query_one("#ops", FittedTable).focus()
        self._fetch("first")

    # ------------------------------------------------------------------ fetching

    @work(group="ops")
    async def _fetch(self, what: str) -> None:
        """"first": the newest page for the date range; "more": the page after the last entry shown; "new":
        the entries newer than the first shown (a new operation, while the newest are shown)."""
        async with self._busy:
            generation = self._generation
            try:
                entries, next_before = await self._page(what)
            except ConsoleError as exc:
                self._say(f"✖ {exc.message}")
                return
            if generation != self._generation:  # the date range changed meanwhile: its own fetch shows it
                return
            self.entries, self.next_before = entries, next_before
            try:
                self._show()
            except NoMatches:  # the screen was closed while it fetched
                return
            self.loaded.set()

    async def _page(self, what: str) -> tuple[list[OpEntry], int | None]:
        """What the list holds after `what`, and where the next page starts."""
        if what == "new" and self.entries:
            entries, _, overflow = await self.session.ops_page(self.since, self.until, after=self.entries[0].id,
                                                               limit=PAGE * 5)
            if not overflow:
                return entries + self.entries, self.next_before
        elif what == "more" and self.next_before is not None:
            entries, more, _ = await self.session.ops_page(self.since, self.until, before=self.next_before,
                                                           limit=PAGE)
            return self.entries + entries, more
        entries, more, _ = await self.session.ops_page(self.since, self.until, limit=PAGE)
        return entries, more

    def _show(self) -> None:
        table = self.query_one("#ops", FittedTable)
        selected = self._selected_key()
        rows = {str(e.id): _row(e) for e in self.entries}
        if self.next_before is not None:
            rows[MORE] = ("▼ 20 more: l", "", "", "", "", "", "")
        table.show(rows)
        if selected in rows:  # the cursor stays on its entry when new ones come in above it
            table.move_cursor(row=list(rows).index(selected))
        shown = f"{len(self.entries)} shown" + (", more with l" if self.next_before is not None else ", all")
        self.query_one("#ops-title", Static).update(
            f"Operations: newest first, times in {local_zone()}   {shown}" if self.entries else
            f"Operations: none recorded{' in these dates' if self.since or self.until else ''}")
        self._detail()

    def _selected_key(self) -> str | None:
        table = self.query_one("#ops", FittedTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def selected(self) -> OpEntry | None:
        key = self._selected_key()
        return next((e for e in self.entries if str(e.id) == key), None)

    def _detail(self) -> None:
        entry = self.selected()
        if entry is None:
            text = "l or enter: the next 20" if self._selected_key() == MORE else ""
        else:
            text = f"{entry.id}: {entry.outcome_text}" + (f": {entry.reason}" if entry.reason else "") + \
                   f"; {entry.who_text} via {entry.via}\n{entry.details_text()}"
        self._say(text)

    def _say(self, text: str) -> None:
        try:
            self.query_one("#ops-detail", Static).update(text)
        except NoMatches:
            pass

    # ------------------------------------------------------------------ live

    @on(OperationRecorded)
    def _recorded(self, message: OperationRecorded) -> None:
        """A new entry: fetched when the newest are shown (no end date, or one still ahead)."""
        if self._until_ms is None or self._until_ms > time.time() * 1000:
            self._fetch("new" if message.entry_id is not None else "first")

    # ------------------------------------------------------------------ the date bar

    @on(Input.Submitted, "#ops-since, #ops-until")
    def _dates_given(self) -> None:
        since_text = self.query_one("#ops-since", Input).value.strip()
        until_text = self.query_one("#ops-until", Input).value.strip()
        try:
            since = parse_when(since_text, "from") if since_text else None
            try:
                until = parse_when(until_text, "to") if until_text else None
            except ConsoleError:
                self.query_one("#ops-until", Input).focus()
                raise
        except ConsoleError as exc:
            self._date_error(exc.message)
            return
        if since is not None and until is not None and since >= until:
            self.query_one("#ops-until", Input).focus()
            self._date_error(f"to: must be after from ({local_text(utc_text(since))})")
            return
        self._date_error("")
        self.since = utc_text(since) if since else None
        self.until = utc_text(until) if until else None
        self._until_ms = to_ms(until) if until else None
        self._generation += 1
        self.entries, self.next_before = [], None
        self.query_one("#ops", FittedTable).focus()
        self._fetch("first")

    def _date_error(self, text: str) -> None:
        error = self.query_one("#ops-date-error", Static)
        error.update(f"✖ {text}" if text else "")
        error.display = bool(text)

    # ------------------------------------------------------------------ keys

    @on(DataTable.RowHighlighted, "#ops")
    def _highlighted(self) -> None:
        self._detail()

    @on(DataTable.RowSelected, "#ops")
    def _chosen(self) -> None:
        if self._selected_key() == MORE:
            self.action_more()
            return
        entry = self.selected()
        if entry is not None:
            from console.ui.dialogs.op_details import OpDetailsScreen

            self.app.push_screen(OpDetailsScreen(entry))

    def action_more(self) -> None:
        if self.next_before is not None:
            self._fetch("more")

    def action_export(self) -> None:
        from console.ui.dialogs.export import ExportScreen

        self.app.push_screen(ExportScreen(list(self.entries)))

    def action_dates(self) -> None:
        self.query_one("#ops-since", Input).focus()

    def action_back(self) -> None:
        if isinstance(self.focused, Input):
            self.query_one("#ops", FittedTable).focus()
            return
        self.dismiss()

    def action_cursor(self, direction: str) -> None:
        getattr(self.query_one("#ops", FittedTable), f"action_cursor_{direction}")()


def _row(entry: OpEntry) -> tuple[str, ...]:
    shown = local_text(entry.at)  # '2026-11-20 10:00:05': the year left out, as the other tables do
    # who without the SSH address (the line under the table has it): a long column would push others out
    return (shown[5:], entry.who, entry.via, entry.action, entry.target or "-", entry.outcome_text,
            f"{entry.duration_ms:g}")
