"""The console's screens: the subsystem menu with units and ports, and the dialogs behind each item."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from console.core.errors import ConsoleError
from console.core.states import human_bytes, label
from console.ui.log_view import LogView

if TYPE_CHECKING:
    from console.ui.app import SopConsole

MENU = (
    ("1", "install_key", "Install ssh key"),
    ("2", "start", "Start"),
    ("3", "stop", "Stop"),
    ("4", "view_log", "View log"),
    ("5", "configure", "Configure"),
    ("6", "trust", "Trust host key"),
    ("7", "clients", "Clients"),
)
QUIT_NOTE = "q quits the console; the tunnels keep running"


class MainScreen(Screen):
    """SOP Shell > Subsystems > 3rd Party Connection, with the units and their ports, live."""

    BINDINGS = [
        *(Binding(key, f"menu('{action}')", text, show=False, id=f"menu.{action}") for key, action, text in MENU),
        Binding("u", "next_unit", "Unit", id="main.unit"),
        Binding("slash", "filter", "Filter", id="main.filter"),
        Binding("escape", "clear_filter", "Clear", show=False, id="main.clear"),
        Binding("j", "cursor('down')", "Down", show=False, id="main.down"),
        Binding("k", "cursor('up')", "Up", show=False, id="main.up"),
    ]

    app: SopConsole
    _ready = False  # set once the tables have their columns: events may arrive before that

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="menu-box"):
                yield Static("", id="menu-title")
                yield OptionList(*(Option(f"{key} {text}", id=action) for key, action, text in MENU), id="menu")
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
        self._ready = True
        self.render_status()
        self.query_one("#menu", OptionList).focus()

    # ------------------------------------------------------------------ rendering

    def render_status(self) -> None:
        if not self._ready:
            return  # on_mount renders what the app has by then
        status = self.app.status
        selected = self.app.selected_unit
        self.query_one("#menu-title", Static).update(f"3rd Party Connection\nunit: {selected or 'none'}")
        unit_rows = {unit["name"]: (unit["name"], label(unit["state"]), _time(unit["since"]),
                                    _time(unit.get("next_retry")) or "-") for unit in status.get("units", [])}
        units = self.query_one("#units", DataTable)
        if _fill(units, unit_rows) and selected in unit_rows:
            units.move_cursor(row=list(unit_rows).index(selected))
        unit = self.app.unit_status(selected)
        detail = ""
        if unit is not None:
            detail = f"{unit['name']}: {unit['username']}@{unit['server']}  "
            if unit.get("server_key"):
                detail += f"server key {unit['server_key']}: "
            detail += unit["last_error"] or "no error"
        self.query_one("#unit-detail", Static).update(detail)
        self._render_ports()

    def _render_ports(self) -> None:
        needle = self.query_one("#port-filter", Input).value.strip().lower()
        port_rows = {}
        for unit in self.app.status.get("units", []):
            for fwd in unit["forwards"]:
                cells = (unit["name"], fwd["name"], label(fwd["state"]), fwd["remote"], fwd["local"],
                         str(fwd["open"]), str(fwd["total"]), human_bytes(fwd["bytes_in"]),
                         human_bytes(fwd["bytes_out"]), fwd["error"] or "")
                if not needle or any(needle in c.lower() for c in cells):
                    port_rows[f"{unit['name']}/{fwd['name']}"] = cells
        ports = self.query_one("#ports", DataTable)
        _fill(ports, port_rows)
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
        if event.row_key is not None and event.row_key.value != self.app.selected_unit:
            self.app.selected_unit = event.row_key.value
            self.render_status()

    @on(OptionList.OptionSelected, "#menu")
    def _menu_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_menu(event.option.id or "")

    def action_menu(self, action: str) -> None:
        self.app.run_menu_action(action)

    def action_next_unit(self) -> None:
        names = [u["name"] for u in self.app.status.get("units", [])]
        if names:
            current = self.app.selected_unit
            self.app.selected_unit = names[(names.index(current) + 1) % len(names)] if current in names else names[0]
            self.render_status()

    def action_cursor(self, direction: str) -> None:
        widget = self.focused
        method = getattr(widget, f"action_cursor_{direction}", None)
        if method is not None:
            method()

    def action_filter(self) -> None:
        box = self.query_one("#port-filter", Input)
        box.remove_class("hidden")
        box.focus()

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


def _fill(table: DataTable, wanted: dict[str, tuple[str, ...]]) -> bool:
    """Show `wanted` (row key -> cells). Cells change in place while the rows stay the same, so the cursor
    (and with it the operator's selection) never moves because of an update. True if rows were rebuilt."""
    keys = [row.key.value for row in table.ordered_rows]
    if keys == list(wanted):
        columns = [column.key for column in table.ordered_columns]
        for key, cells in wanted.items():
            for column, value in zip(columns, cells, strict=True):
                if table.get_cell(key, column) != value:
                    table.update_cell(key, column, value, update_width=True)  # "54 B" -> "108 B" fits
        return False
    row = table.cursor_row
    table.clear()
    for key, cells in wanted.items():
        table.add_row(*cells, key=key)
    if table.row_count:
        table.move_cursor(row=min(row, table.row_count - 1))
    return True


def _time(stamp: str | None) -> str:
    """'2026-11-22T10:00:00Z' -> '11-22 10:00:00': the date matters after a weekend, the year rarely."""
    if not stamp:
        return ""
    return f"{stamp[5:10]} {stamp[11:19]}"


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; No is the default (focused, and what esc answers)."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "No", id="confirm.no")]

    def __init__(self, question: str, detail: str = "", *, yes: str = "Yes", no: str = "No",
                 wide: bool = False) -> None:
        super().__init__()
        self.question, self.detail = question, detail
        self.yes_label, self.no_label, self.wide = yes, no, wide

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide" if self.wide else "dialog"):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-text")
            with Horizontal(classes="buttons"):
                yield Button(self.no_label, id="no", variant="primary")
                yield Button(self.yes_label, id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class InstallKeyScreen(ModalScreen[None]):
    """Install ssh key: the public key and fingerprint, a masked password, progress and the outcome."""

    BINDINGS = [Binding("escape", "close", "Close", id="install.close")]
    app: SopConsole

    def __init__(self, unit: str, key_line: str, fingerprint: str, target: str) -> None:
        super().__init__()
        self.unit = unit
        self.key_line = key_line
        self.fingerprint = fingerprint
        self.target = target

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Install ssh key: {self.unit} -> {self.target}", classes="dialog-title")
            yield Static(f"{self.fingerprint}\n{self.key_line}", id="key-text", classes="dialog-text")
            yield Input(placeholder="password on the server (not shown)", password=True, id="password")
            yield Static("Enter installs; if the key already works, no password is needed.", id="install-state")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close")
                yield Button("Install", id="install", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#password", Input).focus()

    @on(Input.Submitted, "#password")
    @on(Button.Pressed, "#install")
    def _install(self) -> None:
        box = self.query_one("#password", Input)
        password = box.value
        box.value = ""  # the secret lives no longer than the call that needs it
        self.query_one("#install-state", Static).update("◌ installing ...")
        self.query_one("#install", Button).disabled = True
        self._run_install(password)

    @work(exclusive=True, group="install")
    async def _run_install(self, password: str) -> None:
        try:
            outcome = await self.app.install_key(self.unit, password)
        except ConsoleError as exc:
            text = f"✖ failed: {exc.message}"
        else:
            text = f"● {outcome}"
        finally:
            password = ""
        self.query_one("#install-state", Static).update(text)
        self.query_one("#install", Button).disabled = False

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


class TrustScreen(ConfirmScreen):
    """Trust host key: the fingerprint the server presented, recorded only on confirmation (default Cancel)."""

    def __init__(self, unit: str, server: str, fingerprint: str | None, mismatch: bool) -> None:
        self.unit, self.server, self.fingerprint, self.mismatch = unit, server, fingerprint, mismatch
        if fingerprint:
            text = f"The server presents\n  {fingerprint}\nCompare it with the server's own " \
                   "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) before you trust it."
            if mismatch:
                text += "\nA changed key can mean an attack. Replace the recorded key only if you know why."
        else:
            text = "The unit has not been shown an untrusted key. Trusting fetches the key the server shows now."
        title = "HOST KEY CHANGED" if mismatch else "Trust host key"
        super().__init__(f"{title}: {unit} -> {server}", text, yes="Replace key" if mismatch else "Trust",
                         no="Cancel", wide=True)


class LogScreen(Screen):
    """View log: follow (FOLLOW / PAUSED badge), / filter (esc clears), ? search with n / N."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="log.back"),
        Binding("slash", "filter", "Filter", id="log.filter"),
        Binding("question_mark", "search", "Search", show=False, id="log.search"),
    ]
    app: SopConsole
    _mode = "filter"  # what the input line asks for: "filter" or "search"

    def compose(self) -> ComposeResult:
        with Horizontal(id="log-bar"):
            yield Static("tunnel log", id="log-title")
            yield Static("", id="log-badge")
        yield LogView(self.app.paths.tunnel_log, poll=self.app.poll_log, id="log")
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
        self.query_one("#log-badge", Static).update(text)

    @on(LogView.FollowChanged)
    def _follow_changed(self, event: LogView.FollowChanged) -> None:
        self._badge(event.following)

    def _ask(self, mode: str) -> None:
        box = self.query_one("#log-input", Input)
        box.placeholder = "show only lines containing (empty: all)" if mode == "filter" else "search for"
        self._mode = mode
        box.value = self.query_one(LogView).filter_text if mode == "filter" else ""
        box.remove_class("hidden")
        box.focus()

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
            self.app.pop_screen()


class NoDaemonScreen(Screen[bool]):
    """Shown when no daemon runs: offer to run the engine inside the console, clearly labelled."""

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
        self.app.exit()


class ConfigureScreen(Screen):
    """Configure: the seed's form for the server and both units, checked as `sop-console check` does."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", id="configure.save"),
                Binding("escape", "back", "Back", id="configure.back")]
    app: SopConsole

    def __init__(self, form, path: str | None) -> None:
        super().__init__()
        self.form = form
        self.path = path

    def compose(self) -> ComposeResult:
        from textual.containers import VerticalScroll
        from textual.widgets import Select

        form = self.form
        where = self.path or "no file (this console was started without one)"
        yield Static(f"Configure: {where}\nSaving rewrites it; comments are not kept (previous file: .bak).",
                     id="form-title")
        with VerticalScroll(id="form"):
            yield Label("SSH server", classes="form-section")
            yield from _field("SSH Server hostname", "host", form.host)
            yield from _field("SSH Server port", "port", form.port)
            with Horizontal(classes="form-row"):
                yield Label("Host key policy", classes="form-label")
                yield Select([(p, p) for p in ("strict", "accept-new")], value=form.host_key_policy,
                             allow_blank=False, compact=True, id="host_key_policy")
            for unit, entry in form.units.items():
                yield Label(f"{unit.capitalize()} unit", classes="form-section")
                yield from _field("username (default root)", f"{unit}-username", entry.username)
                yield from _field("target host", f"{unit}-target", entry.target)
                yield from _field("Forwarded ssh port", f"{unit}-ssh_port", entry.ssh_port)
                yield from _field("Forwarded http port", f"{unit}-http_port", entry.http_port)
                yield from _field("Forwarded app port", f"{unit}-app_port", entry.app_port)
                yield from _field("app port on target", f"{unit}-app_target_port", entry.app_target_port)
        yield Static("", id="form-errors")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#host", Input).focus()

    def _read(self):
        from textual.widgets import Select

        form = self.form
        form.host = self.query_one("#host", Input).value
        form.port = self.query_one("#port", Input).value
        form.host_key_policy = str(self.query_one("#host_key_policy", Select).value)
        for unit, entry in form.units.items():
            for key in ("username", "target", "ssh_port", "http_port", "app_port", "app_target_port"):
                setattr(entry, key, self.query_one(f"#{unit}-{key}", Input).value)
        return form

    @work(exclusive=True, group="configure")
    async def action_save(self) -> None:
        errors = self.query_one("#form-errors", Static)
        if self.path is None:
            errors.update("✖ nothing to save to: start the console with --config FILE")
            return
        try:
            await self.app.save_configuration(self._read())
        except ConsoleError as exc:
            problems = getattr(exc, "problems", [exc.message])
            errors.update("✖ not saved:\n" + "\n".join(problems))
            return
        self.dismiss()

    def action_back(self) -> None:
        self.dismiss()


def _field(label_text: str, field_id: str, value: str):
    with Horizontal(classes="form-row"):
        yield Label(label_text, classes="form-label")
        yield Input(value=value, id=field_id, compact=True)


class AskScreen(ModalScreen[str | None]):
    """One line of input (a client_id, a quota); esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="ask.cancel")]

    def __init__(self, question: str, placeholder: str = "") -> None:
        super().__init__()
        self.question, self.placeholder = question, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            yield Input(placeholder=self.placeholder, id="answer")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    @on(Input.Submitted, "#answer")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SecretScreen(ModalScreen[None]):
    """A private key, shown this once."""

    BINDINGS = [Binding("escape,enter", "close", "Close", id="secret.close")]

    def __init__(self, title: str, secret: str) -> None:
        super().__init__()
        self.title_text, self.secret = title, secret

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static("Copy it now with your terminal (select, copy) and hand it over securely: it is shown "
                         "this once and nothing keeps it.", classes="dialog-text")
            yield Static(self.secret.strip(), id="secret")
            with Horizontal(classes="buttons"):
                yield Button("I have copied it", id="close", variant="primary")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.secret = ""
        self.dismiss(None)


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
    app: SopConsole
    FULL_RELOAD_OVER = 10  # more clients changed at once than this: one list of all instead of one request each

    def __init__(self) -> None:
        super().__init__()
        self._clients: dict[str, dict] = {}   # id -> the client as the daemon last described it
        self._stale: set[str] | None = None   # ids to fetch again; None: all of them
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Static("Clients (hub)", id="clients-title")
        yield DataTable(id="clients", cursor_type="row")
        yield DataTable(id="client-forwards", cursor_type="none")
        yield Static("", id="client-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#clients", DataTable)
        table.add_columns("client", "state", "quota", "ports", "online", "fwd", "last seen")
        self.query_one("#client-forwards", DataTable).add_columns(
            "port", "name", "open", "total", "in", "out", "leads to")  # last: a long URI is cut, not the counters
        table.focus()
        self.reload()

    def client_changed(self, client_id: str | None) -> None:
        """The hub says a client changed (None: any may have): fetch it again, once the fetch under way is done."""
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
            result = await self.app.backend.request("clients", action="list")
            listed = result.get("clients", []) if isinstance(result, dict) else []
            self._clients = {c["id"]: c for c in listed}
            return
        for client_id in wanted:
            try:
                result = await self.app.backend.request("clients", action="list", id=client_id)
            except ConsoleError as exc:
                if exc.exit_code != 2:  # 2: no such client (removed): drop its row
                    raise
                result = {}
            listed = result.get("clients", []) if isinstance(result, dict) else []
            found = next((c for c in listed if c["id"] == client_id), None)
            if found is not None:
                self._clients[client_id] = found
            else:
                self._clients.pop(client_id, None)

    def _show_clients(self) -> None:
        rows = {}
        for client_id in sorted(self._clients):
            c = self._clients[client_id]
            rows[client_id] = (client_id, "● enabled" if c["enabled"] else "■ disabled", str(c["quota"]),
                               c["port_ranges"] or "-", "● yes" if c["connected"] else "○ no",
                               str(len(c["forwards"])), _time(c["last_seen"]) or "never")
        _fill(self.query_one("#clients", DataTable), rows)
        self._detail()

    def _detail(self) -> None:
        """The highlighted client's live forwards and key, from what was fetched: the cursor asks nothing."""
        client = self._clients.get(self._selected() or "")
        forwards = {}
        for f in client["forwards"] if client else []:
            forwards[str(f["port"])] = (str(f["port"]), f.get("name") or "-", str(f["open"]), str(f["total"]),
                                        human_bytes(f["bytes_in"]), human_bytes(f["bytes_out"]),
                                        f["destination"] or "(not announced)")
        table = self.query_one("#client-forwards", DataTable)
        _fill(table, forwards)
        table.border_title = f"{client['id']}: forwarded now" if client else "forwarded now"
        text = "no clients yet: a adds one" if not self._clients else ""
        if client is not None:
            sessions = sorted({f["session"] for f in client["forwards"]})
            text = (f"{client['id']}: key {client['fingerprint']}\nports {client['port_ranges'] or 'none'}"
                    + (f"; session from {', '.join(sessions)}" if sessions else ""))
        self.query_one("#client-detail", Static).update(text)

    def _selected(self) -> str | None:
        table = self.query_one("#clients", DataTable)
        if not table.row_count:
            return None
        return str(table.get_row_at(table.cursor_row)[0])

    async def _request(self, done: str, **args) -> dict | None:
        try:
            result = await self.app.backend.request("clients", **args)
        except ConsoleError as exc:
            self.notify(exc.message, severity="error", timeout=10)
            return None
        self.notify(done)
        self.client_changed(args["id"])  # at once, not only when the hub's event comes
        return result

    @work(group="clients-action")
    async def action_add(self) -> None:
        client_id = await self.app.push_screen_wait(AskScreen("Add a client: its client_id", "e.g. acme"))
        if not client_id:
            return
        result = await self._request(f"client {client_id} added", action="add", id=client_id)
        if result and result.get("private_key"):
            await self.app.push_screen_wait(SecretScreen(f"The private key of {client_id}", result["private_key"]))

    @work(group="clients-action")
    async def action_change(self) -> None:
        client_id = self._selected()
        if client_id is None:
            return
        answer = await self.app.push_screen_wait(AskScreen(f"Ports for {client_id} (0 disables)", "e.g. 20"))
        if answer is None:
            return
        if not answer.isdigit():
            self.notify(f"a number of ports, not {answer!r}", severity="error")
            return
        if int(answer) == 0 and not await self.app.push_screen_wait(ConfirmScreen(
                f"Disable {client_id}?", "Its live sessions end at once; the record and key stay.")):
            return
        await self._request(f"{client_id}: quota {answer}", action="change", id=client_id, quota=int(answer))

    @work(group="clients-action")
    async def action_disable(self) -> None:
        client_id = self._selected()
        if client_id and await self.app.push_screen_wait(ConfirmScreen(
                f"Disable {client_id}?", "Its live sessions end at once; the record and key stay.")):
            await self._request(f"{client_id} disabled", action="change", id=client_id, quota=0)

    @work(group="clients-action")
    async def action_remove(self) -> None:
        client_id = self._selected()
        if client_id and await self.app.push_screen_wait(ConfirmScreen(
                f"Remove {client_id}?", "Its sessions end at once and its ports go back to the pool.")):
            await self._request(f"{client_id} removed", action="remove", id=client_id)

    @on(DataTable.RowHighlighted, "#clients")
    def _highlighted(self) -> None:
        self._detail()

    def action_cursor(self, direction: str) -> None:
        getattr(self.query_one("#clients", DataTable), f"action_cursor_{direction}")()

    def action_back(self) -> None:
        self.app.pop_screen()
