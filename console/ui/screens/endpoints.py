"""Endpoints: the SSH servers units (and rules) go through, each with its auth status and, when unavailable, why
and what to do; check, set-up auth, the sshd check, scope (associate, unassociate) and remove."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from console.core.endpoints import EndpointUsers
from console.core.errors import ConsoleError
from console.core.states import EndpointReason, EndpointState
from console.core.status import EndpointCheck, EndpointStatus
from console.core.words import counted
from console.ui.dialogs.confirm import ConfirmScreen
from console.ui.messages import EndpointChanged, StatusChanged, follow
from console.ui.widgets.daemon_bar import DaemonBar
from console.ui.widgets.fitted_table import Col, FittedTable
from console.ui.widgets.tables import age, short_time

if TYPE_CHECKING:
    from textual.signal import Signal

    from console.ui.session import Session

# The list's columns, dropped by rank when the width is short (the highest rank first).
COLUMNS = (Col("✓", 0), Col("state", 0), Col("endpoint", 0), Col("address", 1), Col("used by", 3),
           Col("checked", 2), Col("user", 4), Col("source", 5))
MARK = "✓"
CHECKING = "◌ checking"
AGES_EVERY = 20.0  # seconds: the "checked ... ago" column is redrawn this often
SOURCES = {"config": "in the config", "runtime": "added at run time"}
# what the console offers for an unavailable endpoint, by reason, after the check's own hint
NEXT_KEY = {EndpointReason.PUBLICKEY: "s sets up auth", EndpointReason.NO_KEY: "s sets up auth",
            EndpointReason.HOST_KEY_UNKNOWN: "s sets up auth, trusting the key it presents once you compared it"}


class EndpointsScreen(Screen):
    """Endpoints: the list (status glyph and word, name, address, who uses it, when last checked), the highlighted
    one in full below with the hint of an unavailable one; live from the daemon's EndpointChanged events. Space
    marks several for a batch check or remove."""

    BINDINGS = [
        Binding("c", "check", "Check", tooltip="check the login now: the highlighted endpoint, or every one marked",
                id="endpoints.check"),
        Binding("s", "setup", "Set up", tooltip="set up auth for the highlighted endpoint: by key, password or script",
                id="endpoints.setup"),
        Binding("x", "sshd", "sshd", tooltip="the sshd check: its settings against what the forwards need; Fix",
                id="endpoints.sshd"),
        Binding("a", "associate", "Assoc", tooltip="associate VPCs or subnets with the endpoint (its scope)",
                id="endpoints.associate"),
        Binding("u", "unassociate", "Unassoc", tooltip="unassociate scope entries (several, marked with space)",
                id="endpoints.unassociate"),
        Binding("d,delete", "remove", "Remove",
                tooltip="remove the endpoint, or every one marked (asks first; refused while units or rules use it)",
                id="endpoints.remove"),
        # not in the footer (80 columns hold the rest): the title line says what space does
        Binding("space", "mark", "Mark", show=False,
                tooltip="mark or unmark the highlighted endpoint, for a batch check or remove", id="endpoints.mark"),
        Binding("escape", "back", "Back", show=False, tooltip="back to the main screen", id="endpoints.back"),
        Binding("j", "cursor('down')", "Down", show=False, id="endpoints.down"),
        Binding("k", "cursor('up')", "Up", show=False, id="endpoints.up"),
    ]

    def __init__(self, session: Session, changes: Signal[EndpointChanged], status: Signal[StatusChanged]) -> None:
        super().__init__()
        self.session = session
        self._changes = changes
        self._status = status  # followed by the bar that says when the daemon is gone
        self.endpoints: dict[str, EndpointStatus] = {}  # name -> as the daemon last described it, in its order
        self.marked: set[str] = set()
        self.checking: set[str] = set()  # names a check asked from here is running for
        self._stale = False  # an event came while a fetch was under way: fetch again once it is done
        self._loading = False

    def compose(self) -> ComposeResult:
        yield DaemonBar(self.session, self._status)  # shown only while the daemon is gone
        yield Static("Endpoints", id="endpoints-title")
        yield FittedTable(COLUMNS, id="endpoints", cursor_type="row")
        yield Static("", id="endpoints-said")  # what the last action came to, said in place
        with VerticalScroll(id="endpoint-detail-box"):
            yield Static("", id="endpoint-detail")
        yield Footer(compact=True)  # the keys, help's and the palette's in 80 columns

    def on_mount(self) -> None:
        self.query_one("#endpoints", FittedTable).focus()
        follow(self._changes, self)
        self.set_interval(AGES_EVERY, self._show)
        self.reload()

    # ------------------------------------------------------------------ what the daemon says

    @on(EndpointChanged)
    def _endpoint_changed(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Fetch every endpoint again (an endpoint changed, or any may have), once the fetch under way is done."""
        self._stale = True
        if not self._loading:
            self._loading = True  # now, not when the worker starts: a second event must not start another
            self._load()

    @work(group="endpoints")
    async def _load(self) -> None:
        try:
            while self._stale:
                self._stale = False
                try:
                    try:
                        listed = await self.session.endpoints_list()
                    except ConsoleError as exc:
                        self.say(f"✖ {exc.message}")
                        return
                    self.endpoints = {e.name: e for e in listed}
                    self.marked &= set(self.endpoints)
                    self._show()
                except NoMatches:  # the screen was taken down (esc, or the console quit) while it fetched
                    return
        finally:
            self._loading = False

    # ------------------------------------------------------------------ showing

    def _show(self) -> None:
        if not self.is_attached:  # closed while a request was under way
            return
        now = self.session.clock()
        rows = {}
        for name, e in self.endpoints.items():
            state = CHECKING if name in self.checking else e.state.label
            checked = (age(e.last_check.checked_at, now) or "?") if e.last_check else "never"
            rows[name] = (MARK if name in self.marked else "", state, name, e.address, used_by(e) or "-", checked,
                          e.username, e.source)
        self.query_one("#endpoints", FittedTable).show(rows)
        unavailable = sum(e.state is EndpointState.UNAVAILABLE for e in self.endpoints.values())
        title = f"Endpoints: {len(self.endpoints)}" + (f", {unavailable} unavailable" if unavailable else "")
        title += f"   {len(self.marked)} marked: c checks them, d removes them" if self.marked else \
            "   space marks several"
        self.query_one("#endpoints-title", Static).update(title)
        self._detail()

    def _detail(self) -> None:
        """The highlighted endpoint in full, from what was fetched: the cursor asks nothing."""
        endpoint = self.endpoints.get(self.selected() or "")
        text = Content("no endpoints: add one with `sop-console endpoints add NAME --host HOST`, or in the config"
                       if not self.endpoints else "")
        if endpoint is not None:  # plain text (what a server said is no markup); why it is unavailable stands out
            text = Content("\n").join(Content.styled(line, "$warning") if problem else Content(line)
                                      for line, problem in detail_lines(endpoint, self.session.clock()))
        self.query_one("#endpoint-detail", Static).update(text)

    def say(self, text: str) -> None:
        """What an action came to, in place under the list (until the next one)."""
        if not self.is_attached:
            return
        said = self.query_one("#endpoints-said", Static)
        said.update(Content(text))
        said.display = bool(text)

    def selected(self) -> str | None:
        table = self.query_one("#endpoints", FittedTable)
        if not table.row_count:
            return None
        return table.ordered_rows[table.cursor_row].key.value

    def chosen(self) -> list[str]:
        """What a batch action acts on: the marked endpoints (in the list's order), else the highlighted one."""
        if self.marked:
            return [name for name in self.endpoints if name in self.marked]
        name = self.selected()
        return [name] if name else []

    @on(DataTable.RowHighlighted, "#endpoints")
    def _highlighted(self) -> None:
        self._detail()

    # ------------------------------------------------------------------ keys

    def action_mark(self) -> None:
        name = self.selected()
        if name is None:
            return
        self.marked ^= {name}
        self._show()
        self.query_one("#endpoints", FittedTable).action_cursor_down()

    @work(group="endpoints-check")
    async def action_check(self) -> None:
        names = self.chosen()
        if not names:
            return
        self.checking |= set(names)
        self.say(f"◌ checking {', '.join(names)} …")
        self._show()
        try:
            checks = await self.session.endpoints_check(names)
        except ConsoleError as exc:
            checks, said = [], f"✖ {exc.message}"
        else:
            said = "\n".join(check_line(c) for c in checks)
            self.marked -= set(names)
        finally:
            self.checking -= set(names)
        for check in checks:  # shown now, not only when the daemon's event comes
            if check.endpoint in self.endpoints:
                self.endpoints[check.endpoint].last_check = check
                self.endpoints[check.endpoint].state = check.state
        self.say(said)
        self._show()

    @work(group="endpoints-action")
    async def action_setup(self) -> None:
        from console.ui.dialogs.endpoint_auth import SetupAuthScreen

        endpoint = self.endpoints.get(self.selected() or "")
        if endpoint is not None:
            await self.app.push_screen_wait(SetupAuthScreen(self.session, endpoint))
            self.reload()

    @work(group="endpoints-action")
    async def action_sshd(self) -> None:
        from console.ui.dialogs.sshd_check import SshdCheckScreen

        name = self.selected()
        if name is not None:
            await self.app.push_screen_wait(SshdCheckScreen(self.session, name))

    def action_associate(self) -> None:
        if self.selected() is not None:
            self.app.hold_keys()  # what is typed right after `a`, in the same burst, belongs in the dialog's box
            self._associate()

    @work(group="endpoints-action")
    async def _associate(self) -> None:
        from console.ui.dialogs.endpoint_scope import AssociateScreen

        name = self.selected()
        if name is not None:
            said = await self.app.push_screen_wait(AssociateScreen(self.session, name, self._vpcs()))
            if said:
                self.say(said)
                self.reload()

    @work(group="endpoints-action")
    async def action_unassociate(self) -> None:
        from console.ui.dialogs.endpoint_scope import UnassociateScreen

        endpoint = self.endpoints.get(self.selected() or "")
        if endpoint is None:
            return
        if not endpoint.scope:
            self.say(f"{endpoint.name}: nothing in its scope to unassociate")
            return
        said = await self.app.push_screen_wait(UnassociateScreen(self.session, endpoint))
        if said:
            self.say(said)
            self.reload()

    @work(group="endpoints-action")
    async def action_remove(self) -> None:
        names = self.chosen()
        if not names:
            return
        lines = [f"{name} ({self.endpoints[name].source}), used by {used_by(self.endpoints[name]) or 'nothing'}"
                 for name in names]
        question = f"Remove {names[0]}?" if len(names) == 1 else f"Remove {counted(len(names), 'endpoint')}?"
        detail = "\n".join(lines) + "\nAll or none: nothing is removed while units or rules use one."
        if not await self.app.push_screen_wait(ConfirmScreen(question, detail, yes="Remove", wide=True)):
            return
        try:
            removed = await self.session.endpoints_remove(names)
        except ConsoleError as exc:
            self.say(f"✖ {exc.message}")
            return
        self.marked -= set(removed)
        self.say(f"● removed {', '.join(removed)}")
        self.reload()

    def _vpcs(self) -> list[str]:
        """The config's VPC names, offered when associating (none when the console has no config to read)."""
        try:
            config = self.session.load_config()
        except ConsoleError:
            return []
        return sorted(config.vpcs) if config is not None else []

    def action_cursor(self, direction: str) -> None:
        getattr(self.query_one("#endpoints", FittedTable), f"action_cursor_{direction}")()

    def action_back(self) -> None:
        self.dismiss()


# ---------------------------------------------------------------------- the words (no Textual below)

def used_by(e: EndpointStatus) -> str:
    return EndpointUsers(tuple(e.units), tuple(e.rules)).describe() if e.units or e.rules else ""


def check_line(check: EndpointCheck) -> str:
    """One check's outcome in a line: `● lab available` or `✖ lab unavailable: why`."""
    if check.available:
        return f"{check.state.glyph} {check.endpoint} available ({check.username}@{check.address}, " \
               f"{check.seconds:.2f} s)"
    return f"{check.state.glyph} {check.endpoint} unavailable: {check.message}"


def scope_text(e: EndpointStatus) -> str:
    entries = [f"{'VPC' if s.kind == 'vpc' else 'subnet'} {s.network} ({s.source})" for s in e.scope]
    return " · ".join(entries) or "nothing (no own subnet, nothing associated)"


def detail_lines(e: EndpointStatus, now: float) -> list[tuple[str, bool]]:
    """The highlighted endpoint in full, what matters most first: its state and, when unavailable, why and what
    to do (those lines flagged True: shown as a warning); then its scope, who uses it and its times."""
    lines = [(f"{e.name}  {e.id}  {e.username}@{e.address}  {SOURCES.get(e.source, e.source)}", False)]
    check = e.last_check
    if check is None:
        lines.append((f"{e.state.label}: never checked (c checks it)", False))
    elif check.available:
        lines.append((f"{check.state.label}: logs in as {check.username}@{check.address}"
                      + (f" with {check.unit}'s key" if check.unit else ""), False))
    else:
        lines.append((f"{check.state.label} ({check.reason}): {check.message}", True))
        if check.hint:
            lines.append((f"hint: {check.hint}", True))
        if check.reason in NEXT_KEY:
            lines.append((f"here: {NEXT_KEY[check.reason]}", True))
    if check is not None:
        when = f"{short_time(check.checked_at)} ({age(check.checked_at, now)})" if check.checked_at else "at ?"
        lines.append((f"checked {when} in {check.seconds:.2f} s"
                      + (f", host key {check.fingerprint}" if check.fingerprint else ""), False))
    lines.append((f"scope: {scope_text(e)}", False))
    lines.append((f"used by: {used_by(e) or 'nothing'}" + (f"   comment: {e.comment}" if e.comment else ""), False))
    times = [f"created {short_time(e.created)}" if e.created else "",
             f"updated {short_time(e.updated)}" if e.updated else ""]
    if any(times):
        lines.append(("  ".join(t for t in times if t), False))
    return lines
