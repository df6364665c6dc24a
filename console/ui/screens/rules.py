"""Rules: the proxy rules and gateway plans, where each listens, its round robin and counters, live."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from console.core.errors import ConsoleError
from console.core.rule_table import origin_words
from console.core.states import DestinationState, RuleState, human_bytes
from console.core.status import GatewayStatus, RuleStatus
from console.core.words import counted
from console.ui.dialogs.add_rule import AddRuleScreen
from console.ui.dialogs.confirm import ConfirmScreen
from console.ui.messages import RuleChanged, StatusChanged, follow
from console.ui.widgets.daemon_bar import DaemonBar
from console.ui.widgets.fitted_table import Col, FittedTable

if TYPE_CHECKING:
    from textual.signal import Signal

    from console.ui.session import Session

# The columns, with the order they are dropped in when the width is short (the highest rank first); the lines
# under the table show the highlighted rule whole.
# `state` is the listener's; `health` the destination's, in its listener's round robin (its other members are the
# rows beside it).
RULE_COLUMNS = (Col("dir", 2), Col("proto", 3), Col("listener", 0), Col("state", 0), Col("destination", 0),
                Col("health", 1), Col("via", 4), Col("conns", 5), Col("in", 6), Col("out", 7), Col("flows", 8),
                Col("reason", 9))
LISTENER = [col.label for col in RULE_COLUMNS].index("listener")
PLAN = "gateway:"        # a gateway plan's row key: PLAN + its name (a rule's is its id, "rule-...")
FETCH_GAP = 0.2          # seconds at least between two fetches of the list (a burst of events is one fetch)
TRAFFIC_EVERY = 1.0      # counters alone: a fetch a second at most (the daemon says traffic once a second a rule)
WORST_FIRST = (RuleState.REFUSED, RuleState.WAITING, RuleState.STOPPED, RuleState.LISTENING)


class RulesScreen(Screen):
    """Every proxy rule: direction, protocol, where it listens, its destinations (the round robin of its listener,
    each up or down), via, state, counters; a gateway plan folded to one line (enter shows its ports). Live from
    the daemon's RuleChanged events (and the units' forward events, for the forwards shown as rules). Add, remove,
    filter."""

    DEFAULT_CSS = """
    #rules-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
        color: $accent;
    }
    #rules {
        height: 1fr;
        min-height: 5;
        border: round $primary;
        overflow-x: hidden;  /* columns are dropped by priority instead (FittedTable) */
    }
    #rules-message {
        height: auto;
        padding: 0 1;
        color: $error;
    }
    #rule-detail {
        height: auto;      /* the highlighted rule whole: a destination a line, wrapped, not cut */
        min-height: 2;
        max-height: 7;
        padding: 0 1;
    }
    #rule-filter {
        dock: bottom;
        margin-bottom: 1;
    }
    """

    BINDINGS = [
        Binding("a", "add", "Add", tooltip="add a rule: direction, its text (checked as you type), via",
                id="rules.add"),
        Binding("d,delete", "remove", "Remove", tooltip="remove the highlighted rule, added at run time (asks first)",
                id="rules.remove"),
        Binding("slash", "filter", "Filter", tooltip="show only the rules matching a text", id="rules.filter"),
        Binding("enter", "toggle", "Ports", tooltip="a gateway plan: show or hide its ports", id="rules.toggle"),
        Binding("plus", "expand", "Show ports", show=False, tooltip="a gateway plan: show its ports",
                id="rules.expand"),
        Binding("minus", "collapse", "Hide ports", show=False, tooltip="a gateway plan: fold its ports into one line",
                id="rules.collapse"),
        Binding("escape", "back", "Back", tooltip="clear the filter; without one, back to the menu", id="rules.back"),
        Binding("j", "cursor('down')", "Down", show=False, tooltip="down (as the arrow)", id="rules.down"),
        Binding("k", "cursor('up')", "Up", show=False, tooltip="up (as the arrow)", id="rules.up"),
    ]

    def __init__(self, session: Session, changes: Signal[RuleChanged], status: Signal[StatusChanged]) -> None:
        super().__init__()
        self.session = session
        self._changes = changes
        self._status = status        # the units' forwards (shown as rules) change with it; the daemon-gone bar
        self._rules: list[RuleStatus] = []
        self._plans: dict[str, GatewayStatus] = {}   # gateway.show of each plan, fetched once a plan is listed
        self._expanded: set[str] = set()             # the plans whose ports are shown
        self._dirty = False
        self._urgent = asyncio.Event()   # a change beyond counters: fetch once FETCH_GAP has passed
        self._loading = False
        self._loaded = False
        self._message: tuple[str | None, str] = (None, "")  # (the row it is about, or None: any), what to say
        self._select: str | None = None                     # a row to highlight once listed (a rule just added)

    def compose(self) -> ComposeResult:
        yield DaemonBar(self.session, self._status)  # shown only while the daemon is gone
        yield Static("Proxy rules", id="rules-title")
        yield FittedTable(RULE_COLUMNS, id="rules", cursor_type="row")
        yield Static("", id="rules-message")
        yield Static("", id="rule-detail")
        yield Input(placeholder="filter rules (esc clears)", id="rule-filter", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#rules").focus()
        follow(self._changes, self)
        follow(self._status, self)
        self.reload()

    # ------------------------------------------------------------------ following the daemon

    @on(RuleChanged)
    def _rule_changed(self, message: RuleChanged) -> None:
        if message.rule_id is None or message.change in ("added", "removed"):
            self._plans.clear()  # a reload may have changed a plan: its formula and clashes are fetched again
        if message.rule_id is None:
            self._message = (None, "")  # the daemon is back (what was said was said to the one that went)
        self.reload(urgent=message.change != "traffic")

    @on(StatusChanged)
    def _status_changed(self) -> None:
        """A unit or forward changed (or the daemon came back): the forwards shown as rules follow it."""
        if not self._loaded or any(rule.source == "forward" for rule in self._rules):
            self.reload(urgent=False)  # most are a forward's counters

    def reload(self, urgent: bool = True) -> None:
        """Fetch the rules again, once the fetch under way is done: a burst of events is one more fetch, after
        FETCH_GAP; counters alone wait for TRAFFIC_EVERY."""
        self._dirty = True
        if urgent:
            self._urgent.set()
        if not self._loading:
            self._loading = True  # now, not when the worker starts: a second event must not start another
            self._load()

    @work(group="rules")
    async def _load(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                self._urgent.clear()
                try:
                    rules = await self.session.rules_list()
                    await self._fetch_plans(rules)
                except ConsoleError as exc:
                    self._say(None, f"✖ {exc.message}")
                    return
                self._rules, self._loaded = rules, True
                if self._message[0] is None:  # a fetch that failed said so: this one did not
                    self._message = (None, "")
                try:
                    self._show()
                except NoMatches:  # the screen was taken down (esc, or the console quit) while it fetched
                    return
                await asyncio.sleep(FETCH_GAP)
                if not self._urgent.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._urgent.wait(), TRAFFIC_EVERY - FETCH_GAP)
        finally:
            self._loading = False

    async def _fetch_plans(self, rules: list[RuleStatus]) -> None:
        for name in dict.fromkeys(r.origin for r in rules if r.source == "gateway" and r.origin):
            if name not in self._plans:
                try:
                    self._plans[name] = await self.session.gateway_show(name)
                except ConsoleError:  # gone meanwhile (a reload): its ports still show, without the formula
                    continue

    # ------------------------------------------------------------------ the rows

    def _plan_ports(self) -> dict[str, list[RuleStatus]]:
        ports: dict[str, list[RuleStatus]] = {}
        for rule in self._rules:
            if rule.source == "gateway":
                ports.setdefault(rule.origin or "", []).append(rule)
        return ports

    def _rows(self) -> dict[str, tuple[str, ...]]:
        """Every row, key -> every column's cell: the rules in the daemon's order with the rules sharing a listener
        together (its round robin, in turn order), each gateway plan one line where its first port was, its ports
        under it when it is open (or when only some of them match the filter)."""
        needle = self.query_one("#rule-filter", Input).value.strip().lower()

        def matches(cells: tuple[str, ...]) -> bool:
            return not needle or any(needle in cell.lower() for cell in cells)

        plans = self._plan_ports()
        rows: dict[str, tuple[str, ...]] = {}
        for rule in _listeners_together(self._rules):
            if rule.source != "gateway":
                if matches(cells := _rule_cells(rule)):
                    rows[rule.id] = cells
                continue
            name = rule.origin or ""
            if name not in plans:  # listed already, where its first port was
                continue
            ports = plans.pop(name)
            line = _plan_cells(name, ports, "")  # a port number is looked for in its ports, not the plan's range
            plan_matches = matches(line[:LISTENER] + line[LISTENER + 1:])
            shown_ports = ports if plan_matches else [p for p in ports if matches(_rule_cells(p, port=True))]
            if not shown_ports:
                continue
            open_ = name in self._expanded or not plan_matches
            rows[PLAN + name] = _plan_cells(name, ports, "▾" if open_ else "▸")
            for port in shown_ports if open_ else ():
                rows[port.id] = _rule_cells(port, port=True)
        return rows

    def _show(self) -> None:
        table = self.query_one("#rules", FittedTable)
        table.show(self._rows())
        if self._select is not None and self._select in table.rows_wanted:
            table.move_cursor(row=list(table.rows_wanted).index(self._select))
            self._select = None
        plans = self._plan_ports()
        plain = len(self._rules) - sum(len(p) for p in plans.values())
        title = f"Proxy rules: {counted(plain, 'rule')}"
        if plans:
            title += f", {counted(len(plans), 'gateway plan')} ({counted(sum(map(len, plans.values())), 'port')})"
        needle = self.query_one("#rule-filter", Input).value.strip()
        if needle:
            title += f"; filter {needle!r}: {counted(table.row_count, 'line')}"
        self.query_one("#rules-title", Static).update(Content(title))
        self._detail()

    def _selected(self) -> str | None:
        table = self.query_one("#rules", FittedTable)
        if not table.row_count:
            return None
        return str(table.ordered_rows[table.cursor_row].key.value)

    def _rule(self, key: str | None) -> RuleStatus | None:
        return next((r for r in self._rules if r.id == key), None)

    # ------------------------------------------------------------------ the lines under the table

    def _detail(self) -> None:
        """The highlighted rule whole (each destination with its state and reason, where it comes from, its
        counters), or the highlighted plan (its formula, its ports' states, its clashes)."""
        key = self._selected()
        if key is None:
            text = "no proxy rules yet: a adds one" if not self._rules else "no rule matches the filter (esc clears)"
        elif key.startswith(PLAN):
            text = self._plan_detail(key[len(PLAN):])
        else:
            rule = self._rule(key)
            text = _rule_detail(rule) if rule is not None else ""
        self.query_one("#rule-detail", Static).update(Content(text))  # plain text: a reason is no markup
        about, said = self._message
        message = self.query_one("#rules-message", Static)
        message.update(Content(said if about in (None, key) else ""))
        message.display = bool(said) and about in (None, key)

    def _plan_detail(self, name: str) -> str:
        ports = self._plan_ports().get(name, [])
        plan = self._plans.get(name)
        lines = [f"gateway {name}: {plan.formula}" if plan else f"gateway {name}"]
        hosts = len({p.destination.rsplit(":", 1)[0] for p in ports})
        lines.append(f"{counted(hosts, 'host')}, {counted(len(ports), 'port')} via {ports[0].via if ports else '?'}: "
                     f"{_summary(ports)}; {_counters(ports)}")
        if plan is not None:
            lines += plan.problems + plan.clashes[:2]
            if len(plan.clashes) > 2:
                lines.append(f"... and {len(plan.clashes) - 2} more clashes (sop-console gateway show {name})")
        lines.append("enter or - hides its ports" if name in self._expanded else "enter or + shows its ports")
        return "\n".join(lines)

    def _say(self, about: str | None, text: str) -> None:
        """A line in place under the table, about one row (shown while it is highlighted) or None (always)."""
        self._message = (about, text)
        try:
            self._detail()
        except NoMatches:
            pass

    @on(DataTable.RowHighlighted, "#rules")
    def _highlighted(self) -> None:
        self._detail()

    # ------------------------------------------------------------------ plans: open and fold

    def _plan_of(self, key: str | None) -> str | None:
        """The plan of the highlighted row: the plan's own line, or one of its ports."""
        if key is None:
            return None
        if key.startswith(PLAN):
            return key[len(PLAN):]
        rule = self._rule(key)
        return rule.origin if rule is not None and rule.source == "gateway" else None

    @on(DataTable.RowSelected, "#rules")
    def _row_selected(self) -> None:
        self.action_toggle()

    def action_toggle(self) -> None:
        name = self._plan_of(self._selected())
        if name is not None:
            self._fold(name, name not in self._expanded)

    def action_expand(self) -> None:
        name = self._plan_of(self._selected())
        if name is not None:
            self._fold(name, True)

    def action_collapse(self) -> None:
        name = self._plan_of(self._selected())
        if name is not None:
            self._fold(name, False)

    def _fold(self, name: str, open_: bool) -> None:
        if open_:
            self._expanded.add(name)
        else:
            self._expanded.discard(name)
        self._select = PLAN + name  # the cursor stays on the plan's line (from a port, it goes back up to it)
        self._show()

    # ------------------------------------------------------------------ add, remove, filter

    def action_add(self) -> None:
        self.app.hold_keys()  # the rule typed right after `a`, in the same burst, belongs in the box
        self._add()

    @work(group="rules-action")
    async def _add(self) -> None:
        added = await self.app.push_screen_wait(AddRuleScreen(self.session.rule_vias(), self.session.rule_problem,
                                                              self.session.rules_add))
        if added is None:
            return
        said = f"rule {added.direction} {added.rule} via {added.via} added: {added.state.label}"
        self.notify(said + (f": {added.reason}" if added.reason else ""),
                    severity="information" if added.state is RuleState.LISTENING else "warning")
        self._select = added.id
        self.reload()

    def action_remove(self) -> None:
        key = self._selected()
        if key is None:
            return
        plan = self._plan_ports().get(key[len(PLAN):], []) if key.startswith(PLAN) else None
        rule = plan[0] if plan else self._rule(key)
        if rule is None:
            return
        refused = self.session.not_removable(rule)
        if refused is not None:
            self._say(key, f"✖ {refused}")
            return
        self._remove(rule)

    @work(group="rules-action")
    async def _remove(self, rule: RuleStatus) -> None:
        name = f"{rule.direction} {rule.rule} via {rule.via}"
        if not await self.app.push_screen_wait(ConfirmScreen(
                f"Remove {name}?", "Connections in flight finish; its listener closes when its last rule goes. "
                                   "It is not kept for the next start.")):
            return
        try:
            await self.session.rules_remove(rule)
        except ConsoleError as exc:
            self._say(rule.id, f"✖ {exc.message}")
            return
        self.notify(f"rule {name} removed")
        self.reload()

    def action_filter(self) -> None:
        box = self.query_one("#rule-filter", Input)
        box.remove_class("hidden")
        self.app.hold_keys()  # the keys typed right after `/`, in the same burst, belong in the box
        self.set_focus(box)

    @on(Input.Changed, "#rule-filter")
    def _filter_changed(self) -> None:
        self._show()

    @on(Input.Submitted, "#rule-filter")
    def _filter_done(self) -> None:
        self.query_one("#rules", DataTable).focus()

    def action_back(self) -> None:
        """esc: clear the filter first, when there is one; else back to the menu."""
        box = self.query_one("#rule-filter", Input)
        if box.value or box.display:
            box.value = ""
            box.add_class("hidden")
            self._show()
            self.query_one("#rules", DataTable).focus()
            return
        self.dismiss()

    def action_cursor(self, direction: str) -> None:
        getattr(self.query_one("#rules", DataTable), f"action_cursor_{direction}")()


# ---------------------------------------------------------------------- cells and lines, from the records


def _listeners_together(rules: list[RuleStatus]) -> list[RuleStatus]:
    """The rules in the daemon's order, except that those sharing a listener (its round robin: the same
    destinations' list) follow the first of them, in turn order."""
    groups: dict[str, list[RuleStatus]] = {}
    for rule in rules:
        groups.setdefault(rule.destinations[0].rule if rule.destinations else rule.id, []).append(rule)
    return [rule for group in groups.values() for rule in group]


def _health(rule: RuleStatus) -> str:
    """The state of the rule's own destination in its listener's round robin, while the listener runs (one that
    does not listen has tried none)."""
    own = next((d for d in rule.destinations if d.rule == rule.id), None)
    return own.state.label if rule.state is RuleState.LISTENING and own is not None else ""


def _rule_cells(rule: RuleStatus, port: bool = False) -> tuple[str, ...]:
    """A rule's every column; a gateway plan's port (`port`) indented under its plan, without what the plan's
    line says for all of them."""
    return ("" if port else rule.direction, "" if port else rule.protocol,
            f"  {rule.listener}" if port else rule.listener, rule.state.label, rule.destination, _health(rule),
            "" if port else rule.via, f"{rule.open}/{rule.total}", human_bytes(rule.bytes_in),
            human_bytes(rule.bytes_out), str(rule.udp_flows) if rule.protocol == "udp" else "-", rule.reason or "")


def _plan_cells(name: str, ports: list[RuleStatus], marker: str) -> tuple[str, ...]:
    """A gateway plan on one line: its listening address and port range, its name, its ports' states (the worst)
    and counters summed."""
    numbers = [int(p.listener.rsplit(":", 1)[1]) for p in ports]
    address = ports[0].listener.rsplit(":", 1)[0]
    reasons = [p.reason for p in ports if p.state is not RuleState.LISTENING and p.reason]
    reason = reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "") if reasons else ""
    healths = [_health(p) for p in ports]
    down = sum(DestinationState.DOWN.label == h for h in healths)
    health = f"{DestinationState.DOWN.glyph} {down} down" if down else next((h for h in healths if h), "")
    return (ports[0].direction, ports[0].protocol, f"{marker} {address}:{min(numbers)}-{max(numbers)}".lstrip(),
            _summary(ports, short=True), f"gateway {name}", health, ports[0].via,
            f"{sum(p.open for p in ports)}/{sum(p.total for p in ports)}",
            human_bytes(sum(p.bytes_in for p in ports)), human_bytes(sum(p.bytes_out for p in ports)), "-", reason)


def _summary(rules: list[RuleStatus], short: bool = False) -> str:
    """How many are in each state, the worst first: '✖ 1 refused, ● 8 listening'; `short`, the worst alone,
    '✖ 1 refused', or the state they all are in, '● listening'."""
    counts = {state: n for state in WORST_FIRST if (n := sum(r.state is state for r in rules))}
    if short and len(counts) == 1:
        return next(iter(counts)).label
    if short:
        counts = dict([next(iter(counts.items()))])
    return ", ".join(f"{state.glyph} {n} {state.value}" for state, n in counts.items())


def _counters(rules: list[RuleStatus]) -> str:
    return (f"open {sum(r.open for r in rules)}, total {sum(r.total for r in rules)}, "
            f"in {human_bytes(sum(r.bytes_in for r in rules))}, out {human_bytes(sum(r.bytes_out for r in rules))}")


def _rule_detail(rule: RuleStatus) -> str:
    head = f"{rule.direction} {rule.rule} via {rule.via}: {rule.state.label} on {rule.listener}"
    lines = [head + (f": {rule.reason}" if rule.reason else "")]
    several = len(rule.destinations) > 1
    for d in rule.destinations if rule.state is RuleState.LISTENING else ():
        line = f"  -> {d.destination} {d.state.label}" + (" (this rule)" if several and d.rule == rule.id else "")
        lines.append(line + (f": {d.reason}" if d.reason else ""))
    counters = _counters([rule])
    if rule.protocol == "udp":
        counters += f", udp flows {rule.udp_flows}"
    if rule.dropped:
        counters += f", dropped {rule.dropped}"
    lines.append(f"{origin_words(rule, 'the config')}; {counters}")
    return "\n".join(lines)
