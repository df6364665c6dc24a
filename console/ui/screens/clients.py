"""Clients (the hub): each customer's ports, what it forwards now and where each port leads."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from console.core.errors import ConsoleError
from console.core.states import human_bytes
from console.core.status import ClientStatus
from console.ui.dialogs.ask import AskScreen, SecretScreen
from console.ui.dialogs.confirm import ConfirmScreen
from console.ui.messages import ClientChanged, StatusChanged, follow
from console.ui.widgets.daemon_bar import DaemonBar
from console.ui.widgets.fitted_table import Col, FittedTable
from console.ui.widgets.tables import short_time

if TYPE_CHECKING:
    from textual.signal import Signal

    from console.ui.session import Session


# The tables' columns, with the order they are dropped in when the width is short (the highest rank first); the
# line under the tables says what a narrow terminal leaves out (the quota, the forwards' count).
CLIENT_COLUMNS = (Col("client", 0), Col("state", 0), Col("quota", 4), Col("ports", 1), Col("online", 0),
                  Col("fwd", 3), Col("last seen", 2))
FORWARD_COLUMNS = (Col("port", 0), Col("name", 1), Col("open", 2), Col("total", 5), Col("in", 3), Col("out", 4),
                   Col("leads to", 0))


class ClientsScreen(Screen):
    """Clients (the hub): each customer's ports and, for the highlighted one, what it forwards now and where
    each port leads (what its unit announced). Live from the hub's ClientChanged events; add, change quota,
    disable, remove."""

    BINDINGS = [
        Binding("a", "add", "Add", id="clients.add"),
        Binding("c", "change", "Quota", id="clients.change"),
        Binding("d", "disable", "Disable", id="clients.disable"),
        Binding("x,delete", "remove", "Remove", id="clients.remove"),
        Binding("escape", "back", "Back", id="clients.back"),
        Binding("j", "cursor('down')", "Down", show=False, id="clients.down"),
        Binding("k", "cursor('up')", "Up", show=False, id="clients.up"),
    ]
    FULL_RELOAD_OVER = 10  # more clients changed at once than this: one list of all instead of one request each

    def __init__(self, session: Session, changes: Signal[ClientChanged], status: Signal[StatusChanged]) -> None:
        super().__init__()
        self.session = session
        self._changes = changes
        self._status = status  # followed by the bar that says when the daemon is gone
        self._clients: dict[str, ClientStatus] = {}   # id -> the client as the daemon last described it
        self._stale: set[str] | None = None   # ids to fetch again; None: all of them
        self._loading = False

    def compose(self) -> ComposeResult:
        yield DaemonBar(self.session, self._status)  # shown only while the daemon is gone
        yield Static("Clients (hub)", id="clients-title")
        yield FittedTable(CLIENT_COLUMNS, id="clients", cursor_type="row")
        yield FittedTable(FORWARD_COLUMNS, id="client-forwards", cursor_type="none")
        yield Static("", id="client-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#clients").focus()
        follow(self._changes, self)
        self.reload()

    @on(ClientChanged)
    def _client_changed(self, message: ClientChanged) -> None:
        self.client_changed(message.client_id)

    def client_changed(self, client_id: str | None) -> None:
        """A client changed (None: any may have): fetch it again, once the fetch under way is done."""
        if client_id is None or self._stale is None or len(self._stale) >= self.FULL_RELOAD_OVER:
            self._stale = None
        else:
            self._stale.add(client_id)
        if not self._loading:
            self._loading = True  # now, not when the worker starts: a second event must not start another
            self._load()

    def reload(self) -> None:
        self.client_changed(None)

    @work(group="clients")
    async def _load(self) -> None:
        try:
            while self._stale != set():
                wanted, self._stale = self._stale, set()
                try:
                    try:
                        await self._fetch(wanted)
                    except ConsoleError as exc:
                        self.query_one("#client-detail", Static).update(f"✖ {exc.message}")
                        return
                    self._show_clients()
                except NoMatches:  # the screen was taken down (esc, or the console quit) while it fetched
                    return
        finally:
            self._loading = False

    async def _fetch(self, wanted: set[str] | None) -> None:
        if wanted is None:
            self._clients = {c.id: c for c in await self.session.clients_list()}
            return
        for client_id in wanted:
            listed = await self.session.clients_list(client_id)
            found = next((c for c in listed if c.id == client_id), None)
            if found is not None:
                self._clients[client_id] = found
            else:
                self._clients.pop(client_id, None)

    def _show_clients(self) -> None:
        rows = {}
        for client_id in sorted(self._clients):
            c = self._clients[client_id]
            rows[client_id] = (client_id, "● enabled" if c.enabled else "■ disabled", str(c.quota),
                               c.port_ranges or "-", "● yes" if c.connected else "○ no",
                               str(len(c.forwards)), short_time(c.last_seen) or "never")
        self.query_one("#clients", FittedTable).show(rows)
        self._detail()

    def _detail(self) -> None:
        """The highlighted client's live forwards and key, from what was fetched: the cursor asks nothing."""
        client = self._clients.get(self._selected() or "")
        forwards = {}
        for f in client.forwards if client else []:
            forwards[str(f.port)] = (str(f.port), f.name or "-", str(f.open), str(f.total), human_bytes(f.bytes_in),
                                     human_bytes(f.bytes_out), f.destination or "(not announced)")
        table = self.query_one("#client-forwards", FittedTable)
        table.show(forwards)
        table.border_title = f"{client.id}: forwarded now" if client else "forwarded now"
        text = "no clients yet: a adds one" if not self._clients else ""
        if client is not None:
            sessions = sorted({f.session for f in client.forwards})
            text = (f"{client.id}: key {client.fingerprint}\nquota {client.quota}, ports {client.port_ranges or 'none'}"
                    + (f"; session from {', '.join(sessions)}" if sessions else ""))
        self.query_one("#client-detail", Static).update(text)

    def _selected(self) -> str | None:
        table = self.query_one("#clients", FittedTable)
        if not table.row_count:
            return None
        return str(table.ordered_rows[table.cursor_row].key.value)

    async def _ask_hub(self, client_id: str, done: str, request: Awaitable[Any]) -> Any:
        """Carry out one request about a client; say how it went, and fetch that client again at once (not only
        when the hub's event comes). None when it failed."""
        try:
            result = await request
        except ConsoleError as exc:
            self.notify(exc.message, severity="error", timeout=10)
            return None
        self.notify(done)
        self.client_changed(client_id)
        return result

    def action_add(self) -> None:
        self.app.hold_keys()  # the client_id typed right after `a`, in the same burst, belongs in the dialog
        self._add_client()

    @work(group="clients-action")
    async def _add_client(self) -> None:
        client_id = await self.app.push_screen_wait(AskScreen("Add a client: its client_id", "e.g. acme"))
        if not client_id:
            return
        result = await self._ask_hub(client_id, f"client {client_id} added", self.session.clients_add(client_id))
        if result and result.get("private_key"):
            await self.app.push_screen_wait(SecretScreen(f"The private key of {client_id}", result["private_key"]))

    def action_change(self) -> None:
        if self._selected() is not None:
            self.app.hold_keys()  # the quota typed right after `c` belongs in the dialog
            self._change_quota()

    @work(group="clients-action")
    async def _change_quota(self) -> None:
        client_id = self._selected()
        if client_id is None:
            return
        answer = await self.app.push_screen_wait(AskScreen(
            f"Ports for {client_id} (0 disables)", "e.g. 20",
            refuse=lambda text: None if text.isascii() and text.isdigit()
            else f"a number of ports (0-9 only), not {text!r}"))
        if answer is None:
            return
        if int(answer) == 0 and not await self._confirm_disable(client_id):
            return
        await self._ask_hub(client_id, f"{client_id}: quota {answer}",
                            self.session.clients_change(client_id, int(answer)))

    @work(group="clients-action")
    async def action_disable(self) -> None:
        client_id = self._selected()
        if client_id and await self._confirm_disable(client_id):
            await self._ask_hub(client_id, f"{client_id} disabled", self.session.clients_change(client_id, 0))

    async def _confirm_disable(self, client_id: str) -> bool:
        return bool(await self.app.push_screen_wait(ConfirmScreen(
            f"Disable {client_id}?", "Its live sessions end at once; the record and key stay.")))

    @work(group="clients-action")
    async def action_remove(self) -> None:
        client_id = self._selected()
        if client_id and await self.app.push_screen_wait(ConfirmScreen(
                f"Remove {client_id}?", "Its sessions end at once and its ports go back to the pool.")):
            await self._ask_hub(client_id, f"{client_id} removed", self.session.clients_remove(client_id))

    @on(DataTable.RowHighlighted, "#clients")
    def _highlighted(self) -> None:
        self._detail()

    def action_cursor(self, direction: str) -> None:
        getattr(self.query_one("#clients", DataTable), f"action_cursor_{direction}")()

    def action_back(self) -> None:
        self.dismiss()
